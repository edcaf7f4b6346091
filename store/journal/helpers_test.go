package journal

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func mustOpen(t testing.TB, dir string, opts Options) *Journal {
	t.Helper()
	j, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return j
}

func mustClose(t testing.TB, j *Journal) {
	t.Helper()
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// mkRec returns a change like lightningd's: an insert of size bytes and the
// data_version bump.
func mkRec(version uint32, size int) Record {
	return Record{
		Version: version,
		Time:    time.Unix(1700000000, int64(version)*1000),
		Statements: []string{
			fmt.Sprintf("INSERT INTO datastore (key, data) VALUES ('k%d', x'%s');", version, strings.Repeat("ab", size/2)),
			fmt.Sprintf("UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = %d", version-1),
		},
	}
}

func pragma(version uint32) Record {
	return Record{Version: version, Time: time.Unix(1700000000, 0), Statements: []string{"PRAGMA foreign_keys = OFF;"}}
}

func mustAppend(t testing.TB, j *Journal, r Record) Record {
	t.Helper()
	got, err := j.Append(r)
	if err != nil {
		t.Fatalf("Append(version %d): %v", r.Version, err)
	}
	return got
}

func sameRecord(a, b Record) bool {
	return a.Seq == b.Seq && a.Version == b.Version && a.Time.Equal(b.Time) && slices.Equal(a.Statements, b.Statements)
}

func describe(rs []Record) string {
	var s []string
	for _, r := range rs {
		s = append(s, fmt.Sprintf("%d/v%d/%d", r.Seq, r.Version, len(r.Statements)))
	}
	return "[" + strings.Join(s, " ") + "]"
}

func checkRecords(t testing.TB, what string, got, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d records %s, want %d %s", what, len(got), describe(got), len(want), describe(want))
	}
	for i := range got {
		if !sameRecord(got[i], want[i]) {
			t.Fatalf("%s: record %d: got %s, want %s", what, i, describe(got[i:i+1]), describe(want[i:i+1]))
		}
	}
}

func collect(t testing.TB, j *Journal, after uint64) []Record {
	t.Helper()
	var out []Record
	if err := j.Records(after, func(r Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatalf("Records(%d): %v", after, err)
	}
	return out
}

func collectRead(t testing.TB, dir string, after uint64) []Record {
	t.Helper()
	var out []Record
	if err := Read(dir, after, func(r Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatalf("Read(%d): %v", after, err)
	}
	return out
}

// checkAll compares Records, Read, Last and NextSeq with want (the logical
// records, all seqs from 1 on) for every afterSeq in afters.
func checkAll(t testing.TB, j *Journal, dir string, want []Record, nextSeq uint64) {
	t.Helper()
	checkRecords(t, "Records(0)", collect(t, j, 0), want)
	checkRecords(t, "Read(0)", collectRead(t, dir, 0), want)
	for _, w := range want {
		var tail []Record
		for _, x := range want {
			if x.Seq > w.Seq {
				tail = append(tail, x)
			}
		}
		checkRecords(t, fmt.Sprintf("Records(%d)", w.Seq), collect(t, j, w.Seq), tail)
	}
	last, ok := j.Last()
	if ok != (len(want) > 0) || (ok && !sameRecord(last, want[len(want)-1])) {
		t.Fatalf("Last() = %s, %v; want the last of %s", describe([]Record{last}), ok, describe(want))
	}
	if got := j.NextSeq(); got != nextSeq {
		t.Fatalf("NextSeq() = %d, want %d", got, nextSeq)
	}
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
