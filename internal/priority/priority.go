// Package priority keeps background work (a compaction beside a node's
// db_writes, which lightningd waits for) off the CPU and disk time of the
// work a node waits for.
//
// The background work runs on OS threads of its own under the idle CPU
// policy (SCHED_IDLE, at nice 19) and in the idle I/O class (where the
// disk's scheduler has classes): the goroutine
// that starts it lowers its thread (Lower), and every worker goroutine it
// starts for the same context lowers its own (Join). A lowered goroutine
// stays locked to its thread, so the thread exits with it: no lowered
// thread ever serves other goroutines.
package priority

import (
	"context"
	"os"
	"runtime"
	"strings"
)

// Env disables lowering when set to "normal" (for a measurement against
// it, or a system where a niced thread starves behind other work).
const Env = "BACKUP_COMPACT_PRIORITY"

// Nice is the nice value of lowered threads.
const Nice = 19

// IOClassIdle is the I/O priority class of lowered threads (Linux's
// IOPRIO_CLASS_IDLE; ioprio_get returns it shifted by IOClassShift).
const (
	IOClassIdle  = 3
	IOClassShift = 13
)

type lowKey struct{}

// Background returns ctx marked so that workers joining it (Join) run
// lowered; ctx itself when Env says "normal".
func Background(ctx context.Context) context.Context {
	if normal() {
		return ctx
	}
	return context.WithValue(ctx, lowKey{}, true)
}

// IsBackground reports whether ctx was marked by Background.
func IsBackground(ctx context.Context) bool {
	low, _ := ctx.Value(lowKey{}).(bool)
	return low
}

// Join lowers the calling goroutine's thread if ctx is a Background one.
// Call it first in a worker goroutine that ends when its work ends: the
// goroutine is then locked to that thread for good.
func Join(ctx context.Context) {
	if IsBackground(ctx) {
		runtime.LockOSThread()
		lower()
	}
}

// Lower locks the calling goroutine to its thread for good and lowers the
// thread's CPU and I/O priority (unless Env says "normal"); it says what
// it did. Failures are reported, not fatal: the work still runs.
func Lower() string {
	runtime.LockOSThread()
	if normal() {
		return Env + "=normal: normal priority"
	}
	return lower()
}

func normal() bool { return strings.EqualFold(os.Getenv(Env), "normal") }
