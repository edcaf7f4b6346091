package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/journal"
)

// A store reached through a store server (backup-cli server) is a Remote:
// the server keeps the packs, the index and the journals, and hands each
// client only what its token allows. Store works the same over a Remote as
// over a local directory, so history, the plugin and backup-cli need not
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
	Journals() JournalService
	// Close closes the connection.
	Close() error
}

// ChunkService is the chunk side of a store server. The server verifies
// every body it is given against its ID before storing it; the client
// verifies every body it receives.
type ChunkService interface {
	// Missing reports, for each id, whether the server lacks the chunk
	// (or holds it only in a copy gc has condemned): those must be sent.
	Missing(ctx context.Context, ids []chunker.ID) ([]bool, error)
	// PutBodies stores chunks durably (one pack and its index) before
	// returning the bytes the store grew by.
	PutBodies(ctx context.Context, bodies []ChunkBody) (added int64, err error)
	// ReadBodies calls fn with the stored body of every distinct id, in
	// the server's pack order, one at a time; Body is only valid during
	// the call. A missing chunk fails with an error wrapping
	// ErrChunkMissing.
	ReadBodies(ctx context.Context, ids []chunker.ID, fn func(ChunkBody) error) error
}

// ChunkBody is one chunk as stored: zstd-compressed.
type ChunkBody struct {
	ID   chunker.ID
	Kind Kind
	// Raw is the uncompressed size.
	Raw uint32
	// Base, when not zero, is the chunk whose full bytes Body was
	// compressed against (raw zstd dictionary): a delta copy.
	Base chunker.ID
	Body []byte
}

// JournalService opens node journals kept by the server.
type JournalService interface {
	// OpenJournal opens a node's journal for appending. The caller must
	// hold the node's lease (history.OpenNode takes it first).
	OpenJournal(ctx context.Context, node string) (Journal, error)
	// ReadJournal calls fn for every record after afterSeq, as
	// journal.Read does for a local journal (errors wrapping
	// journal.ErrTrimmed when records after afterSeq are gone).
	ReadJournal(ctx context.Context, node string, afterSeq uint64, fn func(journal.Record) error) error
}

// Journal is an open node journal: a local *journal.Journal, or one on a
// store server. Append and Replace return only once the record is durable
// where the journal lives.
type Journal interface {
	Append(journal.Record) (journal.Record, error)
	Replace(journal.Record) (journal.Record, error)
	Records(afterSeq uint64, fn func(journal.Record) error) error
	Last() (journal.Record, bool)
	NextSeq() uint64
	Size() int64
	// Recovered is the bytes of a torn last record dropped on open.
	Recovered() int64
	// Trim drops records up to uptoSeq, once a durable manifest covers
	// them.
	Trim(uptoSeq uint64) error
	Close() error
}

var _ Journal = (*journal.Journal)(nil)

// FullAccess reports whether this client sees the whole store: a local
// store, or a store server with an admin token. Without it, packs, the
// index and other nodes' objects are out of reach, so gc, forget, verify
// and the store's size are for the server or an admin.
func (s *Store) FullAccess() bool { return s.remoteChunks == nil }

// ErrNeedFullAccess is returned (wrapped) by operations only a client with
// full access may run.
var ErrNeedFullAccess = errors.New("needs the whole store: run it on the store server's directory (file:// URL) or with an admin token (backup-cli server add-token --admin)")

// NeedFullAccess fails, naming op, unless the client has full access.
func (s *Store) NeedFullAccess(op string) error {
	if s.FullAccess() {
		return nil
	}
	return fmt.Errorf("%s of store %s %w", op, s.Location(), ErrNeedFullAccess)
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
