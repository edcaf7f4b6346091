package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCopyCommand: a node recorded by trace-player (compactions, a journal
// tail) copied to a new store restores there equal to the node's own
// database; the second run copies nothing; the text output says how far
// the copy reaches; a node the source lacks is refused, naming it.
func TestCopyCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, dst := "file://"+filepath.Join(dir, "src"), "file://"+filepath.Join(dir, "dst")
	ldir := filepath.Join(dir, "lightning")
	os.Mkdir(ldir, 0o755)
	mustRun(t, "init", "--lightning-dir", ldir, src)
	applyTrace(t, src, testdata+"trace1.jsonl")
	out := mustRun(t, "copy", "--json", src, dst)
	var res copyResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("copy --json: %v\n%s", err, out)
	}
	if !res.Created || len(res.Nodes) != 1 || res.Manifests == 0 || res.Chunks == 0 || res.Bytes == 0 || res.Nodes[0].JournalHeld == 0 {
		t.Fatalf("copy: %+v", res)
	}
	restored := filepath.Join(dir, "restored.sqlite3")
	mustRun(t, "restore", dst, restored)
	sameDB(t, restored, testdata+"trace1-final.sqlite3")
	mustRun(t, "verify", "--read-data", dst)

	out = mustRun(t, "copy", "--node", "default", src, dst)
	if !strings.Contains(out, "0 restore points copied") || !strings.Contains(out, "0 chunks copied") || !strings.Contains(out, "up to data_version") {
		t.Fatalf("second copy:\n%s", out)
	}
	mustFail(t, `copy node "nobody"`, "copy", "--node", "nobody", src, dst)
	mustFail(t, "source", "copy", "file://"+filepath.Join(dir, "missing"), dst)
}
