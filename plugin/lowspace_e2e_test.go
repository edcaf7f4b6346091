package plugin_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ld "github.com/clnbackup/backup/plugin/lightningdtest"
)

// mountTmpfs mounts a tmpfs of the given size (such as "32m") in a
// temporary directory for the test's duration, or skips the test when it
// cannot (not root, no mount in a container).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (%v: %s)", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// TestLowSpaceWarning puts the store on a 32 MiB tmpfs with the warning's
// floor at 16 MiB, and writes changes until the plugin warns: the warning
// comes while db_writes still succeed, says how much is free and what to
// do, backup-status shows it, and only later writes are refused for a full
// disk.
func TestLowSpaceWarning(t *testing.T) {
	t.Parallel()
	mnt := mountTmpfs(t, "32m")
	const floor = 16 << 20
	n := newNode(t, filepath.Join(mnt, "store"))
	l := start(t, n.Dir)
	if err := l.Init(map[string]any{"backup-free-space-floor": floor}); err != nil {
		t.Fatal(err)
	}
	isWarning := func(ll ld.LogLine) bool {
		return ll.Level == "warn" && strings.Contains(ll.Message, "Low free space on the backup store")
	}
	write(t, l, nil, ld.Change(1, 0))
	write(t, l, nil, ld.Change(2, 0))
	time.Sleep(1500 * time.Millisecond) // a first check, with plenty free
	if _, found := l.WaitLog(isWarning, 0); found {
		t.Fatalf("warned with more than %d bytes free: %v", floor, tail(l.Logs()))
	}
	v := uint32(3)
	var warning ld.LogLine
	for ; ; v++ {
		// Paced so that the watch, which reads the counters once a
		// second, sees the journal grow.
		write(t, l, nil, ld.Change(v, 200<<10))
		var found bool
		if warning, found = l.WaitLog(isWarning, 100*time.Millisecond); found {
			break
		}
		if v > 200 {
			t.Fatalf("no warning after %d changes: %v", v, tail(l.Logs()))
		}
	}
	t.Logf("warned after data_version %d: %s", v, warning.Message)
	for _, want := range []string{"MiB free, below the warning threshold of 16.0 MiB", "backup-free-space-floor=16777216", "backup-compact", "backup-cli gc", "grow"} {
		if !strings.Contains(warning.Message, want) {
			t.Errorf("the warning does not say %q: %s", want, warning.Message)
		}
	}
	raw, err := l.Call("backup-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		FreeBytes     *uint64 `json:"free_bytes"`
		FreeThreshold *uint64 `json:"free_threshold_bytes"`
		LowSpace      *bool   `json:"low_space"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.FreeBytes == nil || st.FreeThreshold == nil || *st.FreeThreshold != floor || st.LowSpace == nil || !*st.LowSpace {
		t.Errorf("backup-status does not show the low space: %s", raw)
	}
	// The disk fills later: the warning came first.
	for v++; ; v++ {
		r := ld.Change(v, 200<<10)
		ok, err := l.DBWrite(r.Version, r.Statements)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if v > 400 {
			t.Fatal("the store never filled")
		}
	}
	t.Logf("data_version %d refused on a full disk", v)
	if got := len(slicesFilter(l.Logs(), isWarning)); got != 1 {
		t.Errorf("%d warnings, want 1 while space stays low: %v", got, tail(l.Logs()))
	}
	l.Close()
}

func slicesFilter(ls []ld.LogLine, keep func(ld.LogLine) bool) []ld.LogLine {
	var out []ld.LogLine
	for _, l := range ls {
		if keep(l) {
			out = append(out, l)
		}
	}
	return out
}
