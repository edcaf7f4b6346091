package plugin_test

// End-to-end tests: the real backup-plugin executable, driven over its pipes
// by lightningdtest as lightningd drives it, writing a real store; every
// check restores the store and compares the database with what lightningd
// committed, table by table.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ld "github.com/clnbackup/backup/plugin/lightningdtest"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "backup-plugin-e2e")
	if err != nil {
		panic(err)
	}
	pluginBin = filepath.Join(dir, "backup-plugin")
	args := []string{"build", "-o", pluginBin}
	if os.Getenv("E2E_PLUGIN_RACE") == "1" {
		args = append(args, "-race") // the plugin's own goroutines, under the race detector
	}
	out, err := exec.Command("go", append(args, "github.com/clnbackup/backup/cmd/backup-plugin")...).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build backup-plugin: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var ctx = context.Background()

func newNode(t testing.TB, storeDir string) *ld.Node {
	t.Helper()
	root := t.TempDir()
	if storeDir == "" {
		storeDir = filepath.Join(root, "store")
	}
	n, err := ld.SetupNode(ctx, filepath.Join(root, "lightning"), storeDir, "default")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// newEncryptedNode is newNode for a new encrypted store, which the plugin
// opens with the key file backup.lock names.
func newEncryptedNode(t testing.TB) *ld.Node {
	t.Helper()
	root := t.TempDir()
	n, err := ld.SetupNodeEncrypted(ctx, filepath.Join(root, "lightning"), filepath.Join(root, "store"), "default", store.Encryption{Passphrase: []byte("correct horse battery staple")})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func start(t testing.TB, dir string) *ld.Lightningd { return ld.StartT(t, pluginBin, dir, false) }

func startInit(t testing.TB, dir string) *ld.Lightningd { return ld.StartT(t, pluginBin, dir, true) }

func newModel(t testing.TB) *ld.Model {
	t.Helper()
	m, err := ld.NewModel(filepath.Join(t.TempDir(), "model.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// write sends a change that must be answered "continue", then counts it as
// committed by lightningd.
func write(t testing.TB, l *ld.Lightningd, m *ld.Model, r journal.Record) {
	t.Helper()
	ok, err := l.DBWrite(r.Version, r.Statements)
	if err != nil || !ok {
		t.Fatalf("db_write data_version %d: continued=%v err=%v; plugin log: %v", r.Version, ok, err, tail(l.Logs()))
	}
	if m != nil {
		if err := m.Commit(r); err != nil {
			t.Fatal(err)
		}
	}
}

// writeHooks sends recorded hooks as lightningd did (init before the first
// hook it sent after init), each answered "continue" and counted in m (if
// not nil), and calls after(i) after hook i.
func writeHooks(t testing.TB, l *ld.Lightningd, m *ld.Model, hooks []replay.TraceEntry, after func(i int)) {
	t.Helper()
	inited := false
	for i, h := range hooks {
		if !h.BeforeInit && !inited {
			if err := l.Init(nil); err != nil {
				t.Fatal(err)
			}
			inited = true
		}
		write(t, l, m, ld.Record(h))
		after(i)
	}
}

// refused sends a change that must be refused, with the reason in the log.
func refused(t testing.TB, l *ld.Lightningd, r journal.Record, logWant string) {
	t.Helper()
	ok, err := l.DBWrite(r.Version, r.Statements)
	if err != nil || ok {
		t.Fatalf("db_write data_version %d: continued=%v err=%v, want a refusal", r.Version, ok, err)
	}
	if _, found := l.WaitLog(func(ll ld.LogLine) bool {
		return (ll.Level == "error" || ll.Level == "warn") && strings.Contains(strings.ToLower(ll.Message), strings.ToLower(logWant))
	}, 5*time.Second); !found {
		t.Fatalf("no warn/error log line containing %q; log: %v", logWant, l.Logs())
	}
}

func tail(ls []ld.LogLine) []ld.LogLine {
	return ls[max(len(ls)-5, 0):]
}

func compact(t testing.TB, l *ld.Lightningd) string {
	t.Helper()
	a, err := l.Compact()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func compactionIdle(t testing.TB, l *ld.Lightningd) map[string]any {
	t.Helper()
	last, err := l.CompactionIdle(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return last
}

func mustRestoreMatch(t testing.TB, n *ld.Node, m *ld.Model, what string) {
	t.Helper()
	if err := n.Matches(m, 0); err != nil {
		t.Fatalf("%s: restore does not hold what lightningd committed (data_version %d): %v", what, m.Version(), err)
	}
}

func readTrace(t testing.TB, name string) []replay.TraceEntry {
	t.Helper()
	e, err := replay.ReadTrace(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// seed is E2E_SEED if set, else the clock; tests log it to be repeatable.
func seed(t testing.TB) uint64 {
	if s := os.Getenv("E2E_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

func restoredEquals(t *testing.T, n *ld.Node, final string) {
	t.Helper()
	if err := n.MatchesFile(final); err != nil {
		t.Fatal(err)
	}
}

func TestManifest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l := start(t, dir)
	res, err := l.GetManifest()
	if err != nil {
		t.Fatal(err)
	}
	if !res.HasHook("db_write") || res.Dynamic || !res.NonNumericIDs {
		t.Errorf("manifest: db_write hook, dynamic false and nonnumericids true expected: %s", res.Raw)
	}
	for _, name := range []string{"backup-compact", "backup-status"} {
		if _, ok := res.Method(name); !ok {
			t.Errorf("manifest lacks rpc method %s: %s", name, res.Raw)
		}
	}
	if !slices.ContainsFunc(res.Options, func(o ld.ManifestOption) bool { return o.Name == "backup-destination" }) {
		t.Errorf("manifest lacks the deprecated option backup-destination: %s", res.Raw)
	}
	// getmanifest may be only for --help: no file may be touched.
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Errorf("getmanifest created files in the lightning directory: %v", ents)
	}
}

// TestTrace1 plays the recorded trace1 (writes before init, string ids, a
// clean restart, split and joined writes) through the plugin.
func TestTrace1(t *testing.T) {
	t.Parallel()
	n := newNode(t, "")
	s := seed(t)
	t.Logf("seed %d", s)
	res, err := ld.Play(ctx, pluginBin, n.Dir, readTrace(t, "trace1.jsonl"), ld.PlayOptions{
		Start: ld.Options{Logf: t.Logf}, Seed: s,
		InitOptions: map[string]any{"backup-destination": "file:///var/old/backup.dbak"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d hooks, %d before init, %d plugin runs, %d split, %d joined; round trip p50 %v p99 %v max %v",
		res.Hooks, res.BeforeInit, res.Runs, res.Split, res.Joined, res.P50, res.P99, res.Max)
	if res.Hooks != 387 || res.BeforeInit != 12 || res.Runs != 2 {
		t.Fatalf("played %+v", res)
	}
	restoredEquals(t, n, "../testdata/trace1-final.sqlite3")
	has := func(level string, subs ...string) bool {
		return slices.ContainsFunc(res.Logs, func(l ld.LogLine) bool {
			for _, s := range subs {
				if !strings.Contains(l.Message, s) {
					return false
				}
			}
			return level == "" || l.Level == level
		})
	}
	if !has("info", n.StoreDir, `"default"`) {
		t.Errorf("no start-up log line naming the store and the node: %v", res.Logs)
	}
	if !has("warn", "backup-destination") {
		t.Errorf("the deprecated option backup-destination was not warned about: %v", res.Logs)
	}
}

// TestTrace1Encrypted plays trace1 into an encrypted store, compacting
// along the way, the plugin opening it with the key file backup.lock
// names: the store restores to lightningd's final database.
func TestTrace1Encrypted(t *testing.T) {
	t.Parallel()
	n := newEncryptedNode(t)
	res, err := ld.Play(ctx, pluginBin, n.Dir, readTrace(t, "trace1.jsonl"), ld.PlayOptions{
		Start: ld.Options{Logf: t.Logf}, Seed: seed(t), CompactEvery: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Hooks != 387 {
		t.Fatalf("played %+v", res)
	}
	restoredEquals(t, n, "../testdata/trace1-final.sqlite3")
}

// TestCrash3 plays crash3 as it happened: lightningd was killed after the
// hook for data_version 508 and re-sent 508, before init, with other
// statements. The restore must not contain the uncommitted change.
func TestCrash3(t *testing.T) {
	t.Parallel()
	for _, every := range []int{0, 50} {
		t.Run(fmt.Sprintf("compact-every=%d", every), func(t *testing.T) {
			t.Parallel()
			n := newNode(t, "")
			res, err := ld.Play(ctx, pluginBin, n.Dir, readTrace(t, "crash3.jsonl"), ld.PlayOptions{
				Start: ld.Options{Logf: t.Logf}, Seed: 3, CompactEvery: every,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Hooks != 614 || res.Rewinds != 1 || res.Runs != 2 {
				t.Fatalf("played %+v", res)
			}
			restoredEquals(t, n, "../testdata/crash3-final.sqlite3")
		})
	}
}

// TestExistingNode backs up a node that already has a database: backup-cli
// init snapshots it, the plugin continues from its data_version.
func TestExistingNode(t *testing.T) {
	t.Parallel()
	hooks := ld.Hooks(readTrace(t, "trace1.jsonl"))
	m := newModel(t)
	for _, h := range hooks[:150] {
		if err := m.Commit(ld.Record(h)); err != nil {
			t.Fatal(err)
		}
	}
	root := t.TempDir()
	dir := filepath.Join(root, "lightning")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := m.Snapshot(filepath.Join(dir, "lightningd.sqlite3")); err != nil {
		t.Fatal(err)
	}
	n, err := ld.SetupNode(ctx, dir, filepath.Join(root, "store"), "alice")
	if err != nil {
		t.Fatal(err)
	}
	l := startInit(t, n.Dir)
	for _, h := range hooks[150:] {
		write(t, l, nil, ld.Record(h))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	restoredEquals(t, n, "../testdata/trace1-final.sqlite3")
}

// TestLargeHook sends a change larger than a journal segment (8 MiB): it
// spans many reads of the plugin's stdin and gets a segment of its own.
func TestLargeHook(t *testing.T) {
	t.Parallel()
	n, m := newNode(t, ""), newModel(t)
	l := startInit(t, n.Dir)
	for v := uint32(1); v <= 6; v++ {
		write(t, l, m, ld.Change(v, map[bool]int{true: 12 << 20}[v == 3]))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	mustRestoreMatch(t, n, m, "after a 12 MiB change")
}

// TestKillRestart kills the plugin with SIGKILL at 24 random points of a
// long replay (ld.CrashReplay): idle, with a db_write in flight (at once or
// after a random delay), during a compaction, after an answer that
// lightningd then never committed, or with a write durable whose answer is
// stuck in a full stdout pipe. After each kill the restore must hold exactly
// what lightningd committed (plus the write in flight if it was durable);
// the restarted plugin gets the change lightningd re-sends (the same
// statements or others, before or after init, sometimes crashing again), and
// then the restore must hold that change.
// Serial: a long stress of the real plugin (kills at timed points, a
// restore after each); beside other tests on two cores it starves them.
func TestKillRestart(t *testing.T) {
	s := seed(t)
	t.Logf("seed %d (E2E_SEED=%d repeats this run)", s, s)
	hooks := ld.Hooks(readTrace(t, "long-3000.jsonl"))
	if testing.Short() {
		hooks = hooks[:1200]
	}
	stats := ld.CrashReplay(t, pluginBin, newNode(t, ""), newModel(t), hooks, 24, s)
	t.Logf("%d hooks, 24 kills: %v", len(hooks), stats)
}

// TestCompactionsThroughout writes 2,100 real changes with backup-compact
// called every 150 (waiting for every other compaction, writing on during
// the others); then every restore point must restore exactly the database
// lightningd had at its data_version.
func TestCompactionsThroughout(t *testing.T) {
	t.Parallel()
	all := ld.Hooks(readTrace(t, "long-3000.jsonl"))
	hooks, more := all[:2100], all[2100:2110]
	n := newNode(t, "")
	l := start(t, n.Dir)
	answers := map[string]int{}
	writeHooks(t, l, nil, hooks, func(i int) {
		if i%150 == 149 {
			answers[compact(t, l)]++
			if i%300 == 299 {
				if last := compactionIdle(t, l); last != nil && last["error"] != nil {
					t.Fatalf("compaction failed: %v", last)
				}
			}
		}
	})
	compactionIdle(t, l)
	answers["at the end: "+compact(t, l)]++
	compactionIdle(t, l)
	// lightningd stops while a compaction runs: the plugin exits cleanly.
	for _, h := range more {
		write(t, l, nil, ld.Record(h))
	}
	answers["before the stop: "+compact(t, l)]++
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	hooks = append(hooks, more...)
	sum, err := n.Summary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup-compact answers %v; %d restore points", answers, len(sum.Manifests))
	if answers["compaction started"] < 7 || len(sum.Manifests) < 15 {
		t.Fatalf("too few compactions: answers %v, %d restore points", answers, len(sum.Manifests))
	}
	m := newModel(t)
	next := 0
	for _, ms := range sum.Manifests {
		for ; next < len(hooks) && hooks[next].Version <= ms.Version; next++ {
			if err := m.Commit(ld.Record(hooks[next])); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.Matches(m, ms.Seq); err != nil {
			t.Fatalf("restore point %d (data_version %d, snapshot at %d): %v", ms.Seq, ms.Version, ms.SnapshotVersion, err)
		}
	}
	for ; next < len(hooks); next++ {
		if err := m.Commit(ld.Record(hooks[next])); err != nil {
			t.Fatal(err)
		}
	}
	mustRestoreMatch(t, n, m, "newest state")
}

// TestRefusals: every situation in which the backup and lightningd's
// database could drift apart stops lightningd at a db_write (refused,
// reason logged) and leaves what was acknowledged restorable.
func TestRefusals(t *testing.T) {
	t.Parallel()
	t.Run("gap", func(t *testing.T) {
		t.Parallel()
		n, m := newNode(t, ""), newModel(t)
		l := startInit(t, n.Dir)
		for v := uint32(1); v <= 5; v++ {
			write(t, l, m, ld.Change(v, 0))
		}
		refused(t, l, ld.Change(7, 0), "writes were lost")
		if st, err := l.Call("backup-status", nil); err != nil || !strings.Contains(string(st), `"refusing writes"`) {
			t.Errorf("backup-status after a refusal: %s %v", st, err)
		}
		l.Close()
		mustRestoreMatch(t, n, m, "after the gap")
		// lightningd exited without committing 7; it continues at 6.
		write(t, startInit(t, n.Dir), m, ld.Change(6, 0))
		mustRestoreMatch(t, n, m, "after 6")
	})
	t.Run("regress", func(t *testing.T) {
		t.Parallel()
		n, m := newNode(t, ""), newModel(t)
		l := startInit(t, n.Dir)
		for v := uint32(1); v <= 5; v++ {
			write(t, l, m, ld.Change(v, 0))
		}
		refused(t, l, ld.Change(3, 0), "older than the backup")
		l.Close()
		refused(t, start(t, n.Dir), ld.Change(4, 0), "older than the backup") // after a restart, before init
		mustRestoreMatch(t, n, m, "after the regressions")
	})
	t.Run("no backup.lock", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		l := start(t, dir)
		refused(t, l, ld.Change(1, 0), "Could not find backup.lock in the lightning-dir")
		if err := l.Init(nil); err != nil && !errors.Is(err, ld.ErrDisabled) {
			t.Fatal(err)
		}
		refused(t, l, ld.Change(1, 0), "Could not find backup.lock in the lightning-dir")
		if ents, _ := os.ReadDir(dir); len(ents) > 0 {
			t.Fatalf("the plugin created %v in the lightning directory", ents)
		}
	})
	breakStore := map[string]func(*ld.Node) error{
		"store removed": func(n *ld.Node) error { return os.RemoveAll(n.StoreDir) },
		"store config unreadable": func(n *ld.Node) error {
			return os.WriteFile(filepath.Join(n.StoreDir, "config"), []byte("\x00garbage"), 0o600)
		},
		"backup.lock unreadable": func(n *ld.Node) error {
			return os.WriteFile(filepath.Join(n.Dir, "backup.lock"), []byte("{not json"), 0o600)
		},
		"node not in store": func(n *ld.Node) error {
			return os.WriteFile(filepath.Join(n.Dir, "backup.lock"), []byte(`{"backend_url": "`+n.URL+`", "node": "other"}`), 0o600)
		},
	}
	if probe := filepath.Join(t.TempDir(), "probe"); os.WriteFile(probe, nil, 0) == nil {
		if _, err := os.ReadFile(probe); err != nil { // not root: mode 000 makes a file unreadable
			breakStore["store config not readable"] = func(n *ld.Node) error { return os.Chmod(filepath.Join(n.StoreDir, "config"), 0) }
		}
	}
	for name, breakIt := range breakStore {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			n := newNode(t, "")
			if err := breakIt(n); err != nil {
				t.Fatal(err)
			}
			before := listTree(t, n.StoreDir)
			l := start(t, n.Dir)
			refused(t, l, ld.Change(1, 0), "refusing")
			if err := l.Init(nil); err != nil && !errors.Is(err, ld.ErrDisabled) {
				t.Fatal(err)
			}
			if _, err := l.Call("backup-status", nil); err == nil {
				t.Errorf("backup-status succeeded without a backup")
			}
			l.Close()
			if after := listTree(t, n.StoreDir); !slices.Equal(before, after) {
				t.Fatalf("the plugin changed the store it refused:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
	t.Run("node in use", func(t *testing.T) {
		t.Parallel()
		n, m := newNode(t, ""), newModel(t)
		a := startInit(t, n.Dir)
		write(t, a, m, ld.Change(1, 0))
		// lightningd restarting: the new plugin waits for the old one to go.
		b := start(t, n.Dir)
		p, err := b.Send("db_write", ld.DBWriteParams{DataVersion: 2, Writes: ld.Change(2, 0).Statements})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if ok, err := p.Continued(); !ok || err != nil {
			t.Fatalf("the write to the new plugin after the old one exited: %v %v", ok, err)
		}
		m.Commit(ld.Change(2, 0))
		// A second lightningd on the same node is refused.
		refused(t, start(t, n.Dir), ld.Change(3, 0), "another")
		write(t, b, m, ld.Change(3, 0))
		mustRestoreMatch(t, n, m, "after the second plugin was refused")
	})
}

// listTree lists the files under dir with their sizes.
func listTree(t testing.TB, dir string) []string {
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			out = append(out, fmt.Sprintf("%s %d", p, fi.Size()))
		}
		return nil
	})
	return out
}

// TestDiskFull puts the store on a small tmpfs, fills it, and writes until
// the journal needs a new segment: that write is refused, what was
// acknowledged restores, and once space is freed a restarted plugin takes
// the write lightningd re-sends and more.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	mnt := mountTmpfs(t, "24m")
	n, m := newNode(t, filepath.Join(mnt, "store")), newModel(t)
	l := startInit(t, n.Dir)
	write(t, l, m, ld.Change(1, 0))
	write(t, l, m, ld.Change(2, 0))
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for buf := make([]byte, 64<<10); err == nil; {
		_, err = f.Write(buf)
	}
	f.Close()
	// The file system is full. A compaction fails, the preallocated
	// journal segment still takes changes.
	t.Logf("backup-compact on a full disk: %s", compact(t, l))
	t.Logf("last compaction: %v", compactionIdle(t, l))
	v := uint32(3)
	for ; ; v++ {
		r := ld.Change(v, 400<<10)
		ok, err := l.DBWrite(r.Version, r.Statements)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if err := m.Commit(r); err != nil {
			t.Fatal(err)
		}
		if v > 60 {
			t.Fatal("the journal never ran out of space")
		}
	}
	t.Logf("data_version %d refused on a full disk", v)
	if _, ok := l.WaitLog(func(ll ld.LogLine) bool { return strings.Contains(ll.Message, "no space left") }, 5*time.Second); !ok {
		t.Errorf("the refusal does not say the disk is full: %v", tail(l.Logs()))
	}
	l.Close()
	mustRestoreMatch(t, n, m, "after the refusal")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	l = startInit(t, n.Dir)
	for end := v + 20; v < end; v++ {
		write(t, l, m, ld.Change(v, 400<<10))
	}
	l.Close()
	mustRestoreMatch(t, n, m, "after space was freed")
}
