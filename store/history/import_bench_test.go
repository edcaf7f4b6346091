package history_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/legacy"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store/history"
)

// BenchmarkImportLegacy50MB imports a Python-plugin backup holding a
// snapshot of a 50 MB database and 10,000 logged changes (the workload
// generator's lightningd-like hooks): time per import, peak heap, and the
// process's peak RSS during the import (VmHWM, reset before it). The
// baseline, measured in the same run on the same file, is a restore of the
// file (legacy.Restore, what the import's check does once before it
// imports).
func BenchmarkImportLegacy50MB(b *testing.B) {
	path, dir := legacyBenchFile(b)
	b.Run("restore-baseline", func(b *testing.B) {
		benchMemory(b, path, func(i int) error {
			dest := filepath.Join(dir, fmt.Sprintf("restored%d.sqlite3", i))
			defer os.Remove(dest)
			_, err := legacy.Restore(path, dest, nil)
			return err
		})
	})
	b.Run("import", func(b *testing.B) {
		benchMemory(b, path, func(i int) error {
			b.StopTimer()
			st, _ := newStore(b)
			b.StartTimer()
			_, err := history.ImportLegacy(ctx, st, fmt.Sprintf("n%d", i), path, history.ImportOptions{TempDir: dir})
			return err
		})
	})
}

// legacyBenchFile writes the v1 file of BenchmarkImportLegacy50MB: a
// snapshot of the cached 50 MB database and 10,000 changes after it.
func legacyBenchFile(b *testing.B) (path, dir string) {
	dbPath, g := cachedDB(b, 50<<20)
	db, err := os.ReadFile(dbPath)
	if err != nil {
		b.Fatal(err)
	}
	v, _, err := replay.DataVersionOf(dbPath)
	if err != nil {
		b.Fatal(err)
	}
	es := []rawEntry{{v, legacy.Snapshot, db}}
	for len(es) < 10_001 {
		err := g.Step(func(h workload.Hook) error {
			es = append(es, rawEntry{h.Version, legacy.Change, []byte(strings.Join(h.Statements, "\x00"))})
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	dir = b.TempDir()
	path = filepath.Join(dir, "backup.dbak")
	writeDbak(b, path, es, es[len(es)-1].version)
	fi, _ := os.Stat(path)
	b.Logf("legacy file: %d MB, a %d MB snapshot and %d changes of %d KB, versions %d..%d",
		fi.Size()>>20, len(db)>>20, len(es)-1, (fi.Size()-int64(len(db)))>>10, v, es[len(es)-1].version)
	return path, dir
}

// benchMemory runs run(i) per iteration, timed, and reports its peak heap,
// live heap growth and the process's peak RSS.
func benchMemory(b *testing.B, path string, run func(i int) error) {
	fi, _ := os.Stat(path)
	b.SetBytes(fi.Size())
	var peak, live, rss float64
	i := 0
	for b.Loop() {
		b.StopTimer()
		resetPeakRSS(b)
		w := watchHeap()
		b.StartTimer()
		if err := run(i); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		h, l := w.peakMB()
		peak, live, rss = max(peak, h), max(live, l), max(rss, peakRSSMB(b))
		i++
		b.StartTimer()
	}
	b.ReportMetric(peak, "peak-heap-MB")
	b.ReportMetric(live, "live-growth-MB")
	b.ReportMetric(rss, "peak-RSS-MB")
}

// resetPeakRSS returns freed memory to the OS (the test file's generation
// leaves much) and resets the process's VmHWM (Linux: clear_refs 5).
func resetPeakRSS(b *testing.B) {
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset peak RSS: %v", err)
	}
}

// peakRSSMB is the process's VmHWM in MiB.
func peakRSSMB(b *testing.B) float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb float64
		if _, err := fmt.Sscanf(sc.Text(), "VmHWM: %f kB", &kb); err == nil {
			return kb / 1024
		}
	}
	return 0
}
