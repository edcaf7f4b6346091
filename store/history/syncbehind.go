package history

import (
	"fmt"
	"os"
	"sync"
)

// syncEvery is how many bytes a restore writes between background syncs:
// enough that each sync is worth its journal commit, little enough that
// the disk works while pages are still being fetched and decoded instead
// of all at the final fsync.
var syncEvery int64 = 32 << 20

// syncBehind makes the bytes written to a file durable in the background
// while more are written: after every syncEvery bytes it starts a sync,
// one at a time, so that the final fsync finds little left to do. Linux
// reports a writeback error to one fsync only, so the first error is kept
// and fails every later write and wait: it is never dropped.
type syncBehind struct {
	sync  func() error // the file's fsync
	every int64

	mu      sync.Mutex
	pending int64 // bytes written since the last sync started
	running bool
	err     error
	wg      sync.WaitGroup
}

// syncFile is how syncBehind syncs a file (a test injects failures).
var syncFile = (*os.File).Sync

// newSyncBehind syncs f behind its writes.
func newSyncBehind(f *os.File) *syncBehind {
	return &syncBehind{sync: func() error { return syncFile(f) }, every: syncEvery}
}

// wrote records n bytes written, starting a sync when enough are pending
// and none runs. It returns the error of a sync that failed. A nil
// syncBehind does nothing.
func (b *syncBehind) wrote(n int64) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return b.err
	}
	b.pending += n
	if b.pending >= b.every && !b.running {
		b.pending, b.running = 0, true
		b.wg.Add(1)
		go b.run()
	}
	return nil
}

func (b *syncBehind) run() {
	defer b.wg.Done()
	err := b.sync()
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("fsync in the background while writing: %w", err)
	}
	b.running = false
}

// wait waits for the sync in flight and returns the first error any sync
// had. The caller still fsyncs the file at the end.
func (b *syncBehind) wait() error {
	if b == nil {
		return nil
	}
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}
