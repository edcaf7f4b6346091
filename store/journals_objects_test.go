package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/journal"
	"github.com/clnbackup/backup/store/local"
)

// The journals in a bucket are tested here over a local directory backend
// (they use nothing but the backend.Backend contract); the s3:// end-to-end
// tests (plugin, backup-cli) run them on a real S3 server.

func newTestObjectJournals(t *testing.T) (*objectJournals, backend.Backend) {
	t.Helper()
	be, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newObjectJournals(be, 2*time.Second), be
}

func rec(v uint32, stmt string) journal.Record {
	return journal.Record{Version: v, Statements: []string{stmt}}
}

func collect(t *testing.T, read func(uint64, func(journal.Record) error) error, after uint64) []string {
	t.Helper()
	var got []string
	if err := read(after, func(r journal.Record) error {
		got = append(got, fmt.Sprintf("%d:%d:%s", r.Seq, r.Version, r.Statements[0]))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestObjectJournal: appends and a replace read back resolved, from the open
// journal and from the bucket; a reopen continues the numbering; Trim
// deletes what a manifest covers but keeps the newest record.
func TestObjectJournal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, be := newTestObjectJournals(t)
	j, err := js.OpenJournal(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	for v := uint32(1); v <= 4; v++ {
		if r, err := j.Append(rec(v, fmt.Sprint("a", v))); err != nil || r.Seq != uint64(v) {
			t.Fatalf("append %d: %+v %v", v, r, err)
		}
	}
	if _, err := j.Replace(rec(3, "x")); err == nil {
		t.Fatal("replace of a version that is not the last: accepted")
	}
	if _, err := j.Replace(rec(4, "b4")); err != nil {
		t.Fatal(err)
	}
	want := []string{"1:1:a1", "2:2:a2", "3:3:a3", "5:4:b4"}
	if got := collect(t, j.Records, 0); !slices.Equal(got, want) {
		t.Fatalf("records = %v, want %v", got, want)
	}
	read := func(after uint64, fn func(journal.Record) error) error {
		return js.ReadJournal(ctx, "alice", after, fn)
	}
	if got := collect(t, read, 1); !slices.Equal(got, want[1:]) {
		t.Fatalf("read from the bucket = %v, want %v", got, want[1:])
	}
	if err := j.Trim(3); err != nil {
		t.Fatal(err)
	}
	if err := js.ReadJournal(ctx, "alice", 2, func(journal.Record) error { return nil }); !errors.Is(err, journal.ErrTrimmed) {
		t.Fatalf("read after trim from seq 2: %v, want ErrTrimmed", err)
	}
	if err := j.Trim(10); err != nil {
		t.Fatal(err)
	}
	n := 0
	be.List(ctx, recordPrefix("alice"), func(backend.Info) error { n++; return nil })
	if n != 1 {
		t.Fatalf("%d record objects after trimming everything, want the newest only", n)
	}
	j.Close()
	if _, err := j.Append(rec(5, "c")); !errors.Is(err, journal.ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	j2, err := js.OpenJournal(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if last, ok := j2.Last(); !ok || last.Seq != 5 || j2.NextSeq() != 6 {
		t.Fatalf("reopened: last %+v next %d", last, j2.NextSeq())
	}
	if r, err := j2.Append(rec(5, "a5")); err != nil || r.Seq != 6 {
		t.Fatalf("append after reopen: %+v %v", r, err)
	}
	if held, err := js.CheckJournal(ctx, "alice"); !held || err != nil {
		t.Fatalf("check: %v %v", held, err)
	}
}

// TestObjectJournalTwoWriters: a writer that lost the node (another opened
// its journal and appended) is refused, never overwrites.
func TestObjectJournalTwoWriters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, _ := newTestObjectJournals(t)
	a, _ := js.OpenJournal(ctx, "n")
	b, _ := js.OpenJournal(ctx, "n")
	if _, err := a.Append(rec(1, "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Append(rec(1, "b")); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("second writer: %v, want ErrLeaseLost", err)
	}
	if _, err := b.Append(rec(2, "b")); err == nil {
		t.Fatal("a failed journal took another write")
	}
}

// lossyBackend stores a put but answers the first `lose` of them with an
// error, as a connection lost after the bucket stored the object does.
type lossyBackend struct {
	backend.Backend
	lose atomic.Int32
}

func (l *lossyBackend) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	err := l.Backend.PutIfAbsent(ctx, name, data)
	if l.lose.Add(-1) >= 0 {
		return fmt.Errorf("put %s: connection reset (stored: %v)", name, err)
	}
	return err
}

// TestObjectJournalRetryExactlyOnce: a record whose PUT was stored but whose
// answer was lost is retried and found stored: acknowledged once, stored
// once, the numbering unchanged.
func TestObjectJournalRetryExactlyOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, be := newTestObjectJournals(t)
	lossy := &lossyBackend{Backend: be}
	js := newObjectJournals(lossy, 5*time.Second)
	j, _ := js.OpenJournal(ctx, "n")
	lossy.lose.Store(2)
	r, err := j.Append(rec(1, "once"))
	if err != nil || r.Seq != 1 {
		t.Fatalf("append: %+v %v", r, err)
	}
	if r, err := j.Append(rec(2, "two")); err != nil || r.Seq != 2 {
		t.Fatalf("append: %+v %v", r, err)
	}
	want := []string{"1:1:once", "2:2:two"}
	read := func(after uint64, fn func(journal.Record) error) error { return js.ReadJournal(ctx, "n", after, fn) }
	if got := collect(t, read, 0); !slices.Equal(got, want) {
		t.Fatalf("records = %v, want %v", got, want)
	}
}

// TestObjectJournalDamage: a damaged record object and a missing record are
// reported as corruption, not skipped.
func TestObjectJournalDamage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, be := newTestObjectJournals(t)
	j, _ := js.OpenJournal(ctx, "n")
	for v := uint32(1); v <= 3; v++ {
		j.Append(rec(v, "s"))
	}
	data, _ := be.Get(ctx, recordName("n", 2), 0, -1)
	data[len(data)/2] ^= 1
	be.Delete(ctx, recordName("n", 2))
	be.PutIfAbsent(ctx, recordName("n", 2), data)
	if _, err := js.CheckJournal(ctx, "n"); !errors.Is(err, journal.ErrCorrupt) {
		t.Fatalf("check of a damaged record: %v", err)
	}
	// A record missing in the middle: the records before it count as
	// trimmed, so a reader that needs them is refused, never served a
	// journal with a hole.
	be.Delete(ctx, recordName("n", 2))
	if err := js.ReadJournal(ctx, "n", 0, func(journal.Record) error { return nil }); !errors.Is(err, journal.ErrTrimmed) {
		t.Fatalf("read across a missing record: %v, want ErrTrimmed", err)
	}
	j2, err := js.OpenJournal(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	if err := j2.Records(0, func(journal.Record) error { return nil }); !errors.Is(err, journal.ErrTrimmed) {
		t.Fatalf("records across a missing record: %v, want ErrTrimmed", err)
	}
	// The next trim deletes the record left before the gap.
	if err := j2.Trim(3); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Stat(ctx, recordName("n", 1)); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("record before the gap not trimmed: %v", err)
	}
	if got := collect(t, j2.Records, 2); len(got) != 1 {
		t.Fatalf("records after trim: %v", got)
	}
}

// FuzzDecodeRecordObject: bytes from a bucket never panic the decoder, and
// what decodes re-encodes to the same bytes.
func FuzzDecodeRecordObject(f *testing.F) {
	f.Add(encodeRecordObject(recordKindAppend, journal.Record{Seq: 7, Version: 3, Time: time.Unix(1, 2), Statements: []string{"INSERT 1"}}), uint64(7))
	f.Add(encodeRecordObject(recordKindRepl, journal.Record{Seq: 1, Version: 1}), uint64(1))
	f.Add([]byte("CLNJREC\x01a"), uint64(1))
	f.Fuzz(func(t *testing.T, data []byte, seq uint64) {
		r, kind, err := decodeRecordObject(data, seq)
		if err != nil {
			return
		}
		if again := encodeRecordObject(kind, r); string(again) != string(data) {
			t.Fatalf("decoded %+v does not re-encode to the input", r)
		}
	})
}

// TestObjectJournalStart: a journal started at a seq (an import) numbers on
// from it, keeps the numbering across a reopen, and a node with records is
// refused.
func TestObjectJournalStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js, _ := newTestObjectJournals(t)
	j, err := js.StartJournal(ctx, "imp", 403, "")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := j.Append(rec(9, "x")); err != nil || r.Seq != 403 {
		t.Fatalf("first record: %+v %v", r, err)
	}
	j2, err := js.OpenJournal(ctx, "imp")
	if err != nil || j2.NextSeq() != 404 {
		t.Fatalf("reopen: next %d, %v", j2.NextSeq(), err)
	}
	if _, err := js.StartJournal(ctx, "imp", 1, ""); err == nil {
		t.Fatal("started a journal over an existing one")
	}
	if err := js.ReadJournal(ctx, "imp", 402, func(journal.Record) error { return nil }); err != nil {
		t.Fatalf("read from the start: %v", err)
	}
}
