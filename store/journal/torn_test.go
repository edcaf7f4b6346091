package journal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pristine builds a journal of n records and returns its directory, the
// records, and the newest segment's path with the last record's extent.
func pristine(t *testing.T, segSize int64, n, size int) (dir string, want []Record, seg string, start, end int64) {
	t.Helper()
	dir = t.TempDir()
	j := mustOpen(t, dir, Options{SegmentSize: segSize})
	for i := range n {
		want = append(want, mustAppend(t, j, mkRec(uint32(i+1), size)))
	}
	end = j.off
	start = end - int64(len(encodeForTest(t, kindAppend, want[n-1])))
	mustClose(t, j)
	segs := segFiles(t, dir)
	return dir, want, segs[len(segs)-1], start, end
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeAt(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestTornTail cuts the last record at many points in several ways: Read
// stops before it without modifying anything, Open drops exactly that
// record, and the journal goes on from there.
func TestTornTail(t *testing.T) {
	t.Parallel()
	configs := []struct {
		name    string
		segSize int64
		n, size int
		newSeg  bool // the last record is the first of its segment
	}{
		{"last record mid-segment", 8192, 6, 300, false},
		{"last record first of a new segment", 1024, 3, 300, true},
	}
	damages := []struct {
		name string
		do   func(t *testing.T, seg string, start, c, end int64)
	}{
		{"truncate", func(t *testing.T, seg string, start, c, end int64) {
			if err := os.Truncate(seg, c); err != nil {
				t.Fatal(err)
			}
		}},
		{"zero from cut", func(t *testing.T, seg string, start, c, end int64) {
			writeAt(t, seg, c, make([]byte, end-c))
		}},
		{"garbage from cut", func(t *testing.T, seg string, start, c, end int64) {
			rng := rand.New(rand.NewPCG(1, uint64(c))) // the subtests run in parallel: one source each
			g := make([]byte, end-c)
			for i := range g {
				g[i] = byte(rng.Uint32())
			}
			writeAt(t, seg, c, g)
		}},
		{"zero up to cut", func(t *testing.T, seg string, start, c, end int64) {
			writeAt(t, seg, start, make([]byte, c-start))
		}},
	}
	for _, cfg := range configs {
		src, want, seg, start, end := pristine(t, cfg.segSize, cfg.n, cfg.size)
		if cfg.newSeg != (start == headerSize) {
			t.Fatalf("%s: last record at offset %d, want %d", cfg.name, start, headerSize)
		}
		for _, dmg := range damages {
			for c := start; c < end; c++ {
				if dmg.name == "zero up to cut" && c == start {
					continue // nothing damaged
				}
				if c-start > 40 && c < end-20 && (c-start)%17 != 0 {
					continue
				}
				t.Run(fmt.Sprintf("%s/%s/%d", cfg.name, dmg.name, c-start), func(t *testing.T) {
					t.Parallel()
					dir := copyDir(t, src)
					segPath := filepath.Join(dir, filepath.Base(seg))
					dmg.do(t, segPath, start, c, end)
					before := readFile(t, segPath)

					checkRecords(t, "Read", collectRead(t, dir, 0), want[:cfg.n-1])
					if !bytes.Equal(before, readFile(t, segPath)) {
						t.Fatal("Read modified the segment")
					}

					j := mustOpen(t, dir, Options{SegmentSize: cfg.segSize})
					checkRecords(t, "Records after repair", collect(t, j, 0), want[:cfg.n-1])
					if j.NextSeq() != uint64(cfg.n) {
						t.Fatalf("NextSeq() = %d, want %d", j.NextSeq(), cfg.n)
					}
					damaged := !bytes.Equal(before[start:min(end, int64(len(before)))], make([]byte, min(end, int64(len(before)))-start))
					if got := j.Recovered(); (got > 0) != damaged || got > end-start {
						t.Fatalf("Recovered() = %d with damaged=%v (record of %d bytes)", got, damaged, end-start)
					}
					r := mustAppend(t, j, mkRec(uint32(cfg.n), 50))
					mustClose(t, j)

					j = mustOpen(t, dir, Options{SegmentSize: cfg.segSize})
					defer mustClose(t, j)
					if j.Recovered() != 0 {
						t.Fatalf("second reopen recovered %d bytes", j.Recovered())
					}
					all := append(append([]Record(nil), want[:cfg.n-1]...), r)
					checkAll(t, j, dir, all, uint64(cfg.n+1))
				})
			}
		}
	}
}

// TestCorruption damages acknowledged records: Open and Read must refuse,
// naming the file, and Open must not modify anything.
func TestCorruption(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		segSize int64
		damage  func(t *testing.T, dir string, offs []int64) (file string)
		want    string // in the error message
	}{
		{"byte flipped in a middle record of the newest segment", 8192,
			func(t *testing.T, dir string, offs []int64) string {
				seg := segFiles(t, dir)[0]
				flip(t, seg, offs[2]+40)
				return seg
			}, "offset"},
		{"length of a middle record zeroed", 8192,
			func(t *testing.T, dir string, offs []int64) string {
				seg := segFiles(t, dir)[0]
				writeAt(t, seg, offs[3], make([]byte, 4))
				return seg
			}, "valid record"},
		{"byte flipped in an older segment", 1024,
			func(t *testing.T, dir string, offs []int64) string {
				seg := segFiles(t, dir)[0]
				flip(t, seg, headerSize+30)
				return seg
			}, "not the newest segment"},
		{"last record of an older segment cut", 1024,
			func(t *testing.T, dir string, offs []int64) string {
				seg := segFiles(t, dir)[1]
				b := readFile(t, seg)
				last := int64(bytes.LastIndexFunc(b, func(r rune) bool { return r != 0 }))
				writeAt(t, seg, last-5, make([]byte, 6))
				return seg
			}, "not the newest segment"},
		{"non-zero byte after the records of an older segment", 1024,
			func(t *testing.T, dir string, offs []int64) string {
				seg := segFiles(t, dir)[0]
				writeAt(t, seg, 1020, []byte{7})
				return seg
			}, "non-zero"},
		{"unknown format version", 8192,
			func(t *testing.T, dir string, offs []int64) string {
				seg := segFiles(t, dir)[0]
				writeAt(t, seg, 8, []byte{2})
				return seg
			}, "unknown segment format version 2"},
		{"header checksum", 8192,
			func(t *testing.T, dir string, offs []int64) string {
				seg := segFiles(t, dir)[0]
				writeAt(t, seg, 22, []byte{1})
				return seg
			}, "header checksum"},
		{"segment missing in the middle", 1024,
			func(t *testing.T, dir string, offs []int64) string {
				segs := segFiles(t, dir)
				if err := os.Remove(segs[2]); err != nil {
					t.Fatal(err)
				}
				return segs[3]
			}, "segment missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			j := mustOpen(t, dir, Options{SegmentSize: tc.segSize})
			var offs []int64
			for i := range 12 {
				offs = append(offs, j.off)
				mustAppend(t, j, mkRec(uint32(i+1), 200))
			}
			mustClose(t, j)
			file := filepath.Base(tc.damage(t, dir, offs))
			before := map[string][]byte{}
			for _, s := range segFiles(t, dir) {
				before[s] = readFile(t, s)
			}

			_, err := Open(dir, Options{SegmentSize: tc.segSize})
			t.Logf("Open: %v", err)
			if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open: %v; want an error naming %s and saying %q", err, file, tc.want)
			}
			// An unknown version is not damage; everything else is.
			if isVersion := strings.Contains(tc.name, "version"); errors.Is(err, ErrCorrupt) == isVersion {
				t.Fatalf("Open: %v: wraps ErrCorrupt = %v", err, !isVersion)
			}
			for s, b := range before {
				if !bytes.Equal(b, readFile(t, s)) {
					t.Fatalf("failed Open modified %s", s)
				}
			}
			err = Read(dir, 0, func(Record) error { return nil })
			if err == nil || !strings.Contains(err.Error(), file) {
				t.Fatalf("Read: %v; want an error naming %s", err, file)
			}
		})
	}
}

func flip(t testing.TB, path string, off int64) {
	t.Helper()
	b := readFile(t, path)
	writeAt(t, path, off, []byte{b[off] ^ 0x10})
}
