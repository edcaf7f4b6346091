package chunk

import (
	"errors"
	"fmt"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/crypt"
)

// An encrypted store's codec (store format 3) names chunks with keyed ids
// and seals every compressed body with ChunkAD(id): compress, then seal;
// open, then decompress and re-hash with the keyed id. A keyless codec (a
// store server's view of an encrypted store) can neither name nor open
// bodies: it checks their envelope's structure only.

// ErrKeyless is wrapped when a keyless codec is asked for plaintext.
var ErrKeyless = errors.New("the store is encrypted and was opened without its key (a store server's view): chunk bodies cannot be read here")

// WithKeys makes c an encrypted store's codec: ids keyed by keys, bodies
// sealed. Call it before the codec is used.
func (c *Codec) WithKeys(keys *crypt.Keys) *Codec {
	c.keys = keys
	return c
}

// WithoutKeys makes c a keyless codec of an encrypted store: bodies move
// as ciphertext, checked for structure only. Call it before the codec is
// used.
func (c *Codec) WithoutKeys() *Codec {
	c.keyless = true
	return c
}

// Sealed reports whether bodies are sealed (an encrypted store, with or
// without its key).
func (c *Codec) Sealed() bool { return c.keys != nil || c.keyless }

// Keyless reports whether the codec holds no key for its sealed bodies.
func (c *Codec) Keyless() bool { return c.keyless }

// Keys are the encrypted store's keys (nil for a plain store or keyless).
func (c *Codec) Keys() *crypt.Keys { return c.keys }

// ID names a chunk: BLAKE3-256 of data in a plain store, keyed BLAKE3 in an
// encrypted one. A keyless codec cannot name chunks; it returns the plain
// hash, which names nothing in its store (callers never ask it).
func (c *Codec) ID(data []byte) chunker.ID {
	if c.keys != nil {
		return c.keys.ID(data)
	}
	return chunker.Sum(data)
}

// SealBody appends the stored form of a compressed body of chunk id to dst:
// the compressed bytes themselves in a plain store, their envelope in an
// encrypted one. compressed must not overlap dst's spare capacity.
func (c *Codec) SealBody(dst, compressed []byte, id chunker.ID) []byte {
	if c.keys == nil {
		return append(dst, compressed...)
	}
	return c.keys.Seal(dst, compressed, crypt.ChunkAD(id))
}

// BodyOverhead is what sealing adds to each body (0 in a plain store).
func (c *Codec) BodyOverhead() int {
	if c.Sealed() {
		return crypt.Overhead
	}
	return 0
}

// CheckSealed checks what a keyless codec can of a body: that it is an
// envelope of the one version this program writes, no shorter than the
// envelope's overhead and no longer than its declared size could
// compress to (zstd's bound) plus the overhead.
func (c *Codec) CheckSealed(b Body) error {
	if b.Raw > MaxSize {
		return fmt.Errorf("chunk %s: size %d exceeds the %d-byte limit", b.ID, b.Raw, MaxSize)
	}
	bound := int(b.Raw) + int(b.Raw)>>8 + 1024 + crypt.Overhead
	switch {
	case len(b.Body) < crypt.Overhead:
		return fmt.Errorf("chunk %s: a sealed body of %d bytes is shorter than an envelope (%d bytes)", b.ID, len(b.Body), crypt.Overhead)
	case b.Body[0] != crypt.EnvelopeVersion:
		return fmt.Errorf("chunk %s: sealed body of envelope version %d (this program writes %d)", b.ID, b.Body[0], crypt.EnvelopeVersion)
	case len(b.Body) > bound:
		return fmt.Errorf("chunk %s: a sealed body of %d bytes is longer than %d raw bytes can compress to", b.ID, len(b.Body), b.Raw)
	}
	return nil
}

// openBufs holds the buffers bodies are opened into before decompression.
var openBufs = sync.Pool{New: func() any { return new([]byte) }}

// open returns the compressed bytes of b: b.Body itself in a plain store,
// its opened envelope in an encrypted one (in a pooled buffer: call done
// when finished with it).
func (c *Codec) open(b Body, from, what string) (compressed []byte, done func(), err error) {
	if c.keys == nil {
		if c.keyless {
			return nil, nil, fmt.Errorf("read chunk %s from %s: %w", b.ID, Origin(b, from), ErrKeyless)
		}
		return b.Body, func() {}, nil
	}
	bp := openBufs.Get().(*[]byte)
	out, err := c.keys.Open((*bp)[:0], b.Body, crypt.ChunkAD(b.ID))
	if err != nil {
		openBufs.Put(bp)
		return nil, nil, fmt.Errorf("read chunk %s%s from %s: %w: %v; run backup-cli verify", b.ID, what, Origin(b, from), ErrCorrupt, err)
	}
	return out, func() {
		if cap(out) <= 1<<20 {
			*bp = out[:0]
		}
		openBufs.Put(bp)
	}, nil
}

// Open returns the compressed bytes a stored body holds (opened, for an
// encrypted store), for a copy to a store with other keys or a verify
// that tells why a chunk fails. The result is a fresh slice.
func (c *Codec) Open(b Body, from string) ([]byte, error) {
	out, done, err := c.open(b, from, "")
	if err != nil {
		return nil, err
	}
	out = append([]byte(nil), out...)
	done()
	return out, nil
}
