package plugin

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Compaction runs beside lightningd's db_write hooks, which wait for the
// plugin: it must not take the CPU or the disk from them. The compaction's
// goroutine runs on an OS thread of its own at nice 19 and in the idle I/O
// class (where the disk's scheduler supports classes); that is the thread
// the SQLite replay runs on. When the goroutine ends the thread ends with
// it (it stays locked), so no lowered thread ever serves a hook.

// priorityEnv disables lowering the compaction's priority when set to
// "normal" (for a measurement against it, or a system where a niced thread
// starves behind other work).
const priorityEnv = "BACKUP_COMPACT_PRIORITY"

// Linux's ioprio_set(2) constants.
const (
	ioprioWhoProcess = 1 // a thread id is a "process" to ioprio_set
	ioprioClassIdle  = 3
	ioprioClassShift = 13
)

// compactNice is the nice value of the compaction's thread.
const compactNice = 19

// runLowPriority runs fn on a new goroutine locked to its own OS thread at
// low CPU and I/O priority (unless priorityEnv says "normal"), and calls
// done with what was applied (for the log) when fn returns.
func runLowPriority(fn func(applied string)) {
	go func() {
		// Never unlocked: the thread exits with the goroutine.
		runtime.LockOSThread()
		fn(lowerPriority())
	}()
}

// lowerPriority lowers the calling thread's CPU and I/O priority and says
// what it did. Failures are reported, not fatal: compaction still works.
func lowerPriority() string {
	if v := os.Getenv(priorityEnv); strings.EqualFold(v, "normal") {
		return priorityEnv + "=normal: normal priority"
	}
	tid := unix.Gettid()
	var done []string
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, compactNice); err != nil {
		done = append(done, fmt.Sprintf("nice %d failed: %v", compactNice, err))
	} else {
		done = append(done, fmt.Sprintf("nice %d", compactNice))
	}
	_, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), ioprioClassIdle<<ioprioClassShift)
	if errno != 0 {
		done = append(done, fmt.Sprintf("idle I/O class failed: %v", errno))
	} else {
		done = append(done, "idle I/O class")
	}
	return strings.Join(done, ", ")
}

// jitterFactor scales a plugin's automatic compaction triggers by a factor
// in [1, 1.2) drawn once per run, so that nodes with the same settings and
// the same load sharing a server do not all compact at the same moment.
func jitterFactor() float64 {
	return 1 + 0.2*rand.Float64()
}
