package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
)

// The admin commands (forget, gc, verify, unlock) run in process against
// real stores.

func TestAdminHelp(t *testing.T) {
	t.Parallel()
	for _, c := range []string{"forget", "gc", "verify", "unlock", "status"} {
		out := mustRun(t, c, "--help")
		for _, want := range []string{"Usage:", "backup-cli " + c, "Examples:", "--json"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s --help lacks %q:\n%s", c, want, out)
			}
		}
	}
	out := mustRun(t, "--help")
	for _, c := range []string{"forget", "gc", "verify", "unlock", "status"} {
		if !strings.Contains(out, "\n  "+c+" ") {
			t.Errorf("backup-cli --help does not list %s:\n%s", c, out)
		}
	}
}

// historyStore makes a store whose node "default" was recorded from a real
// trace with compactions every 100 changes, plus a node "bob" initialised
// from a real database.
func historyStore(t *testing.T) (dir, url string) {
	t.Helper()
	tmp := t.TempDir()
	dir = filepath.Join(tmp, "store")
	url = "file://" + dir
	ldir := filepath.Join(tmp, "lightning")
	os.Mkdir(ldir, 0o755)
	mustRun(t, "init", "--lightning-dir", ldir, url)
	applyTrace(t, url, testdata+"trace1.jsonl")
	bobDir := filepath.Join(tmp, "bob")
	os.Mkdir(bobDir, 0o755)
	copyFile(t, testdata+"crash3-final.sqlite3", filepath.Join(bobDir, "lightningd.sqlite3"))
	mustRun(t, "init", "--lightning-dir", bobDir, "--node", "bob", url)
	return dir, url
}

func TestVerifyCLI(t *testing.T) {
	t.Parallel()
	dir, url := historyStore(t)
	out := mustRun(t, "verify", url)
	if !strings.Contains(out, "No problems found") || !strings.Contains(out, "2 nodes, 8 manifests") {
		t.Fatalf("verify of a healthy store:\n%s", out)
	}
	out = mustRun(t, "verify", "--read-data", url)
	if !strings.Contains(out, "Read back") || !strings.Contains(out, "MB/s") {
		t.Fatalf("verify --read-data:\n%s", out)
	}
	mustRun(t, "verify", "--read-data=5", "--node", "bob", url)
	mustFail(t, "percentage", "verify", "--read-data=0", url)
	mustFail(t, "no such node", "verify", "--node", "carol", url)

	// Damage: truncate bob's only manifest.
	var rep struct {
		Problems []struct {
			Object  string
			Affects []struct {
				Node     string
				Manifest uint64
				Newest   bool `json:"newest_state"`
			}
		}
	}
	bobManifest := filepath.Join(dir, "nodes", "bob", "manifests", "00000000000000000001")
	raw, err := os.ReadFile(bobManifest)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bobManifest, raw[:len(raw)/3], 0o644)
	out, errOut, ok := run(t, "verify", url)
	if ok || !strings.Contains(errOut, "1 problems found") {
		t.Fatalf("verify of a damaged store succeeded or says the wrong thing:\n%s\n%s", out, errOut)
	}
	if !strings.Contains(out, "nodes/bob/manifests/00000000000000000001: manifest truncated") || !strings.Contains(out, "breaks: bob manifest 1 and the newest state") {
		t.Fatalf("verify output:\n%s", out)
	}
	out, _, ok = run(t, "verify", "--json", url)
	if ok {
		t.Fatal("verify --json of a damaged store exited 0")
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Problems) != 1 || len(rep.Problems[0].Affects) != 2 {
		t.Fatalf("verify --json: %v\n%s", err, out)
	}
	// The other node verifies clean on its own.
	mustRun(t, "verify", "--node", "default", "--read-data", url)
}

func TestForgetCLI(t *testing.T) {
	t.Parallel()
	_, url := historyStore(t)
	out := mustRun(t, "forget", "--dry-run", "--keep-last", "2", url)
	for _, want := range []string{"Dry run of forget", "policy: --keep-last 2", "Node default:", "Node bob:",
		"drop    matches no keep rule", "keep    newest manifest (the journal builds on it), last 2", "Would drop 5."} {
		if !strings.Contains(out, want) {
			t.Errorf("forget --dry-run lacks %q:\n%s", want, out)
		}
	}
	if l := mustRun(t, "list", url); strings.Count(l, "\n") < 10 {
		t.Fatalf("dry run deleted manifests:\n%s", l)
	}
	out = mustRun(t, "forget", url)
	if !strings.Contains(out, "No --keep rule given: every restore point is kept") || !strings.Contains(out, "Dropped 0.") {
		t.Fatalf("forget without a rule:\n%s", out)
	}
	mustFail(t, "invalid duration", "forget", "--keep-within", "3 days", url)
	mustFail(t, "no such node", "forget", "--node", "carol", "--keep-last", "1", url)

	var rep struct {
		Decisions []struct {
			Node     string
			Manifest uint64
			Keep     bool
			Reasons  []string
		}
		Dropped, Deleted int
	}
	out = mustRun(t, "forget", "--json", "--node", "default", "--keep-within", "1w", "--keep-last", "3", url)
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Dropped != 0 || len(rep.Decisions) != 7 {
		t.Fatalf("forget --json --keep-within 1w: %v\n%s", err, out)
	}
	out = mustRun(t, "forget", "--json", "--node", "default", "--keep-last", "3", url)
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Dropped != 4 || rep.Deleted != 4 {
		t.Fatalf("forget --json --keep-last 3: %v\n%s", err, out)
	}
	mustRun(t, "verify", url)
	sameDB(t, restoreNewest(t, url, "default"), testdata+"trace1-final.sqlite3")
}

func restoreNewest(t *testing.T, url, node string) string {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "restored.sqlite3")
	mustRun(t, "restore", "--node", node, url, dest)
	return dest
}

func TestGCCLI(t *testing.T) {
	t.Parallel()
	_, url := historyStore(t)
	mustRun(t, "forget", "--node", "default", "--keep-last", "1", url)
	out := mustRun(t, "gc", "--dry-run", "--json", url)
	var rep map[string]any
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("gc --dry-run --json: %v\n%s", err, out)
	}
	// Everything is younger than the default grace period of a day.
	if (rep["DryRun"] != true && rep["dry_run"] != true) || rep["manifests"].(float64) != 2 || rep["kept_young_chunks"].(float64) == 0 || rep["deleted_packs"].(float64) != 0 {
		t.Fatalf("gc --dry-run --json: %s", out)
	}
	out = mustRun(t, "gc", "--dry-run", url)
	for _, want := range []string{"Dry run of gc", "chunks younger than the grace period (24h0m0s)", "would be deleted"} {
		if !strings.Contains(out, want) {
			t.Errorf("gc --dry-run lacks %q:\n%s", want, out)
		}
	}
	out = mustRun(t, "gc", "--grace", "2d", url)
	if !strings.Contains(out, "grace period (48h0m0s)") {
		t.Fatalf("gc --grace 2d:\n%s", out)
	}
	mustFail(t, "too short", "gc", "--grace", "30m", url)
	mustFail(t, "fraction between 0 and 1", "gc", "--repack-below", "2", url)
	mustFail(t, "invalid duration", "gc", "--grace", "soon", url)
	mustRun(t, "verify", "--read-data", url)
}

func TestUnlockCLI(t *testing.T) {
	t.Parallel()
	_, url := historyStore(t)
	mustFail(t, "--node is required", "unlock", url)
	mustFail(t, "no such node", "unlock", "--node", "carol", url)
	out := mustRun(t, "unlock", "--node", "default", url)
	if !strings.Contains(out, "holds no lease") {
		t.Fatalf("unlock without a lease: %s", out)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// A live lease: this test process, on this host, for an hour.
	if _, err := st.AcquireLease(ctx, "default", time.Hour); err != nil {
		t.Fatal(err)
	}
	_, errOut, ok := run(t, "unlock", "--node", "default", url)
	if ok || !strings.Contains(errOut, "held by another writer") || !strings.Contains(errOut, "pid") || !strings.Contains(errOut, "--force") {
		t.Fatalf("unlock of a live lease: ok=%v %s", ok, errOut)
	}
	out = mustRun(t, "unlock", "--node", "default", "--force", url)
	if !strings.Contains(out, "Forced: cleared the live lease") {
		t.Fatalf("unlock --force: %s", out)
	}
	if l, err := st.Lease(ctx, "default"); err != nil || l != nil {
		t.Fatalf("lease after unlock --force: %v %v", l, err)
	}
	// An expired lease goes without --force.
	if _, err := st.AcquireLease(ctx, "bob", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	var res struct {
		Node    string
		Cleared *store.Lease
		Forced  bool
	}
	out = mustRun(t, "unlock", "--json", "--node", "bob", url)
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Cleared == nil || res.Forced || res.Cleared.PID != os.Getpid() {
		t.Fatalf("unlock --json of an expired lease: %v %s", err, out)
	}
}
