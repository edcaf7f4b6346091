package journal

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzSegment feeds arbitrary bytes as the only segment of a journal (after
// a valid header when mode is even, raw otherwise). Read and Open must not
// panic or hang and must agree: both fail, or both accept the same records.
// When Open accepts, the repaired journal must take an append and reopen
// cleanly with exactly the records plus the new one.
func FuzzSegment(f *testing.F) {
	dir := f.TempDir()
	j := mustOpen(f, dir, Options{SegmentSize: 1024})
	mustAppend(f, j, mkRec(1, 40))
	mustAppend(f, j, pragma(1))
	if _, err := j.Replace(mkRec(1, 10)); err != nil {
		f.Fatal(err)
	}
	mustAppend(f, j, mkRec(2, 30))
	mustClose(f, j)
	seg := readFile(f, segFiles(f, dir)[0])
	end := len(seg)
	for end > headerSize && seg[end-1] == 0 {
		end--
	}
	body := seg[headerSize:end]
	f.Add(byte(0), body)
	f.Add(byte(0), body[:len(body)-7])         // torn last record
	f.Add(byte(0), append(body[:60:60], 0, 0)) // torn first record
	f.Add(byte(1), seg[:end])
	f.Add(byte(1), seg[:20])
	f.Add(byte(0), []byte{})

	f.Fuzz(func(t *testing.T, mode byte, body []byte) {
		dir := t.TempDir()
		file := body
		if mode&1 == 0 {
			file = append(encodeHeader(1), body...)
		}
		if err := os.WriteFile(filepath.Join(dir, segName(1)), file, 0o600); err != nil {
			t.Fatal(err)
		}
		var read []Record
		rerr := Read(dir, 0, func(r Record) error { read = append(read, r); return nil })
		j, oerr := Open(dir, Options{SegmentSize: 512})
		if (rerr == nil) != (oerr == nil) {
			if j != nil {
				j.Close()
			}
			t.Fatalf("Read and Open disagree: Read: %v; Open: %v", rerr, oerr)
		}
		if oerr != nil {
			return
		}
		got := collect(t, j, 0)
		checkRecords(t, "Records after Open vs Read", got, read)
		next := j.NextSeq()
		var version uint32 = 1
		if last, ok := j.Last(); ok {
			version = last.Version + 1
		}
		r := mustAppend(t, j, mkRec(version, 10))
		if r.Seq != next {
			t.Fatalf("append got seq %d, want %d", r.Seq, next)
		}
		mustClose(t, j)

		j = mustOpen(t, dir, Options{SegmentSize: 512})
		defer mustClose(t, j)
		if j.Recovered() != 0 {
			t.Fatalf("reopen after repair recovered %d bytes", j.Recovered())
		}
		checkRecords(t, "after append and reopen", collect(t, j, 0), append(got, r))
	})
}
