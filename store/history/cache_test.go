package history_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
)

// cacheSize is the database size of the compaction cache tests.
func cacheSize(t testing.TB) int64 {
	if testing.Short() {
		return 2 << 20
	}
	return 8 << 20
}

// nextHooks makes the hooks of one step of a node's life: TouchPages(frac)
// and one small trailing change (never sealed), and applies them to the
// node's own copy of its database at dbPath, so that the next step sees the
// current layout.
func nextHooks(t testing.TB, g *workload.Generator, dbPath string, frac float64) []workload.Hook {
	t.Helper()
	var hooks []workload.Hook
	add := func(h workload.Hook) error { hooks = append(hooks, h); return nil }
	if err := g.TouchPages(dbPath, frac, add); err != nil {
		t.Fatal(err)
	}
	if err := g.Block(add); err != nil {
		t.Fatal(err)
	}
	if err := workload.Build(dbPath, workload.Hooks(hooks...)); err != nil {
		t.Fatal(err)
	}
	return hooks
}

// compactWith appends hooks to the node's journal and compacts.
func compactWith(t testing.TB, n *history.Node, hooks []workload.Hook) history.CompactResult {
	t.Helper()
	for _, h := range hooks {
		if _, err := n.Journal().Append(h.Record()); err != nil {
			t.Fatal(err)
		}
	}
	res, err := n.Compact(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest == nil {
		t.Fatal("compaction wrote no snapshot")
	}
	if res.CacheErr != nil {
		t.Fatalf("cache not kept: %v", res.CacheErr)
	}
	return res
}

// newCacheNode inits node n1 in a new store from a copy of db and opens it,
// with cacheDir as its CacheDir ("" for none).
func newCacheNode(t testing.TB, db, cacheDir string) (*store.Store, *history.Node) {
	t.Helper()
	st, _ := newStore(t)
	_, n := initNode(t, st, db, "")
	n.CacheDir = cacheDir
	return st, n
}

// cacheSnapshotSize is the database size of node n1's newest snapshot.
func cacheSnapshotSize(t testing.TB, st *store.Store) int64 {
	t.Helper()
	m, err := st.LatestManifest(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	return m.Snapshot.Size()
}

// assertCacheIsSnapshot checks that the cache file holds exactly the pages of
// the snapshot manifest m (restored from the store).
func assertCacheIsSnapshot(t testing.TB, st *store.Store, cacheFile string, m uint64) {
	t.Helper()
	restored, _ := restore(t, st, history.RestoreOptions{Manifest: m})
	want, err := os.ReadFile(restored)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(cacheFile)
	if err != nil {
		t.Fatalf("cache file: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("cache file (%d bytes) is not the snapshot of manifest %d (%d bytes)", len(got), m, len(want))
	}
}

// TestCompactCacheSameSnapshots compacts twin nodes (same database, same
// changes, separate stores), one with a compaction cache and one without:
// their manifests name the same snapshots, page for page and list for list,
// and with a warm cache a compaction after 1% of pages changed fetches no
// page from the store.
func TestCompactCacheSameSnapshots(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, g := buildDB(t, dir, 1, cacheSize(t))
	cacheDir := filepath.Join(dir, "cache") // created by the compaction
	stA, plain := newCacheNode(t, dbPath, "")
	stB, cached := newCacheNode(t, dbPath, cacheDir)
	prevSize := cacheSnapshotSize(t, stA)
	for round := range 4 {
		hooks := nextHooks(t, g, dbPath, 0.01)
		a := compactWith(t, plain, hooks)
		b := compactWith(t, cached, hooks)
		size := a.Manifest.Snapshot.Size()
		t.Logf("round %d: %d MB; without cache fetched %d bytes; with cache (used %v) fetched %d bytes, kept %d",
			round, size>>20, a.Fetched, b.CacheUsed, b.Fetched, b.Reused)
		sa, sb := a.Manifest.Snapshot, b.Manifest.Snapshot
		if sa.Version != sb.Version || sa.Pages != sb.Pages || sa.PageSize != sb.PageSize ||
			!slices.Equal(sa.Lists, sb.Lists) || !slices.Equal(sa.Patches, sb.Patches) {
			t.Fatalf("round %d: snapshots differ:\nwithout cache %+v\nwith cache    %+v", round, sa, sb)
		}
		if a.Manifest.Seq != b.Manifest.Seq || a.Manifest.JournalSeq != b.Manifest.JournalSeq {
			t.Fatalf("round %d: manifests differ: seq %d/%d, journal seq %d/%d", round, a.Manifest.Seq, b.Manifest.Seq, a.Manifest.JournalSeq, b.Manifest.JournalSeq)
		}
		if a.CacheUsed || a.Reused != 0 {
			t.Fatalf("round %d: the node without CacheDir used a cache: %+v", round, a)
		}
		// Without a cache each distinct page of the previous snapshot is
		// fetched once (some pages repeat).
		if a.Fetched <= prevSize*9/10 || a.Fetched > prevSize {
			t.Fatalf("round %d: without cache fetched %d bytes of a %d-byte snapshot", round, a.Fetched, prevSize)
		}
		if round == 0 {
			if b.CacheUsed || b.Fetched != a.Fetched {
				t.Fatalf("round 0: cold cache: used %v, fetched %d, want %d", b.CacheUsed, b.Fetched, a.Fetched)
			}
		} else {
			if !b.CacheUsed || b.Fetched != 0 || b.Reused != prevSize {
				t.Fatalf("round %d: warm cache: used %v, fetched %d (want 0), kept %d (want %d)", round, b.CacheUsed, b.Fetched, b.Reused, prevSize)
			}
		}
		assertCacheIsSnapshot(t, stB, filepath.Join(cacheDir, "n1.snapshot"), b.Manifest.Seq)
		prevSize = size
	}
	gotA, _ := restore(t, stA, history.RestoreOptions{})
	gotB, _ := restore(t, stB, history.RestoreOptions{})
	assertSame(t, "without cache", gotA, dbPath)
	assertSame(t, "with cache", gotB, dbPath)
	if fi, err := os.Stat(cacheDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory: %v, mode %v", err, fi.Mode())
	}
}

// TestCompactCacheDamaged damages the cache between compactions in every way
// a file can be wrong: each is found page by page, only what is needed is
// fetched, and the node's newest state restores equal to its database.
func TestCompactCacheDamaged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, g := buildDB(t, dir, 1, cacheSize(t))
	otherDB, _ := buildDB(t, t.TempDir(), 2, cacheSize(t))
	cacheDir := filepath.Join(dir, "cache")
	cacheFile := filepath.Join(cacheDir, "n1.snapshot")
	st, n := newCacheNode(t, dbPath, cacheDir)
	res := compactWith(t, n, nextHooks(t, g, dbPath, 0.01)) // warms the cache
	ps := int64(res.Manifest.Snapshot.PageSize)

	rewrite := func(f func([]byte) []byte) func(t *testing.T) {
		return func(t *testing.T) {
			data, err := os.ReadFile(cacheFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cacheFile, f(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T)
		// check judges what was fetched for a previous snapshot of size
		// bytes; "" is fine.
		check func(r history.CompactResult, size int64) string
		used  bool
	}{
		{"flipped byte", rewrite(func(b []byte) []byte { b[len(b)/2+17] ^= 0x40; return b }),
			func(r history.CompactResult, size int64) string {
				return want(r.Fetched == ps && r.Reused == size-ps, "exactly the damaged page fetched")
			}, true},
		{"flipped byte in page 1", rewrite(func(b []byte) []byte { b[100] ^= 1; return b }),
			func(r history.CompactResult, size int64) string {
				return want(r.Fetched == ps, "exactly page 1 fetched")
			}, true},
		{"truncated", rewrite(func(b []byte) []byte { return b[:int64(len(b))-5*ps-123] }),
			func(r history.CompactResult, size int64) string {
				return want(r.Fetched > 0 && r.Fetched <= 6*ps && r.Reused == size-6*ps, "the 6 cut pages fetched at most")
			}, true},
		{"extended", rewrite(func(b []byte) []byte { return append(b, bytes.Repeat([]byte{7}, int(3*ps+5))...) }),
			func(r history.CompactResult, size int64) string {
				return want(r.Fetched == 0 && r.Reused == size, "nothing fetched, extra pages cut")
			}, true},
		{"empty", rewrite(func([]byte) []byte { return nil }),
			func(r history.CompactResult, size int64) string {
				return want(r.Fetched > 0 && r.Reused == 0, "everything fetched")
			}, true},
		{"another node's database", func(t *testing.T) {
			data, err := os.ReadFile(otherDB)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cacheFile, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, func(r history.CompactResult, size int64) string {
			return want(r.Fetched > size/2, "most pages fetched")
		}, true},
		{"missing", func(t *testing.T) { os.Remove(cacheFile) },
			func(r history.CompactResult, size int64) string {
				return want(r.Fetched > 0 && r.Reused == 0, "everything fetched")
			}, false},
		{"cache directory removed", func(t *testing.T) { os.RemoveAll(cacheDir) },
			func(r history.CompactResult, size int64) string {
				return want(r.Fetched > 0 && r.Reused == 0, "everything fetched")
			}, false},
		{"warm again", func(*testing.T) {},
			func(r history.CompactResult, size int64) string {
				return want(r.Fetched == 0 && r.Reused == size, "nothing fetched")
			}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := res.Manifest.Snapshot.Size()
			tc.damage(t)
			res = compactWith(t, n, nextHooks(t, g, dbPath, 0.01))
			t.Logf("fetched %d bytes, kept %d of %d", res.Fetched, res.Reused, prev)
			if res.CacheUsed != tc.used {
				t.Errorf("cache used: %v, want %v", res.CacheUsed, tc.used)
			}
			if msg := tc.check(res, prev); msg != "" {
				t.Errorf("fetched %d, kept %d of %d bytes: want %s", res.Fetched, res.Reused, prev, msg)
			}
			got, _ := restore(t, st, history.RestoreOptions{})
			assertSame(t, tc.name, got, dbPath)
			assertCacheIsSnapshot(t, st, cacheFile, res.Manifest.Seq)
		})
	}
}

func want(ok bool, what string) string {
	if ok {
		return ""
	}
	return what
}

// TestCompactCacheFailedCompaction stops a compaction while it checks the
// cache: no cache and no temporary file are left, and the next compaction
// rebuilds from the store alone.
func TestCompactCacheFailedCompaction(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, g := buildDB(t, dir, 1, cacheSize(t))
	cacheDir := filepath.Join(dir, "cache")
	st, n := newCacheNode(t, dbPath, cacheDir)
	compactWith(t, n, nextHooks(t, g, dbPath, 0.01))

	hooks := nextHooks(t, g, dbPath, 0.01)
	for _, h := range hooks {
		if _, err := n.Journal().Append(h.Record()); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if _, err := n.Compact(cctx, func(done, total int64) { cancel() }); err == nil {
		t.Fatal("a canceled compaction succeeded")
	}
	if left, _ := os.ReadDir(cacheDir); len(left) != 0 {
		t.Fatalf("a failed compaction left %d files in the cache directory (%s...)", len(left), left[0].Name())
	}
	res := compactWith(t, n, nextHooks(t, g, dbPath, 0.01))
	if res.CacheUsed || res.Fetched == 0 {
		t.Fatalf("after a failed compaction: cache used %v, fetched %d", res.CacheUsed, res.Fetched)
	}
	got, _ := restore(t, st, history.RestoreOptions{})
	assertSame(t, "after a failed compaction", got, dbPath)
	assertCacheIsSnapshot(t, st, filepath.Join(cacheDir, "n1.snapshot"), res.Manifest.Seq)
}
