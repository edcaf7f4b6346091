package history_test

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	_ "github.com/mattn/go-sqlite3" // the "sqlite3" driver, to change a cache behind the compaction's back
)

// proofSize is the database size of the cache proof tests.
const proofSize = 4 << 20

// TestCompactCacheProof: a warm cache whose proof vouches for it is used as
// is (nothing fetched, no page hashed); a cache changed in any way behind
// the compaction's back, or a proof that is damaged or names another
// snapshot or file, is never trusted: the full check runs (every page
// hashed, the damaged ones fetched), and the result restores equal to the
// node's database.
func TestCompactCacheProof(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, g := buildDB(t, dir, 1, proofSize)
	cacheDir := filepath.Join(dir, "cache")
	cacheFile := filepath.Join(cacheDir, "n1.snapshot")
	proofFile := cacheFile + ".proof"
	st, n := newCacheNode(t, dbPath, cacheDir)
	res := compactWith(t, n, nextHooks(t, g, dbPath, 0.01))
	if res.CacheUsed || res.CacheProven || res.ProofErr != nil {
		t.Fatalf("cold compaction: used %v, proven %v, proof error %v", res.CacheUsed, res.CacheProven, res.ProofErr)
	}
	oldProof := readFile(t, proofFile)
	res = compactWith(t, n, nextHooks(t, g, dbPath, 0.01))
	if !res.CacheProven || res.Fetched != 0 {
		t.Fatalf("warm compaction: proven %v, fetched %d", res.CacheProven, res.Fetched)
	}
	checkPhases(t, res, "integrity check")
	ps := int64(res.Manifest.Snapshot.PageSize)
	for _, tc := range []struct {
		name        string
		damage      func(t *testing.T)
		wantFetched func(size int64) (lo, hi int64)
	}{
		{"page flipped, mtime put back", func(t *testing.T) {
			fi, err := os.Stat(cacheFile)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(cacheFile, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			off := fi.Size()/2 + 17
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x40
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if err := os.Chtimes(cacheFile, time.Time{}, fi.ModTime()); err != nil {
				t.Fatal(err)
			}
		}, func(int64) (int64, int64) { return ps, ps }},
		{"truncated", func(t *testing.T) {
			fi, err := os.Stat(cacheFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(cacheFile, fi.Size()-3*ps); err != nil {
				t.Fatal(err)
			}
		}, func(int64) (int64, int64) { return 1, 3 * ps }},
		{"database changed by SQLite", func(t *testing.T) {
			db, err := sql.Open("sqlite3", cacheFile)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := db.Exec("PRAGMA user_version = 42"); err != nil {
				t.Fatal(err)
			}
		}, func(int64) (int64, int64) { return ps, ps }},
		{"proof damaged", func(t *testing.T) {
			b := readFile(t, proofFile)
			b[len(b)/2] ^= 1
			writeFile(t, proofFile, b)
		}, func(int64) (int64, int64) { return 0, 0 }},
		{"proof of an older snapshot", func(t *testing.T) { writeFile(t, proofFile, oldProof) },
			func(int64) (int64, int64) { return 0, 0 }},
		{"cache replaced by a copy", func(t *testing.T) {
			writeFile(t, cacheFile+".copy", readFile(t, cacheFile))
			if err := os.Rename(cacheFile+".copy", cacheFile); err != nil {
				t.Fatal(err)
			}
		}, func(int64) (int64, int64) { return 0, 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prev := res.Manifest.Snapshot.Size()
			tc.damage(t)
			res = compactWith(t, n, nextHooks(t, g, dbPath, 0.01))
			lo, hi := tc.wantFetched(prev)
			if !res.CacheUsed || res.CacheProven || res.Fetched < lo || res.Fetched > hi || res.Fetched+res.Reused < prev-3*ps {
				t.Errorf("used %v, proven %v, fetched %d, kept %d of %d; want a full check fetching %d..%d bytes",
					res.CacheUsed, res.CacheProven, res.Fetched, res.Reused, prev, lo, hi)
			}
			got, _ := restore(t, st, history.RestoreOptions{})
			assertSame(t, tc.name, got, dbPath)
			assertCacheIsSnapshot(t, st, cacheFile, res.Manifest.Seq)
			// Checked in full, the cache is vouched for again.
			res = compactWith(t, n, nextHooks(t, g, dbPath, 0.01))
			if !res.CacheProven || res.Fetched != 0 {
				t.Fatalf("after the full check: proven %v, fetched %d", res.CacheProven, res.Fetched)
			}
			assertCacheIsSnapshot(t, st, cacheFile, res.Manifest.Seq)
		})
	}
}

// TestCompactCacheProofPeriodicFullCheck: a proof is trusted at most
// cacheFullCheckEvery compactions in a row, then the cache is checked in
// full again.
func TestCompactCacheProofPeriodicFullCheck(t *testing.T) {
	defer history.SetCacheFullCheckEvery(2)()
	dir := t.TempDir()
	dbPath, g := buildDB(t, dir, 3, proofSize)
	st, n := newCacheNode(t, dbPath, filepath.Join(dir, "cache"))
	var got []bool
	for range 6 {
		got = append(got, compactWith(t, n, nextHooks(t, g, dbPath, 0.01)).CacheProven)
	}
	if want := []bool{false, true, true, false, true, true}; !slices.Equal(got, want) {
		t.Fatalf("proven: %v, want %v", got, want)
	}
	restored, _ := restore(t, st, history.RestoreOptions{})
	assertSame(t, "after periodic full checks", restored, dbPath)
}

// TestCompactTrackedEqualsFullRehash compacts twin nodes through the same
// changes, one hashing every page of each new snapshot and one only the
// pages its replay wrote: every snapshot is the same, page table for page
// table, whether a step changes few pages or many; in encrypted stores
// (each with its own keyed chunk ids) the caches are compared, and each
// tracked snapshot restores to its cache.
func TestCompactTrackedEqualsFullRehash(t *testing.T) {
	for _, kind := range []string{"plain", "encrypted"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			dbPath, g := buildDB(t, dir, 4, proofSize)
			var sts [2]*store.Store
			var nodes [2]*history.Node
			for i := range sts {
				sts[i] = storeOfKind(t, kind)
				_, nodes[i] = initNode(t, sts[i], dbPath, "")
				nodes[i].CacheDir = filepath.Join(dir, fmt.Sprint("cache", i))
			}
			for round, frac := range []float64{0.01, 0.3, 0.01, 0.002} {
				hooks := nextHooks(t, g, dbPath, frac)
				restoreTrack := history.SetTrackPages(false)
				a := compactWith(t, nodes[0], hooks)
				restoreTrack()
				b := compactWith(t, nodes[1], hooks)
				// The tracked snapshot restores to the very file it
				// was taken from (keyed ids included).
				assertCacheIsSnapshot(t, sts[1], filepath.Join(dir, "cache1", "n1.snapshot"), b.Manifest.Seq)
				sa, sb := a.Manifest.Snapshot, b.Manifest.Snapshot
				same := sa.Version == sb.Version && sa.Pages == sb.Pages && slices.Equal(sa.Lists, sb.Lists) && slices.Equal(sa.Patches, sb.Patches)
				if kind == "plain" && !same {
					t.Fatalf("round %d: snapshots differ:\nfull rehash %+v\ntracked     %+v", round, sa, sb)
				}
				if !bytes.Equal(readFile(t, filepath.Join(dir, "cache0", "n1.snapshot")), readFile(t, filepath.Join(dir, "cache1", "n1.snapshot"))) {
					t.Fatalf("round %d: the caches differ", round)
				}
			}
			for i, st := range sts {
				got, _ := restore(t, st, history.RestoreOptions{})
				assertSame(t, fmt.Sprint("node ", i), got, dbPath)
			}
		})
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// checkPhases: a compaction reports its phases in order, their times adding
// up to no more than its duration, without the phase it must have skipped
// ("" for none).
func checkPhases(t *testing.T, res history.CompactResult, skipped string) {
	t.Helper()
	want := []string{"seal", "page table and cache proof", "previous snapshot", "replay", "integrity check", "store pages", "commit", "keep cache", "trim journal"}
	var got []string
	var sum float64
	for _, p := range res.Phases {
		got = append(got, p.Name)
		sum += p.Seconds
	}
	want = slices.DeleteFunc(want, func(s string) bool { return s == skipped })
	if !slices.Equal(got, want) {
		t.Errorf("phases %q, want %q", got, want)
	}
	if sum > res.Duration.Seconds() {
		t.Errorf("phases add up to %.6fs, more than the compaction's %v", sum, res.Duration)
	}
	if s := history.PhaseSummary(res.Phases); !strings.Contains(s, "replay ") {
		t.Errorf("phase summary %q", s)
	}
}
