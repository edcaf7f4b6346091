package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/clnbackup/backup/replay"
)

// binDir holds the binaries the tests build: backup-cli for the tests that
// need a real process (exit status, signals, environment), trace-player to
// record histories.
var binDir string

func TestMain(m *testing.M) {
	if db := os.Getenv(hotWriterEnv); db != "" {
		hotWriter(db) // the test binary re-executed as a writer to SIGKILL
		return
	}
	dir, err := os.MkdirTemp("", "backup-cli-test")
	if err != nil {
		panic(err)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// builtBin is a command of this module built once per test binary, when
// the first test that needs it asks: tests that run commands in process
// never wait for a build.
type builtBin struct {
	name, pkg string
	once      sync.Once
	path      string
	err       error
}

var (
	cliBin    = &builtBin{name: "backup-cli", pkg: "."}
	playerBin = &builtBin{name: "trace-player", pkg: "../trace-player"}
)

// get builds the command (once) and returns its path.
func (b *builtBin) get(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		b.path = filepath.Join(binDir, b.name)
		if out, err := exec.Command("go", "build", "-o", b.path, b.pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("build %s: %w\n%s", b.pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// runCLI runs backup-cli in this process: a fresh command tree with args,
// its output and error output captured, and the test's context (cancelled
// when the test ends). err is what main would print and exit 1 for.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	// Never the test's own stdin: it may be a terminal, where commands
	// would ask for passphrases.
	return runCLIIn(t, strings.NewReader(""), args...)
}

// runCLIIn is runCLI with in as the command's input (a terminal, for the
// tests of passphrase prompts).
func runCLIIn(t *testing.T, in io.Reader, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetArgs(append([]string{}, args...)) // never nil: cobra would read os.Args
	root.SetIn(in)
	root.SetOut(&out)
	root.SetErr(&errb)
	err = root.ExecuteContext(t.Context())
	return out.String(), errb.String(), err
}

// run runs backup-cli in process and returns what the binary prints on
// stdout and stderr (main adds the error line) and whether it exits 0.
func run(t *testing.T, args ...string) (string, string, bool) {
	t.Helper()
	out, errOut, err := runCLI(t, args...)
	if err != nil {
		errOut += "backup-cli: " + err.Error() + "\n"
	}
	return out, errOut, err == nil
}

// runBinary runs the built backup-cli binary with extra environment
// variables and returns its stdout, stderr and exit status.
func runBinary(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(cliBin.get(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run backup-cli %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// mustRun runs backup-cli in process, fails the test unless it succeeds,
// and returns its stdout.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, ok := run(t, args...)
	if !ok {
		t.Fatalf("backup-cli %s failed:\n%s%s", strings.Join(args, " "), out, errOut)
	}
	return out
}

// mustFail runs backup-cli in process and fails the test unless it fails
// with want in what it prints on stderr.
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

// applyTrace records a trace into node "default" of the store with
// trace-player, compacting every 100 hooks.
func applyTrace(t *testing.T, url, trace string) {
	t.Helper()
	if out, err := exec.Command(playerBin.get(t), "apply", "--compact-every", "100", url, trace).CombinedOutput(); err != nil {
		t.Fatalf("trace-player: %v\n%s", err, out)
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
	t.Parallel()
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
	t.Parallel()
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
	t.Parallel()
	tmp := t.TempDir()
	url := "file://" + filepath.Join(tmp, "store")
	ldir := filepath.Join(tmp, "lightning")
	os.Mkdir(ldir, 0o755)
	mustRun(t, "init", "--lightning-dir", ldir, url)
	applyTrace(t, url, testdata+"trace1.jsonl")
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
	t.Parallel()
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

// TestBinary checks what only the real process shows: main's exit status
// and its one error line on stderr, and that the binary prints byte for
// byte what the commands print in process.
func TestBinary(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	url := "file://" + filepath.Join(tmp, "store")
	mustRun(t, "init", "--node", "alice", url)
	for _, args := range [][]string{{"--help"}, {"list", url}, {"list", "--json", url}, {"verify", url}} {
		out, errOut, st := runBinary(t, nil, args...)
		inOut, inErr, ok := run(t, args...)
		if st != 0 || !ok {
			t.Fatalf("backup-cli %s: exit status %d, in process ok=%v\n%s%s", strings.Join(args, " "), st, ok, errOut, inErr)
		}
		if out != inOut || errOut != inErr {
			t.Errorf("backup-cli %s: the binary printed\n%q\n%q\nin process\n%q\n%q", strings.Join(args, " "), out, errOut, inOut, inErr)
		}
	}
	missing := "file://" + filepath.Join(tmp, "nope")
	out, errOut, st := runBinary(t, nil, "list", missing)
	_, _, err := runCLI(t, "list", missing)
	if err == nil {
		t.Fatal("list of a missing store succeeded in process")
	}
	if st != 1 || out != "" || errOut != "backup-cli: "+err.Error()+"\n" {
		t.Fatalf("list of a missing store: exit status %d, stdout %q, stderr %q; want 1, nothing, %q", st, out, errOut, "backup-cli: "+err.Error()+"\n")
	}
}

// TestVersion: --version and the version command print the same
// non-empty line naming the module, in process and from the built binary
// (whose build information is the real one), and version --json the
// same fields.
func TestVersion(t *testing.T) {
	t.Parallel()
	const module = "github.com/clnbackup/backup"
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"flag", []string{"--version"}},
		{"command", []string{"version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := mustRun(t, tc.args...)
			if !strings.HasPrefix(out, "backup-cli ") || !strings.Contains(out, module) || strings.Count(out, "\n") != 1 {
				t.Errorf("backup-cli %s printed %q, want one line naming %s", tc.args[0], out, module)
			}
			bin, errOut, st := runBinary(t, nil, tc.args...)
			if st != 0 || errOut != "" || !strings.HasPrefix(bin, "backup-cli "+module+" ") {
				t.Errorf("binary backup-cli %s: exit status %d, stdout %q, stderr %q", tc.args[0], st, bin, errOut)
			}
		})
	}
	var info struct{ Module, Version, Go string }
	if err := json.Unmarshal([]byte(mustRun(t, "version", "--json")), &info); err != nil {
		t.Fatalf("version --json: %v", err)
	}
	if !strings.Contains(info.Module, module) || info.Version == "" || info.Go == "" {
		t.Errorf("version --json: %+v", info)
	}
	if flag, cmd := mustRun(t, "--version"), mustRun(t, "version"); flag != cmd {
		t.Errorf("--version printed %q, version %q", flag, cmd)
	}
}
