package journal

import (
	"os"
	"testing"
)

// segSizes returns the sizes of the journal's segment files, oldest first.
func segSizes(t *testing.T, dir string) []int64 {
	t.Helper()
	var sizes []int64
	for _, p := range segFiles(t, dir) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, fi.Size())
	}
	return sizes
}

// TestAdaptiveSegments checks the default sizing: the first segment is
// MinSegmentSize; segments grow while records pile up untrimmed; once Trim
// removes the sealed records new segments shrink back; every record stays
// readable across reopen; and a record larger than the spare still fits.
func TestAdaptiveSegments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{})
	if s := segSizes(t, dir); len(s) != 1 || s[0] != MinSegmentSize {
		t.Fatalf("first segment sizes %v, want [%d]", s, MinSegmentSize)
	}
	var want []Record
	v := uint32(0)
	add := func(n, size int) {
		for range n {
			v++
			want = append(want, mustAppend(t, j, mkRec(v, size)))
		}
	}
	add(80, 40000) // about 3.2 MB, never trimmed
	grown := segSizes(t, dir)
	if len(grown) < 3 {
		t.Fatalf("segments %v: want several", grown)
	}
	for i := 1; i < len(grown); i++ {
		if grown[i] < grown[i-1] {
			t.Fatalf("segment sizes %v shrink while nothing is trimmed", grown)
		}
	}
	if big := grown[len(grown)-1]; big < 1<<20 || big > DefaultSegmentSize {
		t.Fatalf("segment sizes %v: want growth to at least 1 MiB, at most %d", grown, DefaultSegmentSize)
	}
	checkAll(t, j, dir, want, uint64(v)+1)

	// Seal everything (as a compaction does) and go on writing: the next
	// segments shrink to the journal's new use.
	if err := j.Trim(want[len(want)-1].Seq); err != nil {
		t.Fatal(err)
	}
	var newest []int64
	var trimmed uint64
	for range 60 {
		add(10, 40000)
		trimmed = want[len(want)-2].Seq
		if err := j.Trim(trimmed); err != nil {
			t.Fatal(err)
		}
		s := segSizes(t, dir)
		if n := s[len(s)-1]; len(newest) == 0 || newest[len(newest)-1] != n {
			newest = append(newest, n)
		}
		if s[len(s)-1] <= 512<<10 {
			break
		}
	}
	if n := newest[len(newest)-1]; n > 512<<10 {
		t.Fatalf("newest segment sizes %v after trims (grown to %v): want them to shrink to 512 KiB or less", newest, grown)
	}
	// A record larger than any spare gets a segment of its own.
	add(1, 3<<20)
	mustClose(t, j)
	j = mustOpen(t, dir, Options{})
	defer mustClose(t, j)
	kept := want[len(want)-2:]
	checkRecords(t, "after reopen", collect(t, j, trimmed), kept)
	add(10, 4000)
	checkRecords(t, "after reopen and appends", collect(t, j, trimmed), want[len(want)-12:])
}
