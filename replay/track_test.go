package replay

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTrackingFindsEveryChangedPage replays the second half of a trace onto
// the first half's database with and without tracking: both give the same
// database, and every page that differs from the file before the replay is
// among the tracked ones (with tiny WAL harvests, so that checkpoints in
// the middle are covered too).
func TestTrackingFindsEveryChangedPage(t *testing.T) {
	old := walHarvestBytes
	walHarvestBytes = 16 << 10
	t.Cleanup(func() { walHarvestBytes = old })
	recs := mustRecords(t, "../testdata/trace1.jsonl")
	for _, wal := range []bool{false, true} {
		t.Run(map[bool]string{false: "rollback", true: "wal"}[wal], func(t *testing.T) {
			dir := t.TempDir()
			plain := filepath.Join(dir, "plain.sqlite3")
			if wal {
				plainExec(t, plain, "PRAGMA journal_mode = WAL")
			}
			d, err := Open(plain)
			if err != nil {
				t.Fatal(err)
			}
			mustApply(t, d, recs[:len(recs)/2]...)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			before, err := os.ReadFile(plain)
			if err != nil {
				t.Fatal(err)
			}
			tracked := filepath.Join(dir, "tracked.sqlite3")
			if err := os.WriteFile(tracked, before, 0o600); err != nil {
				t.Fatal(err)
			}
			d = mustOpen(t, plain)
			mustApply(t, d, recs[len(recs)/2:]...)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			tr, err := OpenTracking(tracked)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs[len(recs)/2:] {
				if err := tr.ApplyTracked(t.Context(), r); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok := tr.ChangedPages(); ok {
				t.Fatal("ChangedPages before Close")
			}
			if err := tr.Close(); err != nil {
				t.Fatal(err)
			}
			pages, ok := tr.ChangedPages()
			if !ok || len(pages) == 0 || pages[0] != 1 {
				t.Fatalf("ChangedPages = %v, %v", pages, ok)
			}
			checkTracked(t, before, tracked, pages, wal)
			if diff, err := Diff(plain, tracked); err != nil || len(diff) > 0 {
				t.Fatalf("tracked replay differs from the plain one: %v\n%s", err, strings.Join(diff, "\n"))
			}
			if err := IntegrityCheck(tracked); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// checkTracked checks that every page of the file at path that differs
// from before is in pages, that no -wal, -shm or -journal file is left and
// that the journal mode is the one before.
func checkTracked(t *testing.T, before []byte, path string, pages []uint32, wal bool) {
	t.Helper()
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const ps = 4096
	changed := 0
	for off := 0; off < min(len(before), len(after)); off += ps {
		if !bytes.Equal(before[off:off+ps], after[off:off+ps]) {
			changed++
			if _, found := slices.BinarySearch(pages, uint32(off/ps+1)); !found {
				t.Errorf("page %d changed but is not tracked (tracked: %v)", off/ps+1, pages)
			}
		}
	}
	if changed < 2 {
		t.Fatalf("only %d pages changed: the test replays too little", changed)
	}
	for _, s := range []string{"-journal", "-wal", "-shm"} {
		if _, err := os.Stat(path + s); err == nil {
			t.Errorf("%s left behind", s)
		}
	}
	want := byte(1)
	if wal {
		want = 2
	}
	if after[18] != want || after[19] != want {
		t.Fatalf("file format bytes %d %d, want %d", after[18], after[19], want)
	}
}

// TestTrackingOnlyWhenOpenedSo: a DB from Open has no changed pages.
func TestTrackingOnlyWhenOpenedSo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.sqlite3")
	plainExec(t, path, "CREATE TABLE t (x)")
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.ApplyTracked(t.Context(), rec(1, "INSERT INTO t VALUES (1)")); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if p, ok := d.ChangedPages(); ok || p != nil {
		t.Fatalf("ChangedPages = %v, %v", p, ok)
	}
}

// FuzzReadWAL: the WAL is read back from disk; any bytes give page numbers
// or an error, never a panic, and at most one page per frame.
func FuzzReadWAL(f *testing.F) {
	hdr := make([]byte, walHeaderSize+2*(walFrameHeaderSize+512))
	copy(hdr, []byte{0x37, 0x7f, 0x06, 0x82, 0, 0x2d, 0xe2, 0x18, 0, 0, 2, 0})
	hdr[walHeaderSize+3] = 5
	f.Add(hdr)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "x-wal")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		tr := &tracker{walPath: path, pages: map[uint32]struct{}{}}
		if err := tr.readWAL(); err != nil {
			return
		}
		if frames := max(0, len(b)-walHeaderSize)/(walFrameHeaderSize+512) + 1; len(tr.pages) > frames {
			t.Fatalf("%d pages from %d bytes", len(tr.pages), len(b))
		}
	})
}
