package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/packs"
)

// A store reached through a store server (backup-cli server) is a Remote:
// the server keeps the packs, the index and the journals, and hands each
// client only what its token allows. Store works the same over a Remote as
// over a local directory (the remote's parts fill the seams: objects,
// chunk layer, journals), so history, the plugin and backup-cli need not
// know where the store is. The socket: client (store/remote) registers
// itself with RegisterDialer; this package does not depend on it.

// Remote is the client side of a connection to a store server.
type Remote interface {
	// Objects is the server's object view for this client: every object
	// for an admin token; for a node token only the config, the nodes it
	// may use and their objects (node record, manifests, lease), never a
	// delete outside its lease.
	Objects() backend.Backend
	// Chunks is how a client without full access reads and writes chunks.
	// It is nil for an admin token: the Store then reads and writes packs
	// and index objects through Objects, as over a local directory.
	Chunks() ChunkService
	// Journals are the nodes' journals, which live on the server.
	Journals() Journals
	// Close closes the connection.
	Close() error
}

// FullAccess reports whether this client sees the whole store: a local
// store, or a store server with an admin token. Without it, packs, the
// index and other nodes' objects are out of reach, so gc, forget, verify
// and the store's size are for the server or an admin.
func (s *Store) FullAccess() bool { return s.packs != nil }

// ErrNeedFullAccess is returned (wrapped) by operations only a client with
// full access may run.
var ErrNeedFullAccess = errors.New("needs the whole store: run it on the store server's directory (file:// URL) or with an admin token (backup-cli server add-token --admin)")

// NeedFullAccess fails, naming op, unless the client has full access.
func (s *Store) NeedFullAccess(op string) error {
	_, err := s.Packs(op)
	return err
}

// Packs returns the store's packs for the store-wide work op (gc, verify,
// counting chunks, serving clients), failing unless the client has full
// access.
func (s *Store) Packs(op string) (*packs.Packs, error) {
	if s.packs == nil {
		return nil, fmt.Errorf("%s of store %s %w", op, s.Location(), ErrNeedFullAccess)
	}
	return s.packs, nil
}

// Dialer connects to the store server a URL names.
type Dialer func(ctx context.Context, u URL, opts Options) (Remote, error)

var (
	dialersMu sync.Mutex
	dialers   = map[string]Dialer{}
)

// RegisterDialer makes Open and Create handle URLs of a scheme through a
// store server client. The socket: client registers itself when its
// package is imported.
func RegisterDialer(scheme string, d Dialer) {
	dialersMu.Lock()
	defer dialersMu.Unlock()
	dialers[scheme] = d
}

func dialer(scheme string) (Dialer, error) {
	dialersMu.Lock()
	defer dialersMu.Unlock()
	d, ok := dialers[scheme]
	if !ok {
		return nil, fmt.Errorf("%s: stores are not supported by this program (it was built without the %s client)", scheme, scheme)
	}
	return d, nil
}
