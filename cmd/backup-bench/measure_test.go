package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/clnbackup/backup/bench/workload"
)

// inMemoryBound is the page bound and zlib size as backup-bench computed
// them before it streamed snapshots: from the whole file in memory.
func inMemoryBound(b *pageBound, db []byte) (newPages, zlibBytes int64) {
	pageSize := 4096
	if len(db) >= 18 {
		if ps := int(db[16])<<8 | int(db[17]); ps == 1 {
			pageSize = 65536
		} else if ps >= 512 {
			pageSize = ps
		}
	}
	b.RawBytes += int64(len(db))
	for off := 0; off+pageSize <= len(db); off += pageSize {
		if b.addPage(db[off : off+pageSize]) {
			newPages++
		}
	}
	return newPages, zlibSize(db)
}

// testSnapshots are files of several page sizes (one not a power of two,
// so that pages straddle the read blocks), lengths (shorter than the
// header, not a whole number of pages, several blocks) and repeated pages.
func testSnapshots(t *testing.T) map[string][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		// Runs of varied compressibility, so that pages cut elsewhere
		// compress to other sizes.
		b := make([]byte, n)
		alphabet := 1
		for i := range b {
			if i%300 == 0 {
				alphabet = []int{1, 4, 16, 256}[rng.IntN(4)]
			}
			b[i] = byte(rng.IntN(alphabet))
		}
		return b
	}
	withPageSize := func(b []byte, hi, lo byte) []byte { b[16], b[17] = hi, lo; return b }
	repeated := random(3 * snapshotBlock)
	copy(repeated[snapshotBlock:], repeated[:snapshotBlock]) // duplicate pages
	files := map[string][]byte{
		"empty":         {},
		"short":         random(10),
		"4096":          withPageSize(repeated, 0x10, 0x00),
		"65536 partial": withPageSize(random(2*snapshotBlock+70000), 0, 1),
		"1000":          withPageSize(random(2*snapshotBlock+500), 0x03, 0xe8),
		"no page size":  withPageSize(random(50000), 0, 7),
	}
	db := filepath.Join(t.TempDir(), "workload.sqlite3")
	gen := workload.New(workload.Config{Seed: 3, TargetBytes: 2 << 20, UpdateFrac: 0.01, InsertFrac: 0.01, HotRows: true, StepHookStatements: 3})
	if err := workload.Build(db, gen.Populate); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	files["sqlite"] = data
	return files
}

// TestScanSnapshotAsInMemory checks that counting a snapshot block by block
// gives the figures of counting it whole, snapshot after snapshot in one
// bound (so that pages already seen count as such).
func TestScanSnapshotAsInMemory(t *testing.T) {
	dir := t.TempDir()
	streamed, whole := newPageBound(), newPageBound()
	for name, data := range testSnapshots(t) {
		path := filepath.Join(dir, "snapshot")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second time, no page is new
			s, err := streamed.scanSnapshot(path)
			if err != nil {
				t.Fatal(err)
			}
			newPages, zlibBytes := inMemoryBound(whole, data)
			if s.Bytes != int64(len(data)) || s.NewPages != newPages || s.ZlibBytes != zlibBytes {
				t.Fatalf("%s: streamed %+v, whole: %d new pages, %d zlib bytes", name, s, newPages, zlibBytes)
			}
			if figures(streamed) != figures(whole) {
				t.Fatalf("%s: streamed bound %v, whole %v", name, figures(streamed), figures(whole))
			}
		}
	}
}

// figures are a bound's reported figures.
func figures(b *pageBound) [4]int64 { return [4]int64{b.Pages, b.Distinct, b.RawBytes, b.Bytes} }

// TestPrivateOf: private memory is RssAnon plus RssShmem of a
// /proc/PID/status text, file-backed pages left out.
func TestPrivateOf(t *testing.T) {
	status := "Name:\tbackup-cli\nVmRSS:\t  1130000 kB\nRssAnon:\t   40000 kB\nRssFile:\t 1089000 kB\nRssShmem:\t    1000 kB\n"
	if got, want := privateOf(status), int64(41000)<<10; got != want {
		t.Fatalf("privateOf = %d, want %d", got, want)
	}
	if got := privateOf("Name:\tx\n"); got != 0 {
		t.Fatalf("privateOf without Rss lines = %d", got)
	}
}
