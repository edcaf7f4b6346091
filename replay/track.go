package replay

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/clnbackup/backup/store/journal"
	"github.com/clnbackup/backup/store/writeback"
)

// Page tracking: a compaction replays a few thousand changes into a copy of
// a database of up to several GB and must then find the pages that changed
// without hashing every page again. A tracking DB replays in WAL mode (with
// exclusive locking, so the WAL index lives in memory and no -shm file is
// made): every page SQLite writes goes through the WAL first, and each WAL
// frame names its page. The frames are harvested before each checkpoint, so
// the set is a superset of the pages that differ afterwards (frames of
// rolled-back changes and pages written back unchanged are included, which
// only costs a hash). Page 1 is always included (leaving WAL mode rewrites
// the header), and the file's size may change: pages past the original end
// are the caller's to read.

// walHarvestBytes is the WAL size after which its pages are harvested and
// it is checkpointed: it bounds the disk the WAL takes.
var walHarvestBytes int64 = 64 << 20

// walHeaderSize and walFrameHeaderSize are SQLite's WAL format
// (https://sqlite.org/fileformat2.html#walformat).
const (
	walHeaderSize      = 32
	walFrameHeaderSize = 24
)

// tracker is the page-tracking state of a DB.
type tracker struct {
	walPath string
	// wal is the WAL, read at each harvest and held open until Close.
	// Each checkpoint truncates the WAL to 0, and on ext4 closing a file
	// truncated to 0 writes all its dirty pages back (auto_da_alloc): a
	// descriptor closed after each read sent the whole WAL (64 MB) to the
	// disk at every harvest, only for the next checkpoint to free it, and
	// db_write syncs waited tens of ms behind it.
	wal    *os.File
	wasWAL bool                // the file was in WAL mode before (it stays so)
	pages  map[uint32]struct{} // 1-based page numbers written
}

// OpenTracking is Open for a replay that reports which pages it wrote
// (ChangedPages after Close). The file must exist and be a database that
// no other connection uses; its journal mode is restored at Close.
func OpenTracking(path string) (*DB, error) {
	d, err := Open(path)
	if err != nil {
		return nil, err
	}
	if err := d.startTracking(); err != nil {
		d.Close()
		return nil, fmt.Errorf("replay: track pages of %s: %w", path, err)
	}
	return d, nil
}

func (d *DB) startTracking() error {
	ctx := context.Background()
	var mode string
	if err := d.ownRow(ctx, "PRAGMA journal_mode", &mode); err != nil {
		return err
	}
	t := &tracker{walPath: d.path + "-wal", wasWAL: strings.EqualFold(mode, "wal"), pages: map[uint32]struct{}{1: {}}}
	pragmas := []string{"PRAGMA locking_mode = EXCLUSIVE", "PRAGMA wal_autocheckpoint = 0"}
	if !t.wasWAL {
		pragmas = append(pragmas, "PRAGMA journal_mode = WAL")
	}
	for _, p := range pragmas {
		if err := d.own(ctx, p); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	if !t.wasWAL {
		if err := d.ownRow(ctx, "PRAGMA journal_mode", &mode); err != nil {
			return err
		}
		if !strings.EqualFold(mode, "wal") {
			return fmt.Errorf("SQLite kept journal mode %q instead of WAL", mode)
		}
	}
	d.track = t
	return nil
}

// ownRow runs one of the DB's own queries, which the sandbox trusts, and
// scans its row into dest.
func (d *DB) ownRow(ctx context.Context, query string, dest ...any) error {
	d.sb.trusted = true
	defer func() { d.sb.trusted = false }()
	return d.conn.QueryRowContext(ctx, query).Scan(dest...)
}

// ApplyTracked is ApplyContext that keeps the WAL of a tracking DB small;
// on a DB opened with Open it is ApplyContext.
func (d *DB) ApplyTracked(ctx context.Context, r journal.Record) error {
	if err := d.ApplyContext(ctx, r); err != nil {
		return err
	}
	if d.track == nil {
		return nil
	}
	fi, err := os.Stat(d.track.walPath)
	if err != nil || fi.Size() < walHarvestBytes {
		return nil // no WAL yet, or small
	}
	return d.harvest(ctx)
}

// harvest adds the pages of the WAL's frames to the tracked set and
// checkpoints the WAL into the database, emptying it.
func (d *DB) harvest(ctx context.Context) error {
	if err := d.track.readWAL(); err != nil {
		return fmt.Errorf("replay: track pages of %s: %w", d.path, err)
	}
	var busy, logFrames, done int
	err := d.ownRow(ctx, "PRAGMA wal_checkpoint(TRUNCATE)", &busy, &logFrames, &done)
	if err == nil && (busy != 0 || logFrames != done) {
		err = fmt.Errorf("checkpointed %d of %d frames (busy %d)", done, logFrames, busy)
	}
	if err != nil {
		return fmt.Errorf("replay: checkpoint %s: %w", d.path, err)
	}
	// The checkpoint left its pages dirty: written back a step at a time
	// now, they do not reach the disk as one burst later.
	if err := writeback.DrainFile(d.path); err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	return nil
}

// readWAL adds the page number of every frame of the WAL file to the set.
// Frames past the last commit, or left from before a restart, are included
// too: a superset is what the caller needs.
func (t *tracker) readWAL() error {
	f, err := t.openWAL()
	if f == nil || err != nil {
		return err
	}
	var hdr [walHeaderSize]byte
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, walHeaderSize), hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty: nothing written since the last checkpoint
		}
		return fmt.Errorf("read WAL header: %w", err)
	}
	pageSize := int64(binary.BigEndian.Uint32(hdr[8:12]))
	if pageSize == 1 {
		pageSize = 65536 // how the format spells 64 KiB
	}
	if pageSize < 512 || pageSize > 65536 || pageSize&(pageSize-1) != 0 {
		return fmt.Errorf("WAL header names page size %d", pageSize)
	}
	var fh [walFrameHeaderSize]byte
	for off := int64(walHeaderSize); ; off += walFrameHeaderSize + pageSize {
		if _, err := f.ReadAt(fh[:], off); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read WAL frame at %d: %w", off, err)
		}
		if pg := binary.BigEndian.Uint32(fh[0:4]); pg != 0 {
			t.pages[pg] = struct{}{}
		}
	}
}

// openWAL returns the WAL held open (nil if there is none yet), reopened
// if the file at walPath is another one.
func (t *tracker) openWAL() (*os.File, error) {
	if t.wal != nil {
		held, err1 := t.wal.Stat()
		now, err2 := os.Stat(t.walPath)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return t.wal, nil
		}
		t.wal.Close()
		t.wal = nil
	}
	f, err := os.Open(t.walPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	t.wal = f
	return f, nil
}

// close closes the WAL held open.
func (t *tracker) close() {
	if t.wal != nil {
		t.wal.Close()
		t.wal = nil
	}
}

// finishTracking harvests the last frames and puts the file back in its
// journal mode, so that it is a plain database file again.
func (d *DB) finishTracking() error {
	ctx := context.Background()
	if err := d.harvest(ctx); err != nil {
		return err
	}
	if !d.track.wasWAL {
		if err := d.own(ctx, "PRAGMA journal_mode = DELETE"); err != nil {
			return fmt.Errorf("replay: leave WAL mode in %s: %w", d.path, err)
		}
	}
	return nil
}

// ChangedPages returns, after a successful Close of a DB opened with
// OpenTracking, the 1-based numbers of every page the replay may have
// written, in order (always including page 1); ok is false for a DB opened
// with Open or whose Close failed.
func (d *DB) ChangedPages() (pages []uint32, ok bool) {
	if d.track == nil || !d.trackDone {
		return nil, false
	}
	pages = make([]uint32, 0, len(d.track.pages))
	for p := range d.track.pages {
		pages = append(pages, p)
	}
	slices.Sort(pages)
	return pages, true
}
