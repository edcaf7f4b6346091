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
	r := &restorer{f: f, dest: dest, progress: progress}
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
	r.report(0)
	s, err := f.entries(r.entry)
	if err != nil {
		return Result{}, err
	}
	if err := r.flush(); err != nil {
		return Result{}, err
	}
	if s.entries == 0 {
		return Result{}, fmt.Errorf("legacy backup %s: no entries to restore", path)
	}
	r.res.Entries, r.res.Ignored = s.entries, s.ignored
	hv := f.Header().Version
	r.res.Version = hv
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
	r.report(f.Size())
	return r.res, nil
}

// restorer applies entries as Entries hands them over. The last change (and
// PRAGMA-only entries with its version) waits in pending until an entry shows
// whether it was committed: a later change with the same version replaces it.
type restorer struct {
	f        *File
	dest     string
	db       *replay.DB
	progress func(done, total int64)
	res      Result

	pending []pending
	// state is the database's version once pending is applied.
	state    uint32
	hasState bool
}

type pending struct {
	rec    journal.Record
	off    int64
	pragma bool
}

func (r *restorer) report(done int64) {
	if r.progress != nil {
		r.progress(done, r.f.Size())
	}
}

func (r *restorer) errorf(off int64, format string, args ...any) error {
	return fmt.Errorf("legacy backup %s: entry at offset %d: %w", r.f.name, off, fmt.Errorf(format, args...))
}

func (r *restorer) entry(e Entry) error {
	defer r.report(e.End())
	if e.Kind == Snapshot {
		return r.snapshot(e)
	}
	stmts := make([]string, len(e.Statements))
	for i, s := range e.Statements {
		stmts[i] = replay.RewriteLegacy(s)
	}
	p := pending{rec: journal.Record{Version: e.Version, Statements: stmts}, off: e.Offset}
	p.pragma = p.rec.PragmaOnly()
	samePending := len(r.pending) > 0 && e.Version == r.pending[0].rec.Version
	switch {
	case p.pragma && samePending:
		r.pending = append(r.pending, p)
		return nil
	case p.pragma:
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

// flush applies the pending entries: nothing later can replace them.
func (r *restorer) flush() error {
	for _, p := range r.pending {
		if err := r.apply(p); err != nil {
			return err
		}
	}
	r.pending = r.pending[:0]
	return nil
}

func (r *restorer) apply(p pending) error {
	if err := r.db.Apply(p.rec); err != nil {
		return fmt.Errorf("legacy backup %s: entry at offset %d: %w", r.f.name, p.off, err)
	}
	if p.pragma {
		r.res.Pragmas++
	} else {
		r.res.Changes++
	}
	return nil
}

// snapshot makes the entry's database file the new dest.
func (r *restorer) snapshot(e Entry) error {
	if err := r.flush(); err != nil {
		return err
	}
	var magic [16]byte
	if _, err := e.Snapshot.ReadAt(magic[:], 0); err != nil || !bytes.Equal(magic[:], sqliteMagic) {
		return r.errorf(e.Offset, "snapshot of %d bytes is not a SQLite database", e.Length)
	}
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
	r.res.Snapshots++
	r.state, r.hasState = e.Version, true
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
