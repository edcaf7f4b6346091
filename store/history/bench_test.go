package history_test

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/remote"
	"github.com/clnbackup/backup/store/s3"
)

// The benchmarks here run on generated lightningd-like databases (package
// bench/workload). The 200 MB ones take a minute of setup, so they run only
// when -bench names them (e.g. -bench 200MB); the 50 MB variants run with
// -bench . and show how the figures scale.

// skipUnlessNamed skips a benchmark unless the -bench pattern contains its
// size tag literally, so `-bench .` leaves the big ones out.
func skipUnlessNamed(b *testing.B, tag string) {
	if f := flag.Lookup("test.bench"); f == nil || !strings.Contains(f.Value.String(), tag) {
		b.Skipf("large benchmark: select it explicitly with -bench '%s'", tag)
	}
}

// dbCache keeps each generated database for the life of the test process,
// in os.TempDir()/clnbackup-bench-<pid>. Go has no hook at process exit
// without a TestMain, so the directory of a process that has gone is removed
// the next time a cache is made.
var dbCache struct {
	sync.Mutex
	dir   string
	paths map[int64]string
}

const cachePrefix = "clnbackup-bench-"

// cachedDB returns a database generated with seed 1 and about size bytes,
// built once per process. Callers must not modify it.
func cachedDB(b *testing.B, size int64) (string, *workload.Generator) {
	b.Helper()
	dbCache.Lock()
	defer dbCache.Unlock()
	if dbCache.dir == "" {
		removeStaleCaches()
		dbCache.dir = filepath.Join(os.TempDir(), cachePrefix+strconv.Itoa(os.Getpid()))
		if err := os.MkdirAll(dbCache.dir, 0o755); err != nil {
			b.Fatal(err)
		}
		dbCache.paths = map[int64]string{}
	}
	g := workload.New(workload.Config{Seed: 1, TargetBytes: size})
	if p, ok := dbCache.paths[size]; ok {
		// Replay the generator so its state matches the file.
		if err := g.Populate(func(workload.Hook) error { return nil }); err != nil {
			b.Fatal(err)
		}
		return p, g
	}
	p := filepath.Join(dbCache.dir, fmt.Sprintf("seed1-%d.sqlite3", size))
	os.Remove(p)
	start := time.Now()
	if err := workload.Build(p, g.Populate); err != nil {
		b.Fatal(err)
	}
	b.Logf("built a %d MB database in %v", size>>20, time.Since(start).Round(time.Millisecond))
	dbCache.paths[size] = p
	return p, g
}

// removeStaleCaches deletes the caches of test processes that have exited.
func removeStaleCaches() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), cachePrefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), cachePrefix))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			os.RemoveAll(d)
		}
	}
}

// copyFile copies src to dst.
func copyFile(b *testing.B, src, dst string) {
	b.Helper()
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
}

// heapWatch samples, every 2 ms, the bytes of heap objects (live and not yet
// swept: the figure a memory limit must accommodate) and the live heap as
// the last GC marked it (what the code holds; the rest is GC slack).
type heapWatch struct {
	stop chan struct{}
	done chan [2]uint64
	// base is the live heap when the watch started (after a GC): the
	// store's chunk index, the benchmark's own state.
	base uint64
}

var heapMetrics = []string{"/memory/classes/heap/objects:bytes", "/gc/heap/live:bytes"}

func watchHeap() *heapWatch {
	runtime.GC()
	h := &heapWatch{stop: make(chan struct{}), done: make(chan [2]uint64)}
	base := []metrics.Sample{{Name: heapMetrics[1]}}
	metrics.Read(base)
	h.base = base[0].Value.Uint64()
	go func() {
		s := make([]metrics.Sample, len(heapMetrics))
		for i, name := range heapMetrics {
			s[i].Name = name
		}
		var peak [2]uint64
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			for i := range peak {
				peak[i] = max(peak[i], s[i].Value.Uint64())
			}
			select {
			case <-h.stop:
				h.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return h
}

// baseMB is the live heap when the watch started, in MiB.
func (h *heapWatch) baseMB() float64 { return float64(h.base) / (1 << 20) }

// peakMB stops the watch and returns the peak of heap objects and the peak
// growth of the marked live heap over its start, in MiB.
func (h *heapWatch) peakMB() (heap, liveGrowth float64) {
	close(h.stop)
	p := <-h.done
	return float64(p[0]) / (1 << 20), float64(p[1]-min(p[1], h.base)) / (1 << 20)
}

// BenchmarkRestore50MB is BenchmarkRestore200MB on a 50 MB database, for
// comparing how time and memory scale.
func BenchmarkRestore50MB(b *testing.B) { benchRestore(b, 50<<20) }

// BenchmarkRestoreS3_50MB is BenchmarkRestore50MB from an s3:// store in a
// versitygw on loopback (parallel ranged GETs of pack spans); compare its
// MB/s with BenchmarkRestore50MB's in the same run.
func BenchmarkRestoreS3_50MB(b *testing.B) { benchRestoreOn(b, 50<<20, true) }

// BenchmarkRestore200MB restores a 200 MB node database (fetch, verify,
// write, integrity check, fsync, link) per op; target >= 150 MB/s.
func BenchmarkRestore200MB(b *testing.B) {
	skipUnlessNamed(b, "200MB")
	benchRestore(b, 200<<20)
}

func benchRestore(b *testing.B, size int64) { benchRestoreOn(b, size, false) }

// BenchmarkRestoreEncrypted50MB is BenchmarkRestore50MB on a plain and an
// encrypted store in the same run: restore MB/s (target >= 150 MB/s
// encrypted) and stored-MB, the store's bytes after Init (target: the
// encrypted store <= 2% more).
func BenchmarkRestoreEncrypted50MB(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchRestoreStore(b, 50<<20, false, false) })
	b.Run("encrypted", func(b *testing.B) { benchRestoreStore(b, 50<<20, false, true) })
}

func benchRestoreOn(b *testing.B, size int64, onS3 bool) { benchRestoreStore(b, size, onS3, false) }

func benchRestoreStore(b *testing.B, size int64, onS3, encrypted bool) {
	dbPath, _ := cachedDB(b, size)
	var st *store.Store
	if encrypted {
		st, _ = newEncStore(b)
	} else {
		st, _ = newStore(b)
	}
	var s3be *s3.Backend
	if onS3 {
		st, s3be = s3Store(b)
	}
	if _, err := history.Init(ctx, st, "n1", dbPath, nil); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	fi, err := os.Stat(dbPath)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	u, err := st.Usage(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var peak, peakLive, base, integrity float64
	var req0 s3.Stats
	if s3be != nil {
		req0 = s3be.Stats()
	}
	i := 0
	for b.Loop() {
		b.StopTimer()
		dest := filepath.Join(dir, fmt.Sprintf("restored-%d.sqlite3", i))
		i++
		w := watchHeap()
		b.StartTimer()
		if _, err := history.Restore(ctx, st, history.RestoreOptions{Node: "n1", Dest: dest}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		h, l := w.peakMB()
		peak, peakLive, base = max(peak, h), max(peakLive, l), max(base, w.baseMB())
		start := time.Now() // the integrity check's share of the op, for diagnosis
		if err := replay.IntegrityCheck(dest); err != nil {
			b.Fatal(err)
		}
		integrity += time.Since(start).Seconds()
		os.Remove(dest)
		b.StartTimer()
	}
	b.ReportMetric(peak, "peak-heap-MB")
	b.ReportMetric(peakLive, "live-growth-MB")
	b.ReportMetric(base, "base-live-MB")
	b.ReportMetric(integrity/float64(i), "integrity-check-s")
	b.ReportMetric(float64(u.Bytes)/(1<<20), "stored-MB")
	if s3be != nil {
		reportRequests(b, s3be.Stats().Sub(req0), i)
	}
}

// BenchmarkCompactOnePercent50MB is BenchmarkCompactOnePercent200MB on a
// 50 MB database: peak heap should not depend on the database size. v1 is
// a version-1 store (changed pages stored whole), v2 a version-2 store
// (changed pages stored as deltas against their previous version), v3 an
// encrypted store (deltas, each body sealed).
func BenchmarkCompactOnePercent50MB(b *testing.B) {
	b.Run("v1", func(b *testing.B) { benchCompactVersion(b, 50<<20, "", 1) })
	b.Run("v2", func(b *testing.B) { benchCompactVersion(b, 50<<20, "", 2) })
	b.Run("v3-encrypted", func(b *testing.B) { benchCompactVersion(b, 50<<20, "", 3) })
}

// BenchmarkCompactCache50MB is BenchmarkCompactOnePercent50MB with and
// without a compaction cache (Node.CacheDir): cold rebuilds the previous
// snapshot from the store's pages each time (the cache is removed before
// each op), warm starts from the cache kept by the op before and fetches
// only the pages it lacks (none). fetched-MB is page bytes read from the
// store per op.
func BenchmarkCompactCache50MB(b *testing.B) {
	b.Run("cold", func(b *testing.B) { benchCompact(b, 50<<20, "cold") })
	b.Run("warm", func(b *testing.B) { benchCompact(b, 50<<20, "warm") })
}

// BenchmarkCompactOnePercent200MB changes 1% of a 200 MB database's pages
// (plus one trailing change) through the journal and compacts, per op.
// Targets: added bytes <= 1.3x the changed pages' zstd size, peak heap
// < 100 MB whatever the database size.
func BenchmarkCompactOnePercent200MB(b *testing.B) {
	skipUnlessNamed(b, "200MB")
	benchCompact(b, 200<<20, "")
}

// BenchmarkCompactRemote50MB is BenchmarkCompactCache50MB/warm with the
// store on a store server on loopback, reached with a node token through a
// proxy that counts the bytes: sent/changed-zstd is what the compaction
// sent to the server against the zstd size of the pages that changed.
func BenchmarkCompactRemote50MB(b *testing.B) { benchCompact(b, 50<<20, "remote") }

// BenchmarkCompactS3_50MB is BenchmarkCompactCache50MB/warm with the store
// in a bucket of a versitygw on loopback: the requests (PUT, GET, HEAD,
// LIST, DELETE) and bytes each compaction made after 1% of the pages
// changed, the figures an object store bills (docs/object-storage.md).
func BenchmarkCompactS3_50MB(b *testing.B) { benchCompact(b, 50<<20, "s3") }

// countingProxy forwards TCP connections to addr and counts the bytes.
type countingProxy struct {
	l              net.Listener
	sent, received atomic.Int64
}

func newCountingProxy(b testing.TB, addr string) *countingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := &countingProxy{l: l}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			pipe := func(dst, src net.Conn, n *atomic.Int64) {
				io.Copy(countingWriter{dst, n}, src)
				dst.Close()
				src.Close()
			}
			go pipe(s, c, &p.sent)
			go pipe(c, s, &p.received)
		}
	}()
	return p
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// remoteStore serves st on loopback to a node token for node and opens it
// through a counting proxy.
func remoteStore(b testing.TB, st *store.Store, node string) (*store.Store, *countingProxy) {
	token, err := remote.NewToken()
	if err != nil {
		b.Fatal(err)
	}
	auth, err := remote.ParseAuth(strings.NewReader(token + " " + node + "\n"))
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := remote.NewServer(st, auth, remote.ServerOptions{})
	go srv.Serve(l)
	b.Cleanup(func() { srv.Shutdown(ctx) })
	p := newCountingProxy(b, l.Addr().String())
	rst, err := store.Open(ctx, "socket:"+p.l.Addr().String(), store.Options{Token: token})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { rst.Close() })
	return rst, p
}

// benchCompact compacts after 1% of pages changed, per op; cache is "" (no
// CacheDir), "cold" (a CacheDir emptied before each op), "warm", or
// "remote" (warm, through a store server).
func benchCompact(b *testing.B, size int64, cache string) { benchCompactVersion(b, size, cache, 0) }

// benchCompactVersion is benchCompact on a store of the given format
// version (0: the current one).
func benchCompactVersion(b *testing.B, size int64, cache string, version int) {
	cached, g := cachedDB(b, size)
	dir := b.TempDir()
	// The node's database evolves with each op: keep a private copy in
	// step with the store so TouchPages sees the current layout.
	dbPath := filepath.Join(dir, "node.sqlite3")
	prev := filepath.Join(dir, "prev.sqlite3")
	copyFile(b, cached, dbPath)
	st, _ := newVersionStore(b, version, nil)
	var proxy *countingProxy
	if cache == "remote" {
		st, proxy = remoteStore(b, st, "n1")
	}
	var s3be *s3.Backend
	var s3reqs s3.Stats
	if cache == "s3" {
		st, s3be = s3Store(b)
	}
	_, n := initNode(b, st, dbPath, dir)
	cacheDir := filepath.Join(dir, "cache")
	if cache != "" {
		n.TempDir, n.CacheDir = "", cacheDir
		if cache == "warm" || cache == "remote" || cache == "s3" { // the first op is cold, the timed ones warm
			hooks, _, _ := touchAndCompact(b, n, g, dbPath, 0.01)
			if err := workload.Build(dbPath, workload.Hooks(hooks...)); err != nil {
				b.Fatal(err)
			}
		}
	}
	var added, changedZstd, secs, peak, peakLive, base, fetched, sent, received float64
	changed := 0
	for b.Loop() {
		b.StopTimer()
		var touch, block []workload.Hook
		send := func(dst *[]workload.Hook) func(workload.Hook) error {
			return func(h workload.Hook) error {
				*dst = append(*dst, h)
				_, err := n.Journal().Append(h.Record())
				return err
			}
		}
		if err := g.TouchPages(dbPath, 0.01, send(&touch)); err != nil {
			b.Fatal(err)
		}
		if err := g.Block(send(&block)); err != nil {
			b.Fatal(err)
		}
		if cache == "cold" {
			os.RemoveAll(cacheDir)
		}
		w := watchHeap()
		var sent0, recv0 int64
		if proxy != nil {
			sent0, recv0 = proxy.sent.Load(), proxy.received.Load()
		}
		var req0 s3.Stats
		if s3be != nil {
			req0 = s3be.Stats()
		}
		b.StartTimer()
		res, err := n.Compact(ctx, nil)
		b.StopTimer()
		if s3be != nil {
			d := s3be.Stats().Sub(req0)
			s3reqs = s3.Stats{Put: s3reqs.Put + d.Put, Get: s3reqs.Get + d.Get, Head: s3reqs.Head + d.Head, List: s3reqs.List + d.List,
				Delete: s3reqs.Delete + d.Delete, Other: s3reqs.Other + d.Other, BytesUp: s3reqs.BytesUp + d.BytesUp, BytesDown: s3reqs.BytesDown + d.BytesDown}
		}
		if proxy != nil {
			sent += float64(proxy.sent.Load() - sent0)
			received += float64(proxy.received.Load() - recv0)
		}
		h, l := w.peakMB()
		peak, peakLive, base = max(peak, h), max(peakLive, l), max(base, w.baseMB())
		if err != nil {
			b.Fatal(err)
		}
		if res.Manifest == nil {
			b.Fatal("compaction wrote no snapshot")
		}
		// The pages the snapshot changed are the pages the touch changed
		// in the node's own copy (TestDedupOnePercent checks that equality
		// against the store).
		copyFile(b, dbPath, prev)
		if err := workload.Build(dbPath, workload.Hooks(touch...)); err != nil {
			b.Fatal(err)
		}
		c, z := changedPages(b, prev, dbPath)
		if err := workload.Build(dbPath, workload.Hooks(block...)); err != nil {
			b.Fatal(err)
		}
		changed += c
		changedZstd += float64(z)
		added += float64(res.Added)
		fetched += float64(res.Fetched)
		secs += res.Duration.Seconds()
		b.StartTimer()
	}
	b.ReportMetric(added/changedZstd, "added/changed-zstd")
	if proxy != nil {
		b.ReportMetric(sent/changedZstd, "sent/changed-zstd")
		b.ReportMetric(sent/float64(b.N)/(1<<20), "sent-MB")
		b.ReportMetric(received/float64(b.N)/(1<<20), "received-MB")
	}
	if s3be != nil {
		reportRequests(b, s3reqs, b.N)
	}
	b.ReportMetric(secs/float64(b.N), "compact-s")
	b.ReportMetric(float64(changed)/float64(b.N), "changed-pages")
	b.ReportMetric(fetched/float64(b.N)/(1<<20), "fetched-MB")
	b.ReportMetric(peak, "peak-heap-MB")
	b.ReportMetric(peakLive, "live-growth-MB")
	b.ReportMetric(base, "base-live-MB")
}
