package store

import (
	"context"
	"fmt"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/crypt"
)

// sealedBackend is an encrypted store's view of its objects: every object
// it puts under a sealed name (sealedName: node records, manifests,
// leases, node secrets) is sealed with ObjectAD(name), and every such
// object it gets is opened, so the layers above read and write plaintext
// without knowing the store is encrypted. Other names pass through.
type sealedBackend struct {
	backend.Backend
	keys *crypt.Keys
}

// ErrSealedObject is wrapped when a sealed object does not open: it was
// altered, put in another object's place, or written under another key.
var ErrSealedObject = fmt.Errorf("%w: a sealed object does not open", chunk.ErrCorrupt)

func (b *sealedBackend) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	if !sealedName(name) {
		return b.Backend.PutIfAbsent(ctx, name, data)
	}
	return b.Backend.PutIfAbsent(ctx, name, b.keys.Seal(nil, data, crypt.ObjectAD(name)))
}

// Get opens a sealed object whole (objects under nodes/ are small: at
// most maxNodeObject) and returns the range asked for of its plaintext.
func (b *sealedBackend) Get(ctx context.Context, name string, off, length int64) ([]byte, error) {
	if !sealedName(name) {
		return b.Backend.Get(ctx, name, off, length)
	}
	data, err := b.ReadWhole(ctx, name, maxNodeObject)
	if err != nil {
		return nil, err
	}
	n, err := backend.CheckRange(name, off, length, int64(len(data)))
	if err != nil {
		return nil, err
	}
	return data[off : off+n], nil
}

// ReadWhole implements backend.WholeReader: a sealed object is read with
// the bound of its plaintext plus the envelope. (It must: Stat gives the
// sealed size, Get ranges of the plaintext, so ReadWhole's Stat path would
// not fit a sealed object.)
func (b *sealedBackend) ReadWhole(ctx context.Context, name string, max int64) ([]byte, error) {
	if !sealedName(name) {
		return backend.ReadWhole(ctx, b.Backend, name, max)
	}
	sealed, err := backend.ReadWhole(ctx, b.Backend, name, max+crypt.Overhead)
	if err != nil {
		return nil, err
	}
	data, err := openObject(b.keys, name, sealed)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, b.Location())
	}
	return data, nil
}

// openObject opens the sealed object stored under name.
func openObject(keys *crypt.Keys, name string, sealed []byte) ([]byte, error) {
	data, err := keys.Open(nil, sealed, crypt.ObjectAD(name))
	if err != nil {
		return nil, fmt.Errorf("object %s: %w: %v (altered, swapped with another object, or written under another key); run backup-cli verify", name, ErrSealedObject, err)
	}
	return data, nil
}

// checkSealedObject checks what a keyless store server can of a sealed
// object a client puts: that it is an envelope of the version this
// program writes.
func checkSealedObject(name string, data []byte) error {
	if len(data) < crypt.Overhead {
		return fmt.Errorf("object %s of %d bytes is shorter than a sealed envelope (%d bytes): the store is encrypted, and its clients seal every node object", name, len(data), crypt.Overhead)
	}
	if data[0] != crypt.EnvelopeVersion {
		return fmt.Errorf("object %s is not a sealed envelope (version byte %d, not %d): the store is encrypted, and its clients seal every node object", name, data[0], crypt.EnvelopeVersion)
	}
	return nil
}
