package packs_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/packs"
)

// The gc benchmark's store: a million small page chunks (256 random bytes:
// 1M real 4 KiB pages would be 4 GB, and gc's cost is per chunk, not per
// byte, except for repacking), ~1,500 list chunks, and 1,000 manifests of 10
// nodes whose snapshots name about half of the pages. Liveness comes in
// runs of 32768 chunks (about two packs) that cycle through 100%, 0%, 30%
// and 70% live, so gc deletes whole packs, repacks sparse ones and keeps
// mostly live ones, as after forget on a real store.
const (
	gcBenchChunks    = 1_000_000
	gcBenchChunkSize = 256
	gcBenchNodes     = 10
	gcBenchManifests = 1000
	gcBenchRun       = 32768
	gcBenchListIDs   = 1024 // store.DefaultParams().ListEntries
	gcBenchWindow    = 64   // shared list chunks per manifest
	gcBenchWriterAge = time.Minute
)

var gcBenchLive = [...]float64{1, 0, 0.3, 0.7}

// gcBenchFixture is the pristine store, built once per test process in
// os.TempDir()/clnbackup-gcbench-<pid> (a later process removes the
// directories of processes that are gone).
var gcBenchFixture struct {
	once  sync.Once
	dir   string
	err   error
	stats string
}

const gcBenchPrefix = "clnbackup-gcbench-"

func gcBenchStore(b *testing.B) string {
	b.Helper()
	f := &gcBenchFixture
	f.once.Do(func() {
		removeDeadProcessDirs(gcBenchPrefix)
		f.dir = filepath.Join(os.TempDir(), gcBenchPrefix+strconv.Itoa(os.Getpid()))
		os.RemoveAll(f.dir)
		start := time.Now()
		f.err = buildGCBenchStore(filepath.Join(f.dir, "pristine"))
		f.stats = fmt.Sprintf("built in %v", time.Since(start).Round(time.Second))
	})
	if f.err != nil {
		b.Fatal(f.err)
	}
	return filepath.Join(f.dir, "pristine")
}

func removeDeadProcessDirs(prefix string) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), prefix))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(d)
		}
	}
}

func buildGCBenchStore(dir string) error {
	ctx := context.Background()
	st, _, err := store.Create(ctx, "file://"+dir, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	w, err := st.NewWriter(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	r := rand.New(rand.NewPCG(1, 2))
	body := make([]byte, gcBenchChunkSize)
	var live []chunker.ID
	for i := range gcBenchChunks {
		for o := 0; o < len(body); o += 8 {
			v := r.Uint64()
			if o == 0 {
				v = uint64(i) // distinct whatever the generator does
			}
			for k := range 8 {
				body[o+k] = byte(v >> (8 * k))
			}
		}
		id, isNew, err := w.Put(ctx, chunk.KindPage, body)
		if err != nil {
			return err
		}
		if !isNew {
			return fmt.Errorf("chunk %d is a duplicate", i)
		}
		if r.Float64() < gcBenchLive[(i/gcBenchRun)%len(gcBenchLive)] {
			live = append(live, id)
		}
	}
	// Shared list chunks cover the live pages in order; every manifest
	// names a window of them plus one list of its own (random live pages,
	// as a compaction's new list or patch would).
	var shared []chunker.ID
	for lo := 0; lo < len(live); lo += gcBenchListIDs {
		id, _, err := w.Put(ctx, chunk.KindList, manifest.EncodeList(live[lo:min(lo+gcBenchListIDs, len(live))]))
		if err != nil {
			return err
		}
		shared = append(shared, id)
	}
	own := make([]chunker.ID, gcBenchManifests)
	ids := make([]chunker.ID, gcBenchListIDs)
	for j := range own {
		for k := range ids {
			ids[k] = live[r.IntN(len(live))]
		}
		if own[j], _, err = w.Put(ctx, chunk.KindList, manifest.EncodeList(ids)); err != nil {
			return err
		}
	}
	if err := w.Flush(ctx); err != nil {
		return err
	}
	sizes := map[chunker.ID]uint32{}
	for i, id := range shared {
		sizes[id] = uint32(min(gcBenchListIDs, len(live)-i*gcBenchListIDs))
	}
	for j := range gcBenchManifests {
		node := fmt.Sprintf("node%02d", j%gcBenchNodes)
		seq := uint64(j/gcBenchNodes + 1)
		if seq == 1 {
			if err := st.CreateNode(ctx, store.NodeInfo{Name: node, Created: time.Now().UTC()}); err != nil {
				return err
			}
		}
		snap := manifest.Snapshot{Version: uint32(seq), PageSize: 4096, Lists: []chunker.ID{}}
		for k := range gcBenchWindow {
			id := shared[(j*7+k)%len(shared)]
			snap.Lists = append(snap.Lists, id)
			snap.Pages += sizes[id]
		}
		snap.Lists = append(snap.Lists, own[j])
		snap.Pages += gcBenchListIDs
		m := &manifest.Manifest{Format: manifest.FormatVersion, Node: node, Seq: seq, Created: time.Now().UTC(), Snapshot: snap}
		if err := putManifest(ctx, st, m); err != nil {
			return err
		}
	}
	return nil
}

// cloneTree hard-links every file of src into dst: the local backend never
// changes a file in place (it writes a new one and links it), so a gc run
// on the clone leaves the pristine store as it was.
func cloneTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		return os.Link(p, to)
	})
}

// memWatch samples, every 2 ms, the bytes of heap objects (runtime/metrics)
// and the process's resident set (VmRSS: VmHWM would be the peak of the
// whole process, store building included).
type memWatch struct {
	stop chan struct{}
	done chan [2]uint64
}

func watchMem() *memWatch {
	m := &memWatch{stop: make(chan struct{}), done: make(chan [2]uint64)}
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak [2]uint64
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			peak[0] = max(peak[0], s[0].Value.Uint64())
			peak[1] = max(peak[1], vmRSS())
			select {
			case <-m.stop:
				m.done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// peakMB stops the watch: peak heap objects and peak RSS, in MiB.
func (m *memWatch) peakMB() (heap, rss float64) {
	close(m.stop)
	p := <-m.done
	return float64(p[0]) / (1 << 20), float64(p[1]) / (1 << 20)
}

// vmRSS is the process's resident set in bytes, from /proc/self/status.
func vmRSS() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// gcPhase is one timed gc run, in a Store of its own (as one backup-cli gc
// process), with memory measured from a collected, returned-to-the-OS heap.
type gcPhase struct {
	name            string
	secs            float64
	heapMB, rssMB   float64
	baseRSS, baseMB float64
	rep             packs.GCReport
}

func runGCPhase(b *testing.B, name, url string, now func() time.Time, opts packs.GCOptions) gcPhase {
	b.Helper()
	ctx := context.Background()
	runtime.GC()
	debug.FreeOSMemory()
	ph := gcPhase{name: name, baseRSS: float64(vmRSS()) / (1 << 20)}
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	ph.baseMB = float64(s[0].Value.Uint64()) / (1 << 20)
	b.StartTimer()
	watch := watchMem()
	start := time.Now()
	st, err := store.Open(ctx, url, store.Options{Now: now, MaxWriterAge: gcBenchWriterAge})
	if err != nil {
		b.Fatal(err)
	}
	ph.rep, err = history.GC(ctx, st, opts)
	st.Close()
	ph.secs = time.Since(start).Seconds()
	ph.heapMB, ph.rssMB = watch.peakMB()
	b.StopTimer()
	if err != nil {
		b.Fatalf("gc %s: %v", name, err)
	}
	r := ph.rep
	b.Logf("%-8s %6.2f s, peak heap %4.0f MiB, peak RSS %4.0f MiB (%.0f before); %d chunks (%d live) in %d packs: condemned %d, deleted %d packs + %d chunks, repacked %d packs, kept %d in live packs",
		name, ph.secs, ph.heapMB, ph.rssMB, ph.baseRSS, r.StoredChunks, r.LiveChunks, r.Packs, r.NewlyCondemned, r.DeletedPacks, r.DeletedChunks, r.RepackedPacks, r.BlockedChunks)
	return ph
}

// BenchmarkGC1MChunks times gc on a store of a million chunks and a thousand
// manifests: a dry run (classify only), the run that condemns the
// unreferenced half, and, a grace period later, the run that deletes and
// repacks. Targets: each run < 60 s and < 300 MB. Select it explicitly
// (-bench 1MChunks): building the store takes a while and ~300 MB of disk.
func BenchmarkGC1MChunks(b *testing.B) {
	if f := flag.Lookup("test.bench"); f == nil || !strings.Contains(f.Value.String(), "1MChunks") {
		b.Skip("large benchmark: select it with -bench 1MChunks")
	}
	b.StopTimer()
	pristine := gcBenchStore(b)
	b.Log(gcBenchFixture.stats)
	b.ResetTimer()
	var worst gcPhase
	for i := 0; i < b.N; i++ {
		work := filepath.Join(gcBenchFixture.dir, fmt.Sprintf("run%d", i))
		os.RemoveAll(work)
		if err := cloneTree(pristine, work); err != nil {
			b.Fatal(err)
		}
		url := "file://" + work
		grace := 2 * gcBenchWriterAge // the shortest gc accepts
		var mu sync.Mutex
		offset := grace + time.Minute // every pack is older than grace
		now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
		opts := packs.GCOptions{Grace: grace}

		dry := opts
		dry.DryRun = true
		phases := []gcPhase{runGCPhase(b, "dry run", url, now, dry)}
		phases = append(phases, runGCPhase(b, "condemn", url, now, opts))
		mu.Lock()
		offset += grace + time.Minute
		mu.Unlock()
		phases = append(phases, runGCPhase(b, "delete", url, now, opts))

		d, c, del := phases[0].rep, phases[1].rep, phases[2].rep
		if d.StoredChunks < gcBenchChunks || d.Manifests != gcBenchManifests || d.NewlyCondemned == 0 {
			b.Fatalf("dry run: %+v", d)
		}
		if c.NewlyCondemned != d.NewlyCondemned || c.DeletedChunks != 0 {
			b.Fatalf("condemning run: %+v (dry run said %d)", c, d.NewlyCondemned)
		}
		if del.DeletedPacks == 0 || del.RepackedPacks == 0 || del.DeletedChunks == 0 {
			b.Fatalf("deleting run: %+v", del)
		}
		for _, ph := range phases {
			if ph.secs > worst.secs {
				worst.secs = ph.secs
			}
			worst.heapMB = max(worst.heapMB, ph.heapMB)
			worst.rssMB = max(worst.rssMB, ph.rssMB)
		}
		b.ReportMetric(phases[0].secs, "dry-s")
		b.ReportMetric(phases[1].secs, "condemn-s")
		b.ReportMetric(phases[2].secs, "delete-s")
		os.RemoveAll(work)
	}
	b.ReportMetric(worst.heapMB, "peak-heap-MB")
	b.ReportMetric(worst.rssMB, "peak-RSS-MB")
	if worst.secs > 60 || worst.rssMB > 300 {
		b.Logf("TARGET MISSED: slowest run %.1f s (target < 60 s), peak RSS %.0f MiB (target < 300 MB)", worst.secs, worst.rssMB)
	}
}

// putManifest commits m through a writer that stored nothing: the chunks
// it names are the benchmark's business.
func putManifest(ctx context.Context, st *store.Store, m *manifest.Manifest) error {
	w, err := st.NewWriter(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	_, err = w.Commit(ctx, m)
	return err
}
