package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/journal"
	"github.com/clnbackup/backup/store/local"
)

// Journals keeps the nodes' journals: the db_write changes acknowledged
// since a node's newest manifest. Three implementations: segment files in a
// local directory (dirJournals), a store server's journal service
// (store/remote), and one object per record in a bucket (objectJournals).
type Journals interface {
	// OpenJournal opens a node's journal for appending. The caller must
	// hold the node's lease (history.OpenNode takes it first).
	OpenJournal(ctx context.Context, node string) (Journal, error)
	// ReadJournal calls fn for every record after afterSeq without taking
	// the journal (it may be open for appending elsewhere); a node that
	// never had a journal has none. It fails wrapping journal.ErrTrimmed
	// when records after afterSeq are gone.
	ReadJournal(ctx context.Context, node string, afterSeq uint64, fn func(journal.Record) error) error
	// CheckJournal reads every record the node's journal holds, even those
	// a manifest covers already (the plugin refuses to open a journal with
	// damage anywhere). held is false when the node has no journal here.
	// A journal out of the client's reach (on a store server) is held,
	// and the server's own verify checks it.
	CheckJournal(ctx context.Context, node string) (held bool, err error)
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

// dirJournals keeps each node's journal as segment files in the store's
// directory, nodes/<node>/journal/ (a journal needs real files: it appends
// and fsyncs in place).
type dirJournals struct {
	be  *local.Backend
	wal *journal.WAL // group commit's log (Options.GroupCommit), or nil
}

// newDirJournals is the journals of a store kept in a local directory; it
// fails for any other backend, whose journals must be given (a store
// server's).
func newDirJournals(be backend.Backend) (*dirJournals, error) {
	lb, ok := be.(*local.Backend)
	if !ok {
		return nil, fmt.Errorf("store %s keeps no local files, and no journal service was given", be.Location())
	}
	return &dirJournals{be: lb}, nil
}

// dir is the directory of a node's journal.
func (j *dirJournals) dir(node string) (string, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return "", err
	}
	p, err := j.be.Path(JournalObject(node))
	if err != nil {
		return "", err
	}
	return filepath.Clean(p), nil
}

func (j *dirJournals) OpenJournal(_ context.Context, node string) (Journal, error) {
	dir, err := j.dir(node)
	if err != nil {
		return nil, err
	}
	jr, err := journal.Open(dir, j.journalOptions(node, 0))
	if err != nil {
		return nil, fmt.Errorf("open journal of node %q: %w", node, err)
	}
	return jr, nil
}

func (j *dirJournals) ReadJournal(_ context.Context, node string, afterSeq uint64, fn func(journal.Record) error) error {
	dir, err := j.dir(node)
	if err != nil {
		return err
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return journal.Read(dir, afterSeq, fn)
}

func (j *dirJournals) CheckJournal(_ context.Context, node string) (bool, error) {
	dir, err := j.dir(node)
	if err != nil {
		return false, err
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return true, journal.Check(dir)
}

// OpenJournal opens a node's journal for appending (see Journals). Hold the
// node's lease first (history.OpenNode does).
func (s *Store) OpenJournal(ctx context.Context, node string) (Journal, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return nil, err
	}
	return s.journals.OpenJournal(ctx, node)
}

// ReadJournal calls fn for each record of a node's journal after afterSeq
// (see Journals).
func (s *Store) ReadJournal(ctx context.Context, node string, afterSeq uint64, fn func(journal.Record) error) error {
	if err := manifest.ValidNodeName(node); err != nil {
		return err
	}
	return s.journals.ReadJournal(ctx, node, afterSeq, fn)
}

// CheckJournal reads every record of a node's journal (see Journals).
func (s *Store) CheckJournal(ctx context.Context, node string) (held bool, err error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return false, err
	}
	return s.journals.CheckJournal(ctx, node)
}

// ErrJournalStartUnsupported is returned (wrapped) by StartJournal when the
// store's journals cannot start a journal at a chosen seq (a store server
// older than the journal-start request answers an unknown request instead).
var ErrJournalStartUnsupported = errors.New("this store's journals cannot start a journal at a chosen record number")

// ErrJournalExists is returned (wrapped) by StartJournal when the node
// already has a journal: numbering cannot be chosen for records already
// written.
var ErrJournalExists = errors.New("the node already has a journal")

// journalStarter is implemented by the Journals that can create a node's
// journal whose numbering starts at a given seq. owner is the lease owner
// the caller holds the node as: a store server checks it in its own store.
type journalStarter interface {
	StartJournal(ctx context.Context, node string, firstSeq uint64, owner string) (Journal, error)
}

// The journals that can start a node's journal say so at compile time: a
// changed signature would otherwise turn into "cannot start" at run time.
var (
	_ journalStarter = (*dirJournals)(nil)
	_ journalStarter = (*objectJournals)(nil)
	_ journalStarter = (*sealedJournals)(nil)
)

// CanStartJournal reports whether StartJournal works on this store, so that
// an import can refuse before it writes anything.
func (s *Store) CanStartJournal() bool {
	js := s.journals
	if sj, ok := js.(*sealedJournals); ok {
		js = sj.Journals
	}
	_, ok := js.(journalStarter)
	return ok
}

// StartJournal creates and opens a node's journal whose first record gets
// seq firstSeq: a node imported with manifests covering records 1 to
// firstSeq-1 (history.ImportLegacy) must continue that numbering, because
// the plugin refuses a journal that ends before the newest manifest's
// JournalSeq and sealing skips records at or below it. The caller must
// hold the node's lease as owner (checked here, and again by a store
// server in its own store); it fails wrapping ErrJournalExists if the node
// already has a journal.
func (s *Store) StartJournal(ctx context.Context, node string, firstSeq uint64, owner string) (Journal, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return nil, err
	}
	js, ok := s.journals.(journalStarter)
	if !ok {
		return nil, fmt.Errorf("start the journal of node %q in store %s: %w", node, s.Location(), ErrJournalStartUnsupported)
	}
	if err := checkLeaseOwner(ctx, s, node, owner); err != nil {
		return nil, fmt.Errorf("start the journal of node %q at record %d: %w", node, firstSeq, err)
	}
	return js.StartJournal(ctx, node, firstSeq, owner)
}

func (j *dirJournals) StartJournal(_ context.Context, node string, firstSeq uint64, _ string) (Journal, error) {
	dir, err := j.dir(node)
	if err != nil {
		return nil, err
	}
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("start the journal of node %q at record %d: %w: %s holds one (the node is in use: choose another node name)", node, firstSeq, ErrJournalExists, dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("start the journal of node %q: %w", node, err)
	}
	jr, err := journal.Open(dir, j.journalOptions(node, firstSeq))
	if err != nil {
		return nil, fmt.Errorf("start the journal of node %q at record %d: %w", node, firstSeq, err)
	}
	if next := jr.NextSeq(); next != firstSeq {
		jr.Close()
		return nil, fmt.Errorf("start the journal of node %q at record %d: it continues at record %d (another writer created it first?)", node, firstSeq, next)
	}
	return jr, nil
}
