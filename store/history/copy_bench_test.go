package history_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
)

// BenchmarkCopy50MB copies a node's history (a 50 MB database, three
// compactions after 1% of its pages changed, a journal tail) from one
// local store to another, each op three ways measured back to back:
//
//   - restore: a restore of the newest state from the source, the
//     baseline (it reads every page once, as the copy to an empty store
//     must);
//   - empty: the copy into an empty store;
//   - warm: the copy into a store that already holds the history up to
//     the last compaction (a scheduled copy the day after), which uploads
//     only that compaction's chunks.
//
// The figures are ratios to the baseline and between the two copies
// (empty-x-restore, warm-x-empty, warm-bytes-x-empty), plus the copy's
// rate to an empty store.
func BenchmarkCopy50MB(b *testing.B) {
	cached, g := cachedDB(b, 50<<20)
	dir := b.TempDir()
	dbPath := filepath.Join(dir, "node.sqlite3")
	copyFile(b, cached, dbPath)
	src, _ := newStore(b)
	_, n := initNode(b, src, dbPath, dir)
	compact := func() {
		hooks, _, _ := touchAndCompact(b, n, g, dbPath, 0.01)
		if err := workload.Build(dbPath, workload.Hooks(hooks...)); err != nil {
			b.Fatal(err)
		}
	}
	compact()
	compact()
	warm := filepath.Join(dir, "warm")
	wst, _, err := store.Create(ctx, "file://"+warm, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := history.Copy(ctx, src, wst, history.CopyOptions{}); err != nil {
		b.Fatal(err)
	}
	wst.Close()
	compact()

	var restoreS, emptyS, warmS, emptyBytes, warmBytes, peak, live float64
	var size int64
	i := 0
	for b.Loop() {
		i++
		if err := os.RemoveAll(filepath.Join(dir, "op")); err != nil {
			b.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, "op"), 0o755); err != nil {
			b.Fatal(err)
		}
		op := filepath.Join(dir, "op", "x")
		start := time.Now()
		res, err := history.Restore(ctx, src, history.RestoreOptions{Node: "n1", Dest: op + ".sqlite3"})
		if err != nil {
			b.Fatal(err)
		}
		restoreS += time.Since(start).Seconds()
		size = res.Bytes

		empty, _, err := store.Create(ctx, "file://"+op+"-empty", store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		w := watchHeap()
		start = time.Now()
		r, err := history.Copy(ctx, src, empty, history.CopyOptions{})
		emptyS += time.Since(start).Seconds()
		h, l := w.peakMB()
		peak, live = max(peak, h), max(live, l)
		empty.Close()
		if err != nil {
			b.Fatal(err)
		}
		emptyBytes += float64(r.Bytes)

		if out, err := exec.Command("cp", "-a", warm, op+"-warm").CombinedOutput(); err != nil {
			b.Fatalf("cp: %v: %s", err, out)
		}
		ws, err := store.Open(ctx, "file://"+op+"-warm", store.Options{})
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		r, err = history.Copy(ctx, src, ws, history.CopyOptions{})
		warmS += time.Since(start).Seconds()
		ws.Close()
		if err != nil {
			b.Fatal(err)
		}
		if r.Manifests != 2 {
			b.Fatalf("warm copy copied %d manifests, want 2 (the last compaction's seal and snapshot)", r.Manifests)
		}
		warmBytes += float64(r.Bytes)
	}
	b.ReportMetric(emptyS/restoreS, "empty-x-restore")
	b.ReportMetric(warmS/emptyS, "warm-x-empty")
	b.ReportMetric(warmBytes/emptyBytes, "warm-bytes-x-empty")
	b.ReportMetric(float64(size)*float64(i)/emptyS/(1<<20), "empty-MB/s")
	b.ReportMetric(emptyS/float64(i), "empty-s")
	b.ReportMetric(peak, "empty-peak-heap-MB")
	b.ReportMetric(live, "empty-live-growth-MB")
	b.ReportMetric(warmS/float64(i), "warm-s")
}
