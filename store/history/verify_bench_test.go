package history_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
)

// benchFixture is a store holding one generated ~100 MB lightningd-like
// database, built once per test process.
var benchFixture struct {
	once          sync.Once
	url           string
	dbBytes       int64
	packBytes     int64
	err           error
	dir, setupLog string
}

func verifyBenchStore(b *testing.B) (url string, dbBytes, packBytes int64) {
	b.Helper()
	f := &benchFixture
	f.once.Do(func() {
		start := time.Now()
		if f.dir, f.err = os.MkdirTemp("", "verify-bench"); f.err != nil {
			return
		}
		db := filepath.Join(f.dir, "bench.sqlite3")
		g := workload.New(workload.Config{Seed: 1, TargetBytes: 100 << 20})
		if f.err = workload.Build(db, g.Populate); f.err != nil {
			return
		}
		f.url = "file://" + filepath.Join(f.dir, "store")
		st, _, err := store.Create(vctx, f.url, store.Options{})
		if f.err = err; err != nil {
			return
		}
		defer st.Close()
		if _, f.err = history.Init(vctx, st, "bench", db, nil); f.err != nil {
			return
		}
		fi, _ := os.Stat(db)
		u, _ := st.Usage(vctx)
		f.dbBytes, f.packBytes = fi.Size(), u.PackBytes
		f.setupLog = fmt.Sprintf("setup %v: database %d MB, store %d MB in %d packs", time.Since(start).Round(time.Second), fi.Size()>>20, u.PackBytes>>20, u.Packs)
	})
	if f.err != nil {
		b.Fatal(f.err)
	}
	return f.url, f.dbBytes, f.packBytes
}

func benchVerify(b *testing.B, opts history.VerifyOptions) history.VerifyReport {
	url, _, _ := verifyBenchStore(b)
	st, err := store.Open(vctx, url, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	rep, err := history.Verify(vctx, st, opts)
	if err != nil || !rep.OK() {
		b.Fatalf("verify: %v %+v", err, rep.Problems)
	}
	return rep
}

// BenchmarkVerifyReadData measures verify --read-data on a store holding a
// generated ~100 MB lightningd-like database: the time to read every pack,
// check it against its name, and decompress and re-hash every chunk. The
// packs were just written, so they are read from the page cache: the figure
// is the CPU cost; on a cold disk the disk's read rate bounds it.
func BenchmarkVerifyReadData(b *testing.B) {
	_, dbBytes, packBytes := verifyBenchStore(b)
	b.Log(benchFixture.setupLog)
	b.SetBytes(packBytes)
	b.ResetTimer()
	var mbps float64
	for i := 0; i < b.N; i++ {
		mbps = benchVerify(b, history.VerifyOptions{ReadData: true}).ReadData.MBPerSecond()
	}
	b.ReportMetric(mbps, "read-MB/s")
	b.ReportMetric(float64(dbBytes)/1e6/(b.Elapsed().Seconds()/float64(b.N)), "db-MB/s")
}

// BenchmarkVerifyStructure measures the structural check alone on the same
// store (index, manifest, list chunks, every page looked up).
func BenchmarkVerifyStructure(b *testing.B) {
	verifyBenchStore(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		benchVerify(b, history.VerifyOptions{})
	}
}
