package plugin

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/internal/priority"

	"golang.org/x/sys/unix"
)

// threadPriority reads the calling thread's nice value from
// /proc/self/task/<tid>/stat, its CPU policy, and its I/O priority class
// from ioprio_get.
func threadPriority(t *testing.T) (nice, policy, ioClass int) {
	tid := unix.Gettid()
	b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/stat")
	if err != nil {
		t.Error(err)
		return
	}
	// The name field (2) is in parentheses and may hold spaces: count
	// from after it. Field 19 is nice.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if nice, err = strconv.Atoi(f[19-3]); err != nil {
		t.Error(err)
	}
	// Field 41 is the scheduling policy.
	if policy, err = strconv.Atoi(f[41-3]); err != nil {
		t.Error(err)
	}
	r, _, errno := unix.Syscall(unix.SYS_IOPRIO_GET, 1 /* a thread */, uintptr(tid), 0)
	if errno != 0 {
		t.Error(errno)
	}
	return nice, policy, int(r) >> priority.IOClassShift
}

// TestCompactionPriority: the compaction's thread runs under the idle CPU
// policy at nice 19 in the idle I/O class, and so do the workers started
// for its context; BACKUP_COMPACT_PRIORITY=normal leaves them as they were;
// and the thread that ran it is never reused for other goroutines (here,
// the test's own thread keeps its priority).
func TestCompactionPriority(t *testing.T) {
	baseNice, basePolicy, baseClass := threadPriority(t)
	for _, tc := range []struct {
		env              string
		nice, policy, io int
		appliedIs        string
	}{
		{"", priority.Nice, unix.SCHED_IDLE, priority.IOClassIdle, "idle CPU policy, idle I/O class"},
		{"normal", baseNice, basePolicy, baseClass, "BACKUP_COMPACT_PRIORITY=normal: normal priority"},
	} {
		t.Run("env="+tc.env, func(t *testing.T) {
			t.Setenv(priority.Env, tc.env)
			type seen struct {
				applied           string
				nice, policy, cls int
			}
			got := make(chan seen, 2)
			runLowPriority(context.Background(), func(ctx context.Context, applied string) {
				n, p, c := threadPriority(t)
				got <- seen{applied, n, p, c}
				// A worker the store starts for the compaction.
				go func() {
					priority.Join(ctx)
					n, p, c := threadPriority(t)
					got <- seen{applied, n, p, c}
				}()
			})
			for _, who := range []string{"compaction", "its worker"} {
				var s seen
				select {
				case s = <-got:
				case <-time.After(time.Minute):
					t.Fatalf("%s never ran", who)
				}
				if s.applied != tc.appliedIs || s.nice != tc.nice || s.policy != tc.policy || s.cls != tc.io {
					t.Fatalf("%s: applied %q, nice %d, policy %d, I/O class %d; want %q, %d, %d, %d", who, s.applied, s.nice, s.policy, s.cls, tc.appliedIs, tc.nice, tc.policy, tc.io)
				}
			}
		})
	}
	if n, p, c := threadPriority(t); n != baseNice || p != basePolicy || c != baseClass {
		t.Fatalf("the test's thread changed: nice %d policy %d class %d", n, p, c)
	}
}

// TestAutoReasonJitter: each trigger fires at its setting times the jitter
// factor, not before; factors stay in [1, 1.2).
func TestAutoReasonJitter(t *testing.T) {
	now := time.Now()
	o := options{compactChanges: 1000, compactBytes: 1 << 20, compactEvery: time.Hour}
	for _, tc := range []struct {
		pend   Pending
		jitter float64
		fires  bool
	}{
		{Pending{Changes: 1000, SnapshotTime: now}, 1, true},
		{Pending{Changes: 1000, SnapshotTime: now}, 1.1, false},
		{Pending{Changes: 1100, SnapshotTime: now}, 1.1, true},
		{Pending{JournalBytes: 1 << 20, SnapshotTime: now}, 1.19, false},
		{Pending{JournalBytes: 2 << 20, SnapshotTime: now}, 1.19, true},
		{Pending{Changes: 2, SnapshotTime: now.Add(-65 * time.Minute)}, 1.1, false},
		{Pending{Changes: 2, SnapshotTime: now.Add(-67 * time.Minute)}, 1.1, true},
		{Pending{Changes: 1000, SnapshotTime: now}, 0, true}, // not drawn yet: 1
	} {
		if got := autoReason(o, tc.pend, now, tc.jitter); (got != "") != tc.fires {
			t.Errorf("%+v jitter %v: %q, want fires=%v", tc.pend, tc.jitter, got, tc.fires)
		}
	}
	for range 1000 {
		if j := jitterFactor(); j < 1 || j >= 1.2 {
			t.Fatalf("jitter factor %v", j)
		}
	}
}
