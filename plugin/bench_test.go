package plugin_test

// Benchmarks of the real plugin executable, driven over its pipes by
// lightningdtest:
//
//   - BenchmarkHookRoundTrip: a db_write's round trip, from lightningd's
//     write of the request to its parse of the answer, on the real changes
//     of ../../shared/traces/long.jsonl (testdata/long-3000.jsonl when that
//     is absent), for the backup plugin (durable journal append) and, in the
//     same run, for a do-nothing plugin (the floor: pipes, JSON, scheduling),
//     and for the backup plugin on an encrypted store (opened with its key
//     file, as init --lightning-dir --encrypt sets it up).
//   - BenchmarkPluginMemory: the plugin's idle RSS, and its peak RSS while it
//     compacts a node whose database is 50 MB and 200 MB (bench/workload).
//
// Custom metrics: p50-µs, p99-µs, max-µs per hook (op = 1000 hooks);
// idle-RSS-MB, peak-RSS-MB, compact-s.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/internal/s3test"

	"github.com/clnbackup/backup/bench/workload"
	ld "github.com/clnbackup/backup/plugin/lightningdtest"
	"github.com/clnbackup/backup/replay"
)

// hooksPerOp is the number of db_writes one benchmark op sends.
const hooksPerOp = 1000

var (
	noopOnce sync.Once
	noopBin  string
	noopErr  error
)

// buildNoop builds the do-nothing plugin next to the backup plugin.
func buildNoop(b *testing.B) string {
	noopOnce.Do(func() {
		noopBin = filepath.Join(filepath.Dir(pluginBin), "noop-plugin")
		out, err := exec.Command("go", "build", "-o", noopBin, "github.com/clnbackup/backup/plugin/lightningdtest/noop").CombinedOutput()
		if err != nil {
			noopErr = fmt.Errorf("build the noop plugin: %v\n%s", err, out)
		}
	})
	if noopErr != nil {
		b.Fatal(noopErr)
	}
	return noopBin
}

var (
	traceOnce  sync.Once
	traceHooks []replay.TraceEntry
	traceName  string
	traceErr   error
)

// realHooks are the hooks of the long recorded trace.
func realHooks(b *testing.B) []replay.TraceEntry {
	traceOnce.Do(func() {
		traceName = "../../shared/traces/long.jsonl"
		if _, err := os.Stat(traceName); err != nil {
			traceName = "../testdata/long-3000.jsonl"
		}
		var e []replay.TraceEntry
		e, traceErr = replay.ReadTrace(traceName)
		traceHooks = ld.Hooks(e)
	})
	if traceErr != nil {
		b.Fatal(traceErr)
	}
	return traceHooks
}

// BenchmarkHookRoundTrip sends the trace's changes (their statements; the
// data_versions count up from 1, round after round) to each plugin: the
// do-nothing floor, the backup plugin on a local store, and on a store
// server on loopback (backup-cli server, a real process).
func BenchmarkHookRoundTrip(b *testing.B) {
	hooks := realHooks(b)
	cases := []struct{ name, bin string }{{"noop", buildNoop(b)}, {"backup", pluginBin}, {"backup-encrypted", pluginBin}, {"backup-server", pluginBin},
		{"backup-s3", pluginBin}, {"backup-server-journal-dir-s3", pluginBin}}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			dir := b.TempDir()
			switch bc.name {
			case "backup":
				dir = newNode(b, "").Dir
			case "backup-encrypted": // the same store, encrypted: the plugin opens it with its key file
				dir = newEncryptedNode(b).Dir
			case "backup-server": // the store on a store server on loopback
				srv, tokens := startStoreServer(b, "n1")
				dir = remoteNode(b, srv, "n1", tokens["n1"]).Dir
			case "backup-s3": // the store and the journal in a bucket of a versitygw on loopback
				s3srv := s3test.Start(b)
				dir = s3Node(b, s3srv, s3srv.URL("bench"), s3srv.CredentialsFile(b), "n1").Dir
			case "backup-server-journal-dir-s3": // a store server keeping journals on its disk, the rest in a bucket
				s3srv := s3test.Start(b)
				srv, tokens := startStoreServerAt(b, s3srv.URL("bench"), []string{"--s3-credentials", s3srv.CredentialsFile(b), "--journal-dir", b.TempDir()}, "n1")
				dir = remoteNode(b, srv, "n1", tokens["n1"]).Dir
			}
			l := ld.StartT(b, bc.bin, dir, true)
			var rtts []time.Duration
			var v uint32
			for b.Loop() {
				for range hooksPerOp {
					h := hooks[int(v)%len(hooks)]
					v++
					ok, rtt, err := l.DBWriteTimed(v, h.Writes)
					if err != nil || !ok {
						b.Fatalf("db_write %d: %v %v", v, ok, err)
					}
					rtts = append(rtts, rtt)
				}
			}
			p50, p99, worst := ld.Percentiles(rtts)
			b.ReportMetric(float64(p50.Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(p99.Nanoseconds())/1e3, "p99-µs")
			b.ReportMetric(float64(worst.Nanoseconds())/1e3, "max-µs")
			b.Logf("%s: %d hooks of %s: p50 %v p99 %v max %v", bc.name, len(rtts), traceName, p50, p99, worst)
		})
	}
}

// BenchmarkPluginMemory measures the plugin's resident memory: idle after
// start-up and 100 writes, and at its peak (VmHWM) while compacting a node
// whose database bench/workload filled to 50 and 200 MB, after changes
// touching 1% of its pages. Each op is one such round (writes, compaction).
func BenchmarkPluginMemory(b *testing.B) {
	if testing.Short() {
		b.Skip("builds databases of up to 200 MB")
	}
	for _, size := range []int64{50 << 20, 200 << 20} {
		b.Run(fmt.Sprintf("db=%dMB", size>>20), func(b *testing.B) {
			root := b.TempDir()
			lightning := filepath.Join(root, "lightning")
			if err := os.Mkdir(lightning, 0o700); err != nil {
				b.Fatal(err)
			}
			// A scratch copy of lightningd's database, kept at the state
			// the generator produced, for TouchPages.
			db := filepath.Join(root, "scratch.sqlite3")
			g := workload.New(workload.Config{Seed: 7, TargetBytes: size, UpdateFrac: 0.002, InsertFrac: 0.002})
			start := time.Now()
			if err := workload.Build(db, g.Populate); err != nil {
				b.Fatal(err)
			}
			if err := copyFile(db, filepath.Join(lightning, "lightningd.sqlite3")); err != nil {
				b.Fatal(err)
			}
			n, err := ld.SetupNode(ctx, lightning, filepath.Join(root, "store"), "default")
			if err != nil {
				b.Fatal(err)
			}
			fi, _ := os.Stat(db)
			b.Logf("database of %d MB at data_version %d, backed up in %v", fi.Size()>>20, g.Version(), time.Since(start).Round(time.Millisecond))
			l := ld.StartT(b, pluginBin, n.Dir, true)
			// feed sends the hooks a generator step produces, and applies
			// them to the scratch database.
			feed := func(step func(fn func(workload.Hook) error) error) {
				var hs []workload.Hook
				if err := step(func(h workload.Hook) error {
					if ok, err := l.DBWrite(h.Version, h.Statements); err != nil || !ok {
						return fmt.Errorf("db_write %d: %v %v", h.Version, ok, err)
					}
					hs = append(hs, h)
					return nil
				}); err != nil {
					b.Fatal(err)
				}
				if err := workload.Build(db, workload.Hooks(hs...)); err != nil {
					b.Fatal(err)
				}
			}
			for range 100 {
				feed(g.Block)
			}
			idle, err := l.Memory()
			if err != nil {
				b.Fatal(err)
			}
			var took float64
			var during []time.Duration // round trips of writes during compactions
			for b.Loop() {
				feed(func(fn func(workload.Hook) error) error { return g.TouchPages(db, 0.01, fn) })
				feed(g.Step)
				feed(g.Block) // the newest change is never sealed: one more
				if a, err := l.Compact(); err != nil || a != ld.CompactStarted {
					b.Fatalf("backup-compact: %q %v", a, err)
				}
				// lightningd goes on writing while the plugin compacts.
				var hs []workload.Hook
				for running := true; running; {
					for range 20 {
						g.Block(func(h workload.Hook) error {
							ok, rtt, err := l.DBWriteTimed(h.Version, h.Statements)
							if err != nil || !ok {
								b.Fatalf("db_write %d during compaction: %v %v", h.Version, ok, err)
							}
							during, hs = append(during, rtt), append(hs, h)
							return nil
						})
					}
					if running, _, err = l.CompactionState(); err != nil {
						b.Fatal(err)
					}
				}
				if err := workload.Build(db, workload.Hooks(hs...)); err != nil {
					b.Fatal(err)
				}
				last, err := l.CompactionIdle(time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				if last["error"] != nil {
					b.Fatalf("compaction failed: %v", last)
				}
				took, _ = last["duration_seconds"].(float64)
			}
			mem, err := l.Memory()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(idle.RSS)/(1<<20), "idle-RSS-MB")
			b.ReportMetric(float64(mem.Peak)/(1<<20), "peak-RSS-MB")
			b.ReportMetric(took, "compact-s")
			p50, p99, worst := ld.Percentiles(during)
			b.ReportMetric(float64(p99.Nanoseconds())/1e3, "compacting-p99-µs")
			b.Logf("idle RSS %.1f MB, peak RSS %.1f MB (RSS now %.1f MB); last compaction %.2fs; %d writes during compactions: p50 %v p99 %v max %v",
				float64(idle.RSS)/(1<<20), float64(mem.Peak)/(1<<20), float64(mem.RSS)/(1<<20), took, len(during), p50, p99, worst)
		})
	}
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o600)
}
