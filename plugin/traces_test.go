package plugin

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

func testdata(name string) string { return filepath.Join("..", "testdata", name) }

func readTrace(t testing.TB, name string) []replay.TraceEntry {
	t.Helper()
	entries, err := replay.ReadTrace(testdata(name))
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// writeDB applies statements, one transaction each, to a new database.
func writeDB(t testing.TB, path string, stmts ...string) {
	t.Helper()
	db, err := replay.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range stmts {
		if err := db.Apply(journal.Record{Version: uint32(i + 1), Statements: []string{s}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

type playOpts struct {
	cfg         Config
	initOptions map[string]any
	// beforeHook, if set, runs before the hook with this index (0-based,
	// over the whole trace).
	beforeHook func(r *pipeRun, hook int)
	// settle waits for a running compaction to finish before each run
	// ends (the plugin stops a compaction when lightningd exits).
	settle bool
}

// waitIdle waits until backup-status shows no compaction running.
func waitIdle(t testing.TB, r *pipeRun) {
	t.Helper()
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := r.call("backup-status", []any{}); strings.Contains(string(m.Result), `"compaction":{"state":"idle"`) {
			return
		}
	}
	t.Fatal("compaction still running")
}

// playTrace plays a recorded trace as lightningd did: a new plugin process
// (a new Run on the same directory) for every lightningd process, hooks
// before and after init where they came. Every hook must be acknowledged.
// It returns the runs, stopped.
func playTrace(t *testing.T, dir string, entries []replay.TraceEntry, o playOpts) []*pipeRun {
	t.Helper()
	var runs []*pipeRun
	var r *pipeRun
	pid, hook, inited := -1, 0, false
	for _, e := range entries {
		if e.PID != pid {
			if r != nil && o.settle && inited {
				waitIdle(t, r)
			}
			inited = false
			if r != nil {
				if st := r.stop(); st != 0 {
					t.Fatalf("run for pid %d: exit status %d", pid, st)
				}
			}
			r = startRun(t, dir, o.cfg)
			runs = append(runs, r)
			pid = e.PID
		}
		switch e.Event {
		case "getmanifest":
			r.call("getmanifest", map[string]any{"allow-deprecated-apis": false})
		case "init":
			r.init(o.initOptions)
			inited = true
		case "":
			if o.beforeHook != nil {
				o.beforeHook(r, hook)
			}
			r.mustContinue(e.Version, e.Writes...)
			hook++
		}
	}
	if o.settle && inited {
		waitIdle(t, r)
	}
	if st := r.stop(); st != 0 {
		t.Fatalf("last run: exit status %d", st)
	}
	return runs
}

// TestInProcessTrace1 replays a fresh node's real history (two lightningd runs)
// through the plugin; the restored database equals the node's own.
func TestInProcessTrace1(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "default", "")
	runs := playTrace(t, dir, readTrace(t, "trace1.jsonl"), playOpts{})
	if len(runs) != 2 {
		t.Fatalf("%d runs, want 2", len(runs))
	}
	for i, r := range runs {
		if n := len(r.logsWith("Versions match up")); n != 1 {
			t.Errorf("run %d: %d \"Versions match up\" lines; logs:\n%s", i, n, r.allLogs())
		}
		if n := len(r.logsWith("Last changes not applied")); n != 0 {
			t.Errorf("run %d: unexpected rewind; logs:\n%s", i, r.allLogs())
		}
	}
	restoreNewest(t, url, "default", testdata("trace1-final.sqlite3"))
}

// TestInProcessCrash3: lightningd was killed between the hook for data_version 508
// and its commit, and re-sent 508, before init, with other statements. The
// plugin replaces the uncommitted change: the restore equals the node's own
// database (the Python plugin keeps the uncommitted change).
func TestInProcessCrash3(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "default", "")
	runs := playTrace(t, dir, readTrace(t, "crash3.jsonl"), playOpts{})
	if len(runs) != 2 {
		t.Fatalf("%d runs, want 2", len(runs))
	}
	if l := runs[1].logsWith("Last changes not applied, replacing data_version 508"); len(l) != 1 || l[0].Level != levelInfo {
		t.Errorf("second run: want the rewind logged once; logs:\n%s", runs[1].allLogs())
	}
	if n := len(runs[1].logsWith("Versions match up")); n != 0 {
		t.Errorf("second run began with a rewind, not a match; logs:\n%s", runs[1].allLogs())
	}
	restoreNewest(t, url, "default", testdata("crash3-final.sqlite3"))
}

// TestAutoCompaction replays trace1 with each automatic trigger set low:
// compactions run during the writes, and every restore point restores.
func TestAutoCompaction(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts map[string]any
	}{
		{"changes", map[string]any{optCompactChanges: 40, optCompactBytes: 0, optCompactEvery: "0"}},
		{"bytes as a string", map[string]any{optCompactChanges: 0, optCompactBytes: "30000", optCompactEvery: "0"}},
		{"interval", map[string]any{optCompactChanges: 0, optCompactBytes: 0, optCompactEvery: "1ms"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, url := newLightningDir(t, "default", "")
			runs := playTrace(t, dir, readTrace(t, "trace1.jsonl"), playOpts{initOptions: tc.opts, settle: true})
			done := 0
			for _, r := range runs {
				done += len(r.logsWith("Compaction done: manifest"))
				if l := r.logsWith("Compaction failed"); len(l) > 0 {
					t.Errorf("%v", l)
				}
				if len(r.logsWith("Option ")) > 0 {
					t.Errorf("option warnings:\n%s", r.allLogs())
				}
			}
			if done < 2 {
				t.Fatalf("%d automatic compactions; logs:\n%s%s", done, runs[0].allLogs(), runs[1].allLogs())
			}
			restoreNewest(t, url, "default", testdata("trace1-final.sqlite3"))
			checkEveryManifest(t, url, "default", readTrace(t, "trace1.jsonl"))
		})
	}
}

// checkEveryManifest restores each restore point alone and compares it with
// the trace applied up to its data_version (the trace has no rewinds).
func checkEveryManifest(t *testing.T, url, node string, entries []replay.TraceEntry) {
	t.Helper()
	st, err := store.Open(bg, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	seqs, err := st.ManifestSeqs(bg, node)
	if err != nil {
		t.Fatal(err)
	}
	recs := replay.Records(entries)
	for _, seq := range seqs {
		dest := filepath.Join(t.TempDir(), "m.sqlite3")
		res, err := history.Restore(bg, st, history.RestoreOptions{Node: node, Manifest: seq, Dest: dest})
		if err != nil {
			t.Fatalf("restore manifest %d: %v", seq, err)
		}
		want := filepath.Join(t.TempDir(), "want.sqlite3")
		db, err := replay.Open(want)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Version > res.Version {
				break
			}
			if err := db.Apply(r); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()
		if diff, err := replay.Diff(dest, want); err != nil || len(diff) > 0 {
			t.Fatalf("manifest %d (data_version %d) differs: %v %v", seq, res.Version, err, diff)
		}
	}
}
