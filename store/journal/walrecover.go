package journal

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// recover replays what the WAL holds into the node journals and starts a
// new generation (always: bytes a crash left after the last valid frame
// must never be read as part of the generation written next).
func (w *WAL) recover(dirOf func(string) (string, error)) error {
	fi, err := w.f.Stat()
	if err != nil {
		return fmt.Errorf("write-ahead log %s: %w", w.path, err)
	}
	gen, recs, _, err := readWAL(w.f, fi.Size())
	if errors.Is(err, errBadWAL) {
		return fmt.Errorf("write-ahead log %s: both header slots are damaged, so the changes it may hold cannot be replayed: "+
			"check the disk; then move the file away, run backup-cli verify, and restart (nodes resend nothing: their newest changes may be lost): %w", w.path, ErrCorrupt)
	}
	if err != nil {
		return fmt.Errorf("write-ahead log %s: read: %w", w.path, err)
	}
	if len(recs) > 0 {
		if dirOf == nil {
			return fmt.Errorf("write-ahead log %s holds %d records and no journal directory was given to replay them into", w.path, len(recs))
		}
		if err := replayWAL(recs, dirOf); err != nil {
			return fmt.Errorf("write-ahead log %s: replay: %w", w.path, err)
		}
	}
	if _, err := w.reset(gen + 1); err != nil {
		return fmt.Errorf("write-ahead log %s: %w", w.path, err)
	}
	w.gen, w.off, w.syncs = gen+1, walDataStart, 1
	return nil
}

// replayWAL writes each node's records back into its journal. A node's
// records form runs of consecutive seqs; only the last run counts (an
// earlier one belonged to a journal since removed and started again).
func replayWAL(recs []walRecord, dirOf func(string) (string, error)) error {
	var order []string
	runs := map[string][]walRecord{}
	for _, r := range recs {
		run, seen := runs[r.node]
		if !seen {
			order = append(order, r.node)
		}
		if len(run) > 0 && r.rec.Seq != run[len(run)-1].rec.Seq+1 {
			run = run[:0]
		}
		runs[r.node] = append(run, r)
	}
	for _, node := range order {
		dir, err := dirOf(node)
		if err != nil {
			return fmt.Errorf("node %q named in the log: %w", node, err)
		}
		if err := replayJournal(dir, runs[node]); err != nil {
			return fmt.Errorf("node %q: %w", node, err)
		}
	}
	return nil
}

// replayJournal makes the journal in dir hold run (records first..last)
// durably: records before first are durable already (a WAL reset synced
// them), those from first on may be missing or torn in any order (written
// without fdatasync), so the journal is cut before first and run written
// again. Cutting and rewriting is idempotent: a crash during replay
// replays again. A journal directory that is gone was removed with its
// node: nothing to replay.
func replayJournal(dir string, run []walRecord) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	first := run[0].rec.Seq
	if err := cutJournal(dir, first); err != nil {
		return err
	}
	j, err := Open(dir, Options{FirstSeq: first})
	if err != nil {
		return err
	}
	j.deferSync = true
	for _, r := range run {
		next := j.NextSeq()
		if r.rec.Seq < next {
			continue // trimmed from the start: in the journal already
		}
		if r.rec.Seq > next {
			j.Close()
			return fmt.Errorf("journal %s: the log continues at record %d but the journal at %d: %w", dir, r.rec.Seq, next, ErrCorrupt)
		}
		if _, err := j.write(r.kind, r.rec); err != nil {
			j.Close()
			return err
		}
	}
	if _, err := j.syncDirty(); err != nil {
		j.Close()
		return err
	}
	return j.Close()
}

// cutJournal removes the records from seq first on from the journal in
// dir: segments starting after first are deleted, the one holding first
// is zeroed from there. The records before first must be valid.
func cutJournal(dir string, first uint64) error {
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := removeTemps(dir); err != nil {
		return fmt.Errorf("journal %s: remove temporary files: %w", dir, err)
	}
	list, err := listSegments(dir)
	if err != nil {
		return err
	}
	removed := false
	for len(list) > 0 && list[len(list)-1].first > first {
		if err := os.Remove(filepath.Join(dir, list[len(list)-1].name)); err != nil {
			return fmt.Errorf("journal %s: %w", dir, err)
		}
		list, removed = list[:len(list)-1], true
	}
	if removed {
		if err := fsyncDir(dir); err != nil {
			return fmt.Errorf("journal %s: %w", dir, err)
		}
	}
	if len(list) == 0 {
		return nil
	}
	return cutSegment(dir, list[len(list)-1], first)
}

// cutSegment zeroes segment s from the record with seq first on.
func cutSegment(dir string, s segment, first uint64) error {
	f, err := os.OpenFile(filepath.Join(dir, s.name), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("journal %s: %w", dir, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("journal %s: %w", dir, err)
	}
	hdr := make([]byte, headerSize)
	if _, err := f.ReadAt(hdr, 0); err != nil && err != io.EOF {
		return fmt.Errorf("journal %s: segment %s: %w", dir, s.name, err)
	}
	if h, err := decodeHeader(hdr); err != nil || h != s.first {
		return fmt.Errorf("journal %s: segment %s: header damaged before the records the write-ahead log holds: %w", dir, s.name, ErrCorrupt)
	}
	fr := newFrameReader(f, headerSize, fi.Size(), s.first, false)
	for fr.expect < first {
		p, _, bad, err := fr.next()
		if err != nil {
			return fmt.Errorf("journal %s: segment %s: %w", dir, s.name, err)
		}
		if bad != nil || p == nil {
			return fmt.Errorf("journal %s: segment %s: record %d, before the ones the write-ahead log holds (from %d), is missing or damaged (%v): %w", dir, s.name, fr.expect, first, bad, ErrCorrupt)
		}
	}
	if err := zeroRange(f, fr.off, fi.Size()); err != nil {
		return fmt.Errorf("journal %s: segment %s: %w", dir, s.name, err)
	}
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("journal %s: segment %s: %w", dir, s.name, err)
	}
	return nil
}

// fsyncDirOf fsyncs the directory holding path.
func fsyncDirOf(path string) error { return fsyncDir(filepath.Dir(path)) }
