// Package writeback keeps the dirty data a bulk writer leaves in the page
// cache small, so that another writer's fsync does not wait behind it.
//
// A compaction writes tens of megabytes (new packs, the checkpointed cache
// database) on the disk the plugin's journal fdatasyncs every db_write to.
// Written at once and synced at the end, those megabytes reach the disk as
// one burst: the journal's small sync queues behind it, and on ext4
// (data=ordered) its commit even waits for the pack's newly allocated
// blocks. Here the bulk writer starts the writeback of every Step bytes as
// it goes and waits for the step before, so at most about two steps are in
// flight and a db_write's sync waits for little; and it starts no step while
// such a sync of this process is in flight (Urgent).
package writeback

import (
	"fmt"
	"os"
)

// Step is the bytes written back at a time (a variable for tests).
var Step int64 = 64 << 10

// Write writes data to f at off in steps, each handed to the disk as soon
// as it is written. The caller still fsyncs f to make it durable; that
// fsync then finds little left to write.
func Write(f *os.File, data []byte, off int64) error {
	for done := int64(0); done < int64(len(data)); {
		n := min(Step, int64(len(data))-done)
		yield()
		if _, err := f.WriteAt(data[done:done+n], off+done); err != nil {
			return err
		}
		if err := pace(f, off+done, n); err != nil {
			return fmt.Errorf("write back %s: %w", f.Name(), err)
		}
		done += n
	}
	return nil
}

// Drain writes back f's dirty pages in the first size bytes a step at a
// time, each step waited for before the next starts (clean steps cost a
// system call each): what another process wrote into f (SQLite's
// checkpoint) then reaches the disk paced instead of as one burst at the
// next fsync.
func Drain(f *os.File, size int64) error {
	for off := int64(0); off < size; off += Step {
		yield()
		if err := settle(f, off, min(Step, size-off)); err != nil {
			return fmt.Errorf("write back %s: %w", f.Name(), err)
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
