package history_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/store/history"
)

// TestRestoreSyncsBehind: a restore fsyncs its file in the background
// while it writes (every 256 KiB here), and restores equal to the original,
// also with windows and delta batches of a few pages; a background fsync
// that fails fails the restore, naming it, even when every later fsync
// succeeds (Linux reports a writeback error once), and leaves no file
// behind.
func TestRestoreSyncsBehind(t *testing.T) {
	dir := t.TempDir()
	dbPath, g := buildDB(t, dir, 5, deltaDBSize)
	st, _ := newVersionStore(t, 0, nil)
	_, n := initNode(t, st, dbPath, dir)
	hooks, _, _ := touchAndCompact(t, n, g, dbPath, 0.02)
	if err := workload.Build(dbPath, workload.Hooks(hooks...)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		failAt  int // the sync call that fails (0: none)
		windows bool
	}{
		{"synced", 0, false},
		{"small windows", 0, true},
		{"first sync fails", 1, false},
		{"a later sync fails", 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.windows {
				defer history.SetWindows(7, 11, 3)()
			}
			var mu sync.Mutex
			calls := 0
			defer history.SetSyncBehind(256<<10, func(f *os.File) error {
				mu.Lock()
				calls++
				call := calls
				mu.Unlock()
				switch {
				case call == tc.failAt:
					return &os.PathError{Op: "fsync", Path: f.Name(), Err: syscall.EIO}
				case call < tc.failAt:
					// At once, so that the failing sync surely
					// starts: one fsync on a loaded disk may
					// outlast the whole restore's writes.
					return nil
				}
				return f.Sync()
			})()
			out := t.TempDir()
			dest := filepath.Join(out, "restored.sqlite3")
			_, err := history.Restore(ctx, st, history.RestoreOptions{Node: "n1", Dest: dest})
			if tc.failAt == 0 {
				if err != nil {
					t.Fatal(err)
				}
				assertSame(t, tc.name, dest, dbPath)
				if calls < 1 {
					t.Errorf("no background sync of a %d-byte restore every 256 KiB", deltaDBSize)
				}
				return
			}
			if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), "fsync in the background") {
				t.Fatalf("restore with a failing background fsync: %v", err)
			}
			if left, _ := os.ReadDir(out); len(left) > 0 {
				t.Errorf("a failed restore left %s", left[0].Name())
			}
		})
	}
}
