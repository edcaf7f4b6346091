package writeback

import (
	"sync"
	"time"
)

// A db_write's fdatasync is the one write whose latency a node feels. A
// bulk step started while it is in flight queues on the same device and
// its flush waits for the step; so bulk writers in this process hold each
// step back while such a sync is in flight (Urgent), for at most maxYield,
// so that they still progress when syncs never stop.

// maxYield bounds how long one step waits for urgent syncs.
const maxYield = 2 * time.Millisecond

var urgent struct {
	mu sync.Mutex
	n  int
	// written counts the bytes bulk steps wrote back; flushedTo is the
	// count all of which a finished sync or flush covers, and mark the
	// count when the oldest sync in flight began (it covers that much).
	written, flushedTo, mark int64
	// idle is made by a waiting bulk writer and closed when n falls to
	// 0, so that a sync with no writer waiting allocates nothing.
	idle chan struct{}
}

// Urgent marks a latency-critical sync in flight until the returned
// function is called. It never blocks.
func Urgent() (done func()) {
	urgent.mu.Lock()
	if urgent.n == 0 {
		urgent.mark = urgent.written
	}
	urgent.n++
	urgent.mu.Unlock()
	return endUrgent
}

func endUrgent() {
	urgent.mu.Lock()
	urgent.n--
	if urgent.n == 0 {
		urgent.flushedTo = max(urgent.flushedTo, urgent.mark)
		if urgent.idle != nil {
			close(urgent.idle)
			urgent.idle = nil
		}
	}
	urgent.mu.Unlock()
}

// yield waits, at most maxYield, until no urgent sync is in flight.
func yield() {
	urgent.mu.Lock()
	if urgent.n == 0 {
		urgent.mu.Unlock()
		return
	}
	if urgent.idle == nil {
		urgent.idle = make(chan struct{})
	}
	idle := urgent.idle
	urgent.mu.Unlock()
	t := time.NewTimer(maxYield)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	}
}

// wroteBack counts n more bytes written back and returns the count and
// how many of them no sync or flush has covered yet.
func wroteBack(n int64) (mark, unflushed int64) {
	urgent.mu.Lock()
	defer urgent.mu.Unlock()
	urgent.written += n
	return urgent.written, urgent.written - urgent.flushedTo
}

// flushed records a flush that began once mark bytes were written back.
func flushed(mark int64) {
	urgent.mu.Lock()
	urgent.flushedTo = max(urgent.flushedTo, mark)
	urgent.mu.Unlock()
}
