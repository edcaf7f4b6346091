package lightningdtest

import (
	"fmt"
	"testing"
	"time"
)

// StartT starts the plugin at path in dir for a test, sends getmanifest
// and, with init, init (no options). The plugin is killed when the test
// ends, and the test fails if it broke the protocol. Its log goes to t.Log.
func StartT(t testing.TB, path, dir string, init bool) *Lightningd {
	t.Helper()
	l, err := Start(t.Context(), path, dir, Options{Logf: t.Logf, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Kill()
		if v := l.Violations(); len(v) > 0 {
			t.Errorf("plugin %d broke the protocol: %q", l.PID(), v)
		}
	})
	if _, err := l.GetManifest(); err != nil {
		t.Fatal(err)
	}
	if init {
		if err := l.Init(nil); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// WaitOutputStuck waits (at most timeout) until the plugin's stdout pipe is
// at least half full and has not changed for 200ms: with HoldOutput(true)
// and more output to come, the plugin's writer is then blocked. (A pipe
// holds its capacity in pages, and a small write that does not fit in the
// rest of the last page takes a new one: a full pipe holds less than its
// capacity.)
func (l *Lightningd) WaitOutputStuck(timeout time.Duration) error {
	prev, since := -1, time.Now()
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		n, capacity, err := l.Unread()
		if err != nil {
			return err
		}
		if n != prev || n < capacity/2 {
			prev, since = n, time.Now()
		} else if time.Since(since) >= 200*time.Millisecond {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the plugin's output did not fill the pipe within %v (%d of %d bytes unread)", timeout, n, capacity)
		}
	}
}

// MatchesFile restores the node's newest state into a temporary file and
// compares it with the database at path: nil when they are equal table by
// table.
func (n *Node) MatchesFile(path string) error {
	return n.compare(0, func(want string) error { return copyFile(path, want) })
}
