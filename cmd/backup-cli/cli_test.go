package main_test

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/replay"
)

var cliBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "backup-cli-test")
	if err != nil {
		panic(err)
	}
	cliBin = filepath.Join(dir, "backup-cli")
	if out, err := exec.Command("go", "build", "-o", cliBin, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs backup-cli and returns stdout, stderr and whether it succeeded.
func run(t *testing.T, args ...string) (string, string, bool) {
	t.Helper()
	cmd := exec.Command(cliBin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err == nil
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, ok := run(t, args...)
	if !ok {
		t.Fatalf("backup-cli %s failed:\n%s%s", strings.Join(args, " "), out, errOut)
	}
	return out
}

func mustFail(t *testing.T, want string, args ...string) {
	t.Helper()
	out, errOut, ok := run(t, args...)
	if ok {
		t.Fatalf("backup-cli %s succeeded, want failure:\n%s", strings.Join(args, " "), out)
	}
	if !strings.Contains(errOut, want) {
		t.Fatalf("backup-cli %s: stderr %q does not contain %q", strings.Join(args, " "), errOut, want)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
}

func sameDB(t *testing.T, a, b string) {
	t.Helper()
	diff, err := replay.Diff(a, b)
	if err != nil || len(diff) > 0 {
		t.Fatalf("%s vs %s: %v\n%s", a, b, err, strings.Join(diff, "\n"))
	}
}

const testdata = "../../testdata/"

func TestInitRestoreListCompact(t *testing.T) {
	tmp := t.TempDir()
	ldir := filepath.Join(tmp, "lightning")
	os.Mkdir(ldir, 0o755)
	copyFile(t, testdata+"trace1-final.sqlite3", filepath.Join(ldir, "lightningd.sqlite3"))
	url := "file://" + filepath.Join(tmp, "store")

	out := mustRun(t, "init", "--lightning-dir", ldir, "--node", "alice", url)
	for _, want := range []string{"Created store", "Found an existing database", "data_version 385", "Successfully written initial snapshot", "backup.lock"} {
		if !strings.Contains(out, want) {
			t.Errorf("init output lacks %q:\n%s", want, out)
		}
	}
	raw, err := os.ReadFile(filepath.Join(ldir, "backup.lock"))
	if err != nil {
		t.Fatal(err)
	}
	var lock map[string]string
	if err := json.Unmarshal(raw, &lock); err != nil || lock["backend_url"] != url || lock["node"] != "alice" {
		t.Fatalf("backup.lock = %s (%v)", raw, err)
	}
	if fi, _ := os.Stat(filepath.Join(ldir, "backup.lock")); fi.Mode().Perm() != 0o600 {
		t.Errorf("backup.lock mode %v", fi.Mode())
	}
	mustFail(t, "already exists", "init", "--lightning-dir", ldir, "--node", "alice", url)
	mustFail(t, "node already exists", "init", "--node", "alice", url)
	mustFail(t, "invalid node name", "init", "--node", "../x", url)
	mustFail(t, "invalid node name", "init", "--node", "", url)

	// A second node; then --node is required.
	mustRun(t, "init", "--node", "bob", url)
	mustFail(t, "choose one with --node", "restore", url, filepath.Join(tmp, "x.sqlite3"))

	// Restore into a directory and into a file.
	rdir := filepath.Join(tmp, "restored")
	os.Mkdir(rdir, 0o755)
	out = mustRun(t, "restore", "--node", "alice", url, rdir)
	if !strings.Contains(out, `node "alice" manifest 1 at data_version 385`) {
		t.Errorf("restore output: %s", out)
	}
	sameDB(t, filepath.Join(rdir, "lightningd.sqlite3"), testdata+"trace1-final.sqlite3")
	mustFail(t, "exists", "restore", "--node", "alice", url, rdir)
	mustFail(t, "exists", "restore", "--node", "alice", url, filepath.Join(rdir, "lightningd.sqlite3"))

	var res map[string]any
	out = mustRun(t, "restore", "--json", "--node", "alice", url, filepath.Join(tmp, "r2.sqlite3"))
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["data_version"].(float64) != 385 {
		t.Fatalf("restore --json: %s (%v)", out, err)
	}

	// list, human and JSON.
	out = mustRun(t, "list", url)
	for _, want := range []string{"Node alice", "Node bob", "Total:"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	var l struct {
		Nodes []struct {
			Name      string
			Manifests []struct{ Seq uint64 } `json:"manifests"`
		} `json:"nodes"`
		LogicalBytes int64 `json:"logical_bytes"`
		StoredBytes  int64 `json:"stored_bytes"`
	}
	out = mustRun(t, "list", "--json", url)
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Nodes) != 2 || l.StoredBytes == 0 {
		t.Fatalf("list --json: %s (%v)", out, err)
	}

	// compact with nothing to do.
	out = mustRun(t, "compact", "--node", "alice", url)
	if !strings.Contains(out, "Nothing to compact") {
		t.Errorf("compact: %s", out)
	}
	mustFail(t, "no such node", "compact", "--node", "carol", url)
}

func TestLegacyRestore(t *testing.T) {
	tmp := t.TempDir()
	dest := filepath.Join(tmp, "legacy.sqlite3")
	abs, _ := filepath.Abs(testdata + "legacy-v1.dbak")
	out := mustRun(t, "restore", "file://"+abs, dest)
	if !strings.Contains(out, "data_version 400") {
		t.Errorf("legacy restore: %s", out)
	}
	sameDB(t, dest, testdata+"legacy-v1-live.sqlite3")
	notLegacy, _ := filepath.Abs(testdata + "trace1.jsonl")
	mustFail(t, "not a backup file", "restore", "file://"+notLegacy, filepath.Join(tmp, "x"))
}

func TestOldStateGuard(t *testing.T) {
	tmp := t.TempDir()
	url := "file://" + filepath.Join(tmp, "store")
	ldir := filepath.Join(tmp, "lightning")
	os.Mkdir(ldir, 0o755)
	mustRun(t, "init", "--lightning-dir", ldir, url)
	player := filepath.Join(tmp, "trace-player")
	if out, err := exec.Command("go", "build", "-o", player, "../trace-player").CombinedOutput(); err != nil {
		t.Fatalf("build trace-player: %v\n%s", err, out)
	}
	if out, err := exec.Command(player, "apply", "--compact-every", "100", url, testdata+"trace1.jsonl").CombinedOutput(); err != nil {
		t.Fatalf("trace-player: %v\n%s", err, out)
	}
	// Manifest 3 is a snapshot at data_version 97: an old state.
	mustFail(t, "refusing to restore the old state", "restore", "--manifest", "3", url, ldir)
	mustFail(t, "refusing to restore the old state", "restore", "--version", "200", url, ldir)
	_, errOut, ok := run(t, "restore", "--manifest", "3", "--allow-old-state", url, ldir)
	if !ok || !strings.Contains(errOut, "WARNING: this is an OLD state") {
		t.Fatalf("restore --allow-old-state: ok=%v stderr=%s", ok, errOut)
	}
	elsewhere := filepath.Join(tmp, "inspect.sqlite3")
	_, errOut, ok = run(t, "restore", "--version", "200", url, elsewhere)
	if !ok || !strings.Contains(errOut, "WARNING") {
		t.Fatalf("old state outside a lightning dir: ok=%v stderr=%s", ok, errOut)
	}
	if v, _, _ := replay.DataVersionOf(elsewhere); v != 200 {
		t.Fatalf("restored data_version %d, want 200", v)
	}
	// The newest state needs no flag and gives no warning.
	newest := filepath.Join(tmp, "newest")
	os.Mkdir(newest, 0o755)
	os.WriteFile(filepath.Join(newest, "backup.lock"), []byte("{}"), 0o600)
	_, errOut, ok = run(t, "restore", url, newest)
	if !ok || errOut != "" {
		t.Fatalf("newest restore: ok=%v stderr=%s", ok, errOut)
	}
	sameDB(t, filepath.Join(newest, "lightningd.sqlite3"), testdata+"trace1-final.sqlite3")
	mustFail(t, "exclusive", "restore", "--manifest", "1", "--version", "0", url, filepath.Join(tmp, "y"))
}

func TestErrorsAndHelp(t *testing.T) {
	tmp := t.TempDir()
	for _, c := range []string{"init", "restore", "list", "compact"} {
		out := mustRun(t, c, "--help")
		if !strings.Contains(out, "Usage:") || !strings.Contains(out, c) {
			t.Errorf("%s --help: %s", c, out)
		}
	}
	mustFail(t, "does not exist", "list", "file://"+filepath.Join(tmp, "nope"))
	mustFail(t, "not a backup store", "list", "file://"+tmp)
	mustFail(t, "has no scheme", "list", tmp)
	mustFail(t, "accepts 1 arg", "list")
	os.WriteFile(filepath.Join(tmp, "junk"), []byte("x"), 0o644)
	mustFail(t, "is not empty and is not a backup store", "init", "file://"+tmp)
}
