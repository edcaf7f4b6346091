package legacy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store/journal"
)

// Result describes a finished Restore.
type Result struct {
	// Version is the restored database's data_version (the header's version).
	Version uint32
	// Entries is how many entries were read, up to the header's version.
	Entries int
	// Changes, Pragmas and Snapshots count what was applied: changes in a
	// transaction each, PRAGMA-only changes outside any transaction,
	// snapshots as the new database file.
	Changes, Pragmas, Snapshots int
	// Dropped counts entries left out as never committed: a change whose
	// version a later change repeats, and PRAGMA-only entries between them
	// with that version.
	Dropped int
	// Ignored counts complete entries after the last one with the header's
	// version: a write the plugin never acknowledged.
	Ignored int
}

// sqliteMagic starts every SQLite database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// Restore rebuilds the node's committed state from the v1 backup at path into
// the new database file dest, which must not exist or be empty. Snapshots
// replace the database file; changes are applied with replay (statements
// repaired with replay.RewriteLegacy), PRAGMA-only ones outside transactions.
//
// Where a non-PRAGMA change repeats the version of the change before it (the
// Python plugin kept a change lightningd never committed, then appended the
// one lightningd re-sent), the later change wins: the earlier one and any
// PRAGMA-only entries after it with that version are dropped. Versions must
// otherwise go up by one per change (after a snapshot, from the snapshot's
// version), and the database must end at the header's version: anything else
// means lost writes and is an error rather than a silently wrong node.
//
// progress, if not nil, is called with the bytes of the file consumed so far
// and the file's size. On error dest and its journal are removed; Restore
// writes no other file (except SQLite's -wal and -shm while a WAL-mode
// snapshot is open). dest is fsynced before Restore returns; the caller still
// runs replay.IntegrityCheck and renames it into place.
func Restore(path, dest string, progress func(done, total int64)) (res Result, err error) {
	f, err := OpenFile(path)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	if st, err := os.Lstat(dest); err == nil {
		if !st.Mode().IsRegular() || st.Size() != 0 {
			return Result{}, fmt.Errorf("legacy restore: %s already exists; refusing to overwrite it", dest)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Result{}, fmt.Errorf("legacy restore: %w", err)
	}
	r := &restorer{f: f, dest: dest}
	defer func() {
		if r.db != nil {
			r.db.Close()
		}
		if err != nil {
			for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
				os.Remove(dest + suffix)
			}
		}
	}()
	// Create dest ourselves so that it is private to its owner.
	out, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return Result{}, fmt.Errorf("legacy restore: %w", err)
	}
	if err := out.Close(); err != nil {
		return Result{}, fmt.Errorf("legacy restore: %w", err)
	}
	if r.db, err = replay.Open(dest); err != nil {
		return Result{}, fmt.Errorf("legacy restore: %w", err)
	}
	res, err = f.Committed(r.item, progress)
	if err != nil {
		return Result{}, err
	}
	hv := res.Version
	v, ok, err := r.db.DataVersion()
	if err != nil {
		return Result{}, fmt.Errorf("legacy restore %s: %w", path, err)
	}
	if ok && v != hv {
		return Result{}, fmt.Errorf("legacy restore %s: the restored database has data_version %d, the backup's header says %d", path, v, hv)
	}
	err = r.db.Close()
	r.db = nil
	if err != nil {
		return Result{}, fmt.Errorf("legacy restore: %w", err)
	}
	if err := syncFile(dest); err != nil {
		return Result{}, fmt.Errorf("legacy restore: %w", err)
	}
	return res, nil
}

// Item is one entry of a backup that counts for its committed state, as
// Committed hands it over: a snapshot, or a change lightningd committed
// (rewound changes are left out). It lets an importer turn a backup into
// restore points with exactly the rules Restore applies.
type Item struct {
	// Offset is where the entry starts in the file, for messages.
	Offset int64
	// Kind is Change or Snapshot.
	Kind EntryKind
	// Record is a change's data_version and statements, rewritten with
	// replay.RewriteLegacy (Seq and Time are zero: the format has neither).
	// For a snapshot only Version is set.
	Record journal.Record
	// Pragma reports a PRAGMA-only change (replayed outside a transaction).
	Pragma bool
	// Snapshot reads a snapshot's database file (Length bytes) from the
	// backup; valid until the File is closed. Its first bytes were checked
	// to be SQLite's magic.
	Snapshot *io.SectionReader
	Length   int64
}

// Committed calls fn, in file order, for every snapshot and every committed
// change of the backup, applying Restore's rules: a change whose version the
// next change repeats was never committed and is dropped with the
// PRAGMA-only entries after it; versions must otherwise go up by one per
// change after the first entry or a snapshot, and the walk must end at the
// header's version. A change is handed over only once the next entry shows it
// was committed. progress, if not nil, is called with the bytes of the file
// consumed so far and the file's size. An error from fn is returned as is.
// The statements are not executed: the caller learns that they apply only by
// applying them (Restore does).
func (f *File) Committed(fn func(Item) error, progress func(done, total int64)) (Result, error) {
	w := &walker{f: f, fn: fn, progress: progress}
	w.report(0)
	s, err := f.entries(w.entry)
	if err != nil {
		return Result{}, err
	}
	if err := w.flush(); err != nil {
		return Result{}, err
	}
	if s.entries == 0 {
		return Result{}, fmt.Errorf("legacy backup %s: no entries to restore", f.name)
	}
	w.res.Entries, w.res.Ignored = s.entries, s.ignored
	w.res.Version = f.Header().Version
	if w.hasState && w.state != w.res.Version {
		return Result{}, fmt.Errorf("legacy backup %s: the entries end at version %d, the header says %d", f.name, w.state, w.res.Version)
	}
	w.report(f.Size())
	return w.res, nil
}

// walker hands over the committed entries as Entries reads them. The last
// change (and PRAGMA-only entries with its version) waits in pending until
// an entry shows whether it was committed: a later change with the same
// version replaces it.
type walker struct {
	f        *File
	fn       func(Item) error
	progress func(done, total int64)
	res      Result

	pending []Item
	// state is the database's version once pending is applied.
	state    uint32
	hasState bool
}

func (r *walker) report(done int64) {
	if r.progress != nil {
		r.progress(done, r.f.Size())
	}
}

func (r *walker) errorf(off int64, format string, args ...any) error {
	return fmt.Errorf("legacy backup %s: entry at offset %d: %w", r.f.name, off, fmt.Errorf(format, args...))
}

func (r *walker) entry(e Entry) error {
	defer r.report(e.End())
	if e.Kind == Snapshot {
		return r.snapshot(e)
	}
	stmts := make([]string, len(e.Statements))
	for i, s := range e.Statements {
		stmts[i] = replay.RewriteLegacy(s)
	}
	p := Item{Offset: e.Offset, Kind: Change, Record: journal.Record{Version: e.Version, Statements: stmts}}
	p.Pragma = p.Record.PragmaOnly()
	samePending := len(r.pending) > 0 && e.Version == r.pending[0].Record.Version
	switch {
	case p.Pragma && samePending:
		r.pending = append(r.pending, p)
		return nil
	case p.Pragma:
		// A PRAGMA-only change carries the version of the change before it.
		if r.hasState && e.Version != r.state {
			return r.errorf(e.Offset, "PRAGMA-only change has version %d, but the database is at version %d", e.Version, r.state)
		}
		if err := r.flush(); err != nil {
			return err
		}
		r.state, r.hasState = e.Version, true
		return r.apply(p)
	case samePending:
		// The earlier change was never committed: lightningd re-sent its
		// version after a restart.
		r.res.Dropped += len(r.pending)
		r.pending = append(r.pending[:0], p)
		return nil
	}
	if r.hasState && e.Version != r.state+1 {
		return r.errorf(e.Offset, "change has version %d after version %d: the backup misses changes or holds a change lightningd forgot",
			e.Version, r.state)
	}
	if err := r.flush(); err != nil {
		return err
	}
	r.pending = append(r.pending, p)
	r.state, r.hasState = e.Version, true
	return nil
}

// flush hands over the pending entries: nothing later can replace them.
func (r *walker) flush() error {
	for _, p := range r.pending {
		if err := r.apply(p); err != nil {
			return err
		}
	}
	r.pending = r.pending[:0]
	return nil
}

func (r *walker) apply(p Item) error {
	if err := r.fn(p); err != nil {
		return err
	}
	if p.Pragma {
		r.res.Pragmas++
	} else {
		r.res.Changes++
	}
	return nil
}

func (r *walker) snapshot(e Entry) error {
	if err := r.flush(); err != nil {
		return err
	}
	var magic [16]byte
	if _, err := e.Snapshot.ReadAt(magic[:], 0); err != nil || !bytes.Equal(magic[:], sqliteMagic) {
		return r.errorf(e.Offset, "snapshot of %d bytes is not a SQLite database", e.Length)
	}
	if err := r.fn(Item{Offset: e.Offset, Kind: Snapshot, Record: journal.Record{Version: e.Version}, Snapshot: e.Snapshot, Length: e.Length}); err != nil {
		return err
	}
	r.res.Snapshots++
	r.state, r.hasState = e.Version, true
	return nil
}

// restorer applies the committed entries to dest.
type restorer struct {
	f    *File
	dest string
	db   *replay.DB
}

func (r *restorer) item(it Item) error {
	if it.Kind == Snapshot {
		return r.snapshot(it)
	}
	if err := r.db.Apply(it.Record); err != nil {
		return fmt.Errorf("legacy backup %s: entry at offset %d: %w", r.f.name, it.Offset, err)
	}
	return nil
}

func (r *restorer) errorf(off int64, format string, args ...any) error {
	return fmt.Errorf("legacy backup %s: entry at offset %d: %w", r.f.name, off, fmt.Errorf(format, args...))
}

// snapshot makes the entry's database file the new dest.
func (r *restorer) snapshot(e Item) error {
	if err := r.db.Close(); err != nil {
		return r.errorf(e.Offset, "%w", err)
	}
	r.db = nil
	// A journal left from the previous database would be taken for a hot
	// journal of the new one.
	if err := os.Remove(r.dest + "-journal"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return r.errorf(e.Offset, "%w", err)
	}
	out, err := os.OpenFile(r.dest, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return r.errorf(e.Offset, "%w", err)
	}
	_, err = io.Copy(out, io.NewSectionReader(e.Snapshot, 0, e.Length))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return r.errorf(e.Offset, "write snapshot: %w", err)
	}
	if r.db, err = replay.Open(r.dest); err != nil {
		return r.errorf(e.Offset, "%w", err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
