package journal

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestAppendReopen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		segSize  int64
		n        int
		size     int // bytes of the insert
		wantSegs int // minimum number of segment files after the first run
	}{
		{"default segment", 0, 40, 1500, 1},
		{"rollover", 1024, 40, 200, 8},
		{"records larger than a segment", 256, 6, 700, 6},
		{"mixed sizes", 512, 30, 0, 4}, // size varies, see below
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "journal", "node") // Open creates it
			j := mustOpen(t, dir, Options{SegmentSize: tc.segSize})
			if j.Recovered() != 0 || j.NextSeq() != 1 || j.Size() != 0 {
				t.Fatalf("new journal: recovered %d, next seq %d, size %d", j.Recovered(), j.NextSeq(), j.Size())
			}
			if _, ok := j.Last(); ok {
				t.Fatal("Last() on an empty journal: ok")
			}
			var want []Record
			var size int64
			add := func(j *Journal, i int) {
				sz := tc.size
				if sz == 0 {
					sz = (i * 97) % 900
				}
				in := mkRec(uint32(i+1), sz)
				got := mustAppend(t, j, in)
				if got.Seq != uint64(len(want)+1) || !sameRecord(got, Record{Seq: got.Seq, Version: in.Version, Time: in.Time, Statements: in.Statements}) {
					t.Fatalf("Append returned %s", describe([]Record{got}))
				}
				want = append(want, got)
				size += int64(len(encodeForTest(t, kindAppend, got)))
			}
			for i := range tc.n {
				add(j, i)
			}
			checkAll(t, j, dir, want, uint64(tc.n+1))
			if j.Size() != size {
				t.Fatalf("Size() = %d, want %d", j.Size(), size)
			}
			if n := len(segFiles(t, dir)); n < tc.wantSegs {
				t.Fatalf("%d segment files, want at least %d", n, tc.wantSegs)
			}
			mustClose(t, j)

			j = mustOpen(t, dir, Options{SegmentSize: tc.segSize})
			if j.Recovered() != 0 {
				t.Fatalf("clean reopen recovered %d bytes", j.Recovered())
			}
			checkAll(t, j, dir, want, uint64(tc.n+1))
			if j.Size() != size {
				t.Fatalf("Size() after reopen = %d, want %d", j.Size(), size)
			}
			for i := tc.n; i < tc.n+10; i++ {
				add(j, i)
			}
			mustClose(t, j)
			j = mustOpen(t, dir, Options{SegmentSize: tc.segSize})
			defer mustClose(t, j)
			checkAll(t, j, dir, want, uint64(tc.n+11))
		})
	}
}

func encodeForTest(t testing.TB, kind byte, r Record) []byte {
	t.Helper()
	nanos, _ := encodeTime(r.Time)
	b, err := appendFrame(nil, kind, &r, nanos)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAppendFields(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{SegmentSize: 4096})
	defer mustClose(t, j)

	before := time.Now()
	r := mustAppend(t, j, Record{Seq: 99, Version: 7, Statements: []string{"UPDATE t SET a='é ✓ \"q\" ''x'''"}})
	if r.Seq != 1 {
		t.Fatalf("Append ignored its own numbering: seq %d", r.Seq)
	}
	if r.Time.Before(before.Add(-time.Second)) || r.Time.After(time.Now().Add(time.Second)) {
		t.Fatalf("zero Time not set to now: %v", r.Time)
	}
	mustAppend(t, j, Record{Version: 8, Time: time.Unix(1, 2)}) // no statements
	if _, err := j.Append(Record{Version: 9, Time: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}); err == nil {
		t.Fatal("Append with a time beyond 2262 succeeded")
	}
	big := Record{Version: 9, Statements: []string{strings.Repeat("x", MaxPayload)}}
	if _, err := j.Append(big); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("Append of a record over MaxPayload: %v", err)
	}
	// Rejected records leave the journal usable.
	r3 := mustAppend(t, j, mkRec(9, 10))
	if r3.Seq != 3 {
		t.Fatalf("seq after rejected appends: %d", r3.Seq)
	}
	got := collectRead(t, dir, 0)
	if len(got) != 3 || got[0].Statements[0] != "UPDATE t SET a='é ✓ \"q\" ''x'''" || len(got[1].Statements) != 0 || !got[1].Time.Equal(time.Unix(1, 2)) {
		t.Fatalf("read back %s", describe(got))
	}
}

func TestFirstSeqAndClosed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{SegmentSize: 4096, FirstSeq: 1000})
	if r := mustAppend(t, j, mkRec(1, 10)); r.Seq != 1000 {
		t.Fatalf("first seq %d, want 1000", r.Seq)
	}
	if err := j.Records(0, func(Record) error { return nil }); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("Records(0) of a journal starting at 1000: %v, want ErrTrimmed", err)
	}
	mustClose(t, j)
	if err := j.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := j.Append(mkRec(2, 10)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if err := j.Records(0, func(Record) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Records after Close: %v", err)
	}
	j = mustOpen(t, dir, Options{SegmentSize: 4096, FirstSeq: 5}) // ignored: exists
	defer mustClose(t, j)
	if j.NextSeq() != 1001 {
		t.Fatalf("NextSeq after reopen = %d, want 1001", j.NextSeq())
	}
}

func TestLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{SegmentSize: 4096})
	_, err := Open(dir, Options{SegmentSize: 4096})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open: %v, want ErrLocked naming %s", err, dir)
	}
	mustClose(t, j)
	j = mustOpen(t, dir, Options{SegmentSize: 4096})
	mustClose(t, j)
}

func TestReplace(t *testing.T) {
	t.Parallel()
	type step struct {
		replace bool
		rec     Record
	}
	a := func(r Record) step { return step{false, r} }
	rp := func(r Record) step { return step{true, r} }
	v := func(version uint32, tag string) Record {
		r := mkRec(version, 20)
		r.Statements = append(r.Statements, tag)
		return r
	}
	tests := []struct {
		name    string
		segSize int64
		steps   []step
		want    []string // tags of the logical records' last statements
	}{
		{"change then pragma then next", 4096,
			[]step{a(v(1, "v1")), a(pragma(1)), a(v(2, "v2")), rp(v(2, "v2'"))},
			[]string{"v1", "PRAGMA foreign_keys = OFF;", "v2'"}},
		{"change and its pragma replaced", 4096,
			[]step{a(v(4, "v4")), a(v(5, "v5")), a(pragma(5)), rp(v(5, "v5'"))},
			[]string{"v4", "v5'"}},
		{"only record replaced", 4096,
			[]step{a(v(5, "v5")), a(pragma(5)), rp(v(5, "v5'"))},
			[]string{"v5'"}},
		{"replaced twice then continued", 4096,
			[]step{a(v(1, "v1")), a(v(2, "v2")), rp(v(2, "v2'")), rp(v(2, "v2''")), a(pragma(2)), a(v(3, "v3"))},
			[]string{"v1", "v2''", "PRAGMA foreign_keys = OFF;", "v3"}},
		{"group across segments", 160,
			[]step{a(v(1, "v1")), a(v(2, "v2")), a(pragma(2)), a(pragma(2)), a(pragma(2)), rp(v(2, "v2'")), a(v(3, "v3"))},
			[]string{"v1", "v2'", "v3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			j := mustOpen(t, dir, Options{SegmentSize: tc.segSize})
			var want []Record
			for _, s := range tc.steps {
				if !s.replace {
					want = append(want, mustAppend(t, j, s.rec))
					continue
				}
				r, err := j.Replace(s.rec)
				if err != nil {
					t.Fatalf("Replace(v%d): %v", s.rec.Version, err)
				}
				for len(want) > 0 && want[len(want)-1].Version == r.Version {
					want = want[:len(want)-1]
				}
				want = append(want, r)
			}
			var tags []string
			for _, r := range want {
				tags = append(tags, r.Statements[len(r.Statements)-1])
			}
			if strings.Join(tags, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("model gives %q, test expects %q", tags, tc.want)
			}
			next := uint64(len(tc.steps) + 1)
			checkAll(t, j, dir, want, next)
			// Resuming after any physical seq never yields a replaced record.
			for after := uint64(0); after < next; after++ {
				var tail []Record
				for _, r := range want {
					if r.Seq > after {
						tail = append(tail, r)
					}
				}
				checkRecords(t, "Records after physical seq", collect(t, j, after), tail)
			}
			last, _ := j.Last()
			if _, err := j.Replace(Record{Version: last.Version + 1}); err == nil {
				t.Fatal("Replace with a version other than the last one's succeeded")
			}
			mustClose(t, j)
			j = mustOpen(t, dir, Options{SegmentSize: tc.segSize})
			defer mustClose(t, j)
			checkAll(t, j, dir, want, next)
		})
	}
	t.Run("empty journal", func(t *testing.T) {
		t.Parallel()
		j := mustOpen(t, t.TempDir(), Options{SegmentSize: 4096})
		defer mustClose(t, j)
		if _, err := j.Replace(mkRec(1, 1)); err == nil {
			t.Fatal("Replace on an empty journal succeeded")
		}
	})
}

func TestTrim(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := Options{SegmentSize: 1024}
	j := mustOpen(t, dir, opts)
	var want []Record
	for i := range 60 {
		want = append(want, mustAppend(t, j, mkRec(uint32(i+1), 150)))
	}
	nseg := len(segFiles(t, dir))
	size := j.Size()
	if err := j.Trim(30); err != nil {
		t.Fatal(err)
	}
	after := segFiles(t, dir)
	if len(after) >= nseg {
		t.Fatalf("Trim(30) kept all %d segments", nseg)
	}
	first, _ := parseSegName(filepath.Base(after[0]))
	if first > 31 {
		t.Fatalf("Trim(30) removed records after 30: oldest segment starts at %d", first)
	}
	if j.Size() >= size {
		t.Fatalf("Size() %d not below %d after Trim", j.Size(), size)
	}
	checkRecords(t, "Records(30)", collect(t, j, 30), want[30:])
	checkRecords(t, "Read(30)", collectRead(t, dir, 30), want[30:])
	if err := j.Records(0, func(Record) error { return nil }); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("Records(0) after Trim: %v, want ErrTrimmed", err)
	}
	if err := Read(dir, 0, func(Record) error { return nil }); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("Read(0) after Trim: %v, want ErrTrimmed", err)
	}
	if err := j.Trim(1 << 40); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n != 1 {
		t.Fatalf("Trim(all) left %d segments, want the newest only", n)
	}
	if last, ok := j.Last(); !ok || last.Seq != 60 {
		t.Fatalf("Last() after Trim: %v %v", last.Seq, ok)
	}
	mustClose(t, j)
	j = mustOpen(t, dir, opts)
	defer mustClose(t, j)
	if r := mustAppend(t, j, mkRec(61, 10)); r.Seq != 61 {
		t.Fatalf("seq after Trim and reopen: %d, want 61", r.Seq)
	}
	if got := collect(t, j, 60); len(got) != 1 || got[0].Seq != 61 {
		t.Fatalf("Records(60) = %s", describe(got))
	}
}

// A crash between creating a segment and writing its first record leaves an
// empty newest segment: Trim must keep the segment holding the last record,
// and a record bigger than a segment replaces the empty one.
func TestEmptyNewestSegment(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	opts := Options{SegmentSize: 512}
	j := mustOpen(t, dir, opts)
	var want []Record
	for i := range 3 {
		want = append(want, mustAppend(t, j, mkRec(uint32(i+1), 100)))
	}
	mustClose(t, j)
	tmp := filepath.Join(dir, "x.tmp")
	f, err := preallocate(tmp, 512)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := installSegment(dir, f, tmp, 4); err != nil {
		t.Fatal(err)
	}
	f.Close()

	j = mustOpen(t, dir, opts)
	defer func() { mustClose(t, j) }()
	checkAll(t, j, dir, want, 4)
	if err := j.Trim(100); err != nil {
		t.Fatal(err)
	}
	if _, ok := j.Last(); !ok {
		t.Fatal("Trim removed the last record")
	}
	segs := segFiles(t, dir)
	if len(segs) != 2 {
		t.Fatalf("after Trim: %d segments, want the last record's and the empty newest", len(segs))
	}
	checkRecords(t, "Read after Trim", collectRead(t, dir, 2), want[2:])
	nseg := len(segFiles(t, dir))
	want = append(want, mustAppend(t, j, mkRec(4, 2000)))
	if n := len(segFiles(t, dir)); n != nseg {
		t.Fatalf("big record into an empty newest segment: %d segments, want %d", n, nseg)
	}
	want = append(want, mustAppend(t, j, mkRec(5, 10)))
	checkRecords(t, "Records(2)", collect(t, j, 2), want[2:])
	checkRecords(t, "Read(2)", collectRead(t, dir, 2), want[2:])
	mustClose(t, j)
	j = mustOpen(t, dir, opts)
	checkRecords(t, "Records(2) after reopen", collect(t, j, 2), want[2:])
}

// Records runs while another goroutine appends (rolling over segments) and
// a third trims; each call sees a gap-free prefix of what was appended.
func TestRecordsConcurrentWithAppend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{SegmentSize: 2048})
	defer mustClose(t, j)
	const n = 400
	var appended, trimmed atomic.Uint64
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(3)
	go func() {
		defer wg.Done()
		for i := range n {
			r, err := j.Append(mkRec(uint32(i+1), 100+i%300))
			if err != nil {
				errc <- err
				return
			}
			appended.Store(r.Seq)
		}
	}()
	go func() {
		defer wg.Done()
		for appended.Load() < n {
			if a := appended.Load(); a > 100 {
				if err := j.Trim(a - 100); err != nil {
					errc <- err
					return
				}
				trimmed.Store(a - 100)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			done := appended.Load() == n
			after := trimmed.Load()
			min := appended.Load()
			next := after + 1
			err := j.Records(after, func(r Record) error {
				if r.Seq != next || r.Version != uint32(r.Seq) {
					return errors.New("gap or disorder in Records")
				}
				next++
				return nil
			})
			if errors.Is(err, ErrTrimmed) {
				continue // trimmed between reading the mark and the call
			}
			if err != nil {
				errc <- err
				return
			}
			if next-1 < min {
				errc <- errors.New("Records missed acknowledged records")
				return
			}
			_ = j.Size()
			_, _ = j.Last()
			if done {
				return
			}
		}
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

func TestOpenRejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Open(dir, Options{SegmentSize: 10}); err == nil {
		t.Fatal("tiny segment size accepted")
	}
	if err := os.WriteFile(filepath.Join(dir, "nonsense.seg"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "nonsense.seg") {
		t.Fatalf("Open with a stray .seg file: %v", err)
	}
}

// Read, the lock-free view for tools, runs while the writer appends and
// rolls over: it sees a gap-free prefix and never reports damage.
func TestReadConcurrentWithAppend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j := mustOpen(t, dir, Options{SegmentSize: 4096})
	defer mustClose(t, j)
	const n = 300
	var appended atomic.Uint64
	done := make(chan error, 1)
	go func() {
		for i := range n {
			r, err := j.Append(mkRec(uint32(i+1), 50+(i*37)%800))
			if err != nil {
				done <- err
				return
			}
			appended.Store(r.Seq)
		}
		done <- nil
	}()
	for finished := false; !finished; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		min := appended.Load()
		next := uint64(1)
		err := Read(dir, 0, func(r Record) error {
			if r.Seq != next {
				return errors.New("gap in Read")
			}
			next++
			return nil
		})
		if err != nil {
			t.Fatalf("Read during appends: %v", err)
		}
		if next-1 < min {
			t.Fatalf("Read returned up to seq %d, %d were acknowledged before", next-1, min)
		}
	}
}
