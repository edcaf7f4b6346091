package plugin_test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	ld "github.com/clnbackup/backup/plugin/lightningdtest"
)

// TestVersion: backup-plugin --version prints one line naming the module
// and exits 0 without lightningd, and the plugin's start-up log line under
// lightningd carries that same version.
func TestVersion(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(pluginBin, "--version").Output()
	if err != nil {
		t.Fatalf("backup-plugin --version: %v", err)
	}
	line := strings.TrimSuffix(string(out), "\n")
	if !strings.HasPrefix(line, "backup-plugin github.com/clnbackup/backup ") || strings.Contains(line, "\n") {
		t.Fatalf("backup-plugin --version printed %q, want one line naming the module", out)
	}
	n := newNode(t, "")
	l := startInit(t, n.Dir)
	write(t, l, nil, ld.Record(ld.Hooks(readTrace(t, "trace1.jsonl"))[0]))
	got, ok := l.WaitLog(func(ll ld.LogLine) bool { return strings.Contains(ll.Message, "Backing up node") }, 5*time.Second)
	if !ok {
		t.Fatalf("no start-up log line; log: %v", l.Logs())
	}
	if !strings.HasSuffix(got.Message, line) {
		t.Errorf("start-up log line %q does not end with the version %q", got.Message, line)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}
