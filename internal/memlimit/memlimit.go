// Package memlimit keeps the process's soft memory limit above what its
// operations must hold.
//
// backup-cli and the plugin set a low soft limit (debug.SetMemoryLimit) so
// that the heap does not grow to twice what is live. But some state grows
// with the database: a snapshot's page table is 32 bytes a page, 32 MB at
// 4 GB. Once what is live passes the limit, the collector runs without
// pause (up to half the CPU) and frees nothing: a 4 GB restore spent most
// of its CPU so. An operation that must hold such state reserves its size
// while it does, and the limit is the base plus every reservation.
package memlimit

import (
	"runtime/debug"
	"sync"
)

var state struct {
	mu       sync.Mutex
	base     int64 // -1: no limit set through this package
	reserved int64
}

func init() { state.base = -1 }

// SetBase sets the soft memory limit to n plus what is reserved. Until it
// is called (GOMEMLIMIT set, or a test), reservations change nothing.
func SetBase(n int64) {
	state.mu.Lock()
	defer state.mu.Unlock()
	state.base = n
	apply()
}

// Reserve raises the limit by n bytes until release is called.
func Reserve(n int64) (release func()) {
	if n <= 0 {
		return func() {}
	}
	state.mu.Lock()
	state.reserved += n
	apply()
	state.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			state.mu.Lock()
			state.reserved -= n
			apply()
			state.mu.Unlock()
		})
	}
}

func apply() {
	if state.base >= 0 {
		debug.SetMemoryLimit(state.base + state.reserved)
	}
}
