// Package writeback keeps the dirty data a bulk writer leaves in the page
// cache small, so that another writer's fsync does not wait behind it.
//
// A compaction writes tens of megabytes (new packs, the checkpointed cache
// database) on the disk the plugin's journal fdatasyncs every db_write to.
// Written at once and synced at the end, those megabytes reach the disk as
// one burst: the journal's small sync queues behind it, and on ext4
// (data=ordered) its commit even waits for the pack's newly allocated
// blocks. Here a bulk writer writes Step bytes at a time and waits for
// each step to reach the disk before the next, and the whole process has
// one step in flight at a time however many goroutines write (a
// compaction's pack readers each write their pages): a db_write's sync then
// waits for at most one small step. No step starts while such a sync of
// this process is in flight (Urgent).
package writeback

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// Step is the bytes written back at a time (a variable for tests).
var Step int64 = 64 << 10

// Budget is how many bulk bytes a db_write's sync may find written but not
// yet flushed from the disk's write cache (a variable for tests). A sync
// ends with a cache flush, and on a virtual disk that flush costs about as
// much as the bytes written since the last one (0.45 ms a MiB on the
// development VM, against 0.4 ms for the sync alone): so each time the bulk
// writers of the process have written Budget bytes that no sync has
// flushed since, the writer flushes them itself, and a bulk writer in
// another process (backup-cli compact) does the same on its side. Smaller
// budgets make each flush shorter, for the hook's sync that finds the
// bytes and for the hook that queues behind the writer's own flush;
// docs/benchmark.md compares 1 MiB and 256 KiB.
var Budget int64 = 256 << 10

// inFlight is held by the one step of the process being written back.
// Several steps in flight at once (one per writing goroutine) made the
// syncs of db_writes several times slower than one at a time.
var inFlight sync.Mutex

// Write writes data to f at off in steps, each written back and waited for
// before the next. The caller still fsyncs f to make it durable; that fsync
// then finds little left to write.
func Write(f *os.File, data []byte, off int64) error {
	for done := int64(0); done < int64(len(data)); {
		n := min(Step, int64(len(data))-done)
		if err := step(f, off+done, n, data[done:done+n], nil); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// step writes data (nil: nothing, only what is dirty already) at off and
// writes [off, off+n) back, as the process's one step in flight; and
// flushes the disk's cache once Budget bytes written back wait in it, by
// syncing f, or s when f may hold other dirty pages (a sync of f would
// write them all at once).
func step(f *os.File, off, n int64, data []byte, s *scratch) error {
	yield()
	inFlight.Lock()
	defer inFlight.Unlock()
	written := n
	if data != nil {
		if _, err := f.WriteAt(data, off); err != nil {
			return fmt.Errorf("write %d bytes at %d to %s: %w", len(data), off, f.Name(), err)
		}
	} else {
		written = dirtyBytes(f, off, n)
		if written == 0 {
			return nil
		}
	}
	if err := settle(f, off, n); err != nil {
		return fmt.Errorf("write back %s: %w", f.Name(), err)
	}
	if mark, unflushed := wroteBack(written); unflushed >= Budget {
		flush := func() error { return syncData(f) }
		if s != nil {
			flush = s.flush
		}
		if err := flush(); err != nil {
			return fmt.Errorf("flush the disk's cache after writing %s: %w", f.Name(), err)
		}
		flushed(mark)
	}
	return nil
}

// Drain writes back f's dirty pages in the first size bytes a step at a
// time, each step waited for before the next starts (clean steps cost a
// system call each): what another process wrote into f (SQLite's
// checkpoint) then reaches the disk paced instead of as one burst at the
// next fsync.
func Drain(f *os.File, size int64) error {
	s := &scratch{dir: filepath.Dir(f.Name())}
	defer s.close()
	for off := int64(0); off < size; off += Step {
		if err := step(f, off, min(Step, size-off), nil, s); err != nil {
			return err
		}
	}
	return nil
}

// DrainFile is Drain of the file at path, whole.
func DrainFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	return Drain(f, fi.Size())
}
