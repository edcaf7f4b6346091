package legacy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
)

const realV1 = "../testdata/legacy-v1.dbak"

func mustOpenFile(t *testing.T, path string) *File {
	t.Helper()
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func collect(t *testing.T, f *File) []Entry {
	t.Helper()
	var out []Entry
	if err := f.Entries(func(e Entry) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// The real file written by the Python plugin: 402 changes, versions 1..400,
// the two PRAGMA-only hooks repeating versions 1 and 2, a header that
// matches the file exactly.
func TestRealV1File(t *testing.T) {
	t.Parallel()
	f := mustOpenFile(t, realV1)
	want := Header{FileVersion: 1, Version: 400, OffsetHead: 145989, PrevVersion: 399, OffsetPrev: 145785, VersionCount: 402}
	if h := f.Header(); h != want {
		t.Fatalf("header %+v, want %+v", h, want)
	}
	es := collect(t, f)
	if len(es) != 402 {
		t.Fatalf("%d entries, want 402", len(es))
	}
	if e := es[0]; e.Offset != 512 || e.Version != 1 || e.Kind != Change || len(e.Statements) != 211 ||
		e.Statements[0] != "CREATE TABLE version (version INTEGER)" {
		t.Fatalf("first entry: offset %d version %d kind %v, %d statements", e.Offset, e.Version, e.Kind, len(e.Statements))
	}
	if e := es[1]; e.Version != 1 || len(e.Statements) != 1 || e.Statements[0] != "PRAGMA foreign_keys = OFF;" {
		t.Fatalf("second entry: %+v", e)
	}
	if e := es[401]; int64(e.Offset) != int64(want.OffsetPrev) || e.End() != int64(want.OffsetHead) || e.Version != 400 {
		t.Fatalf("last entry: offset %d end %d version %d", e.Offset, e.End(), e.Version)
	}
	for i := 1; i < len(es); i++ {
		if es[i].Offset != es[i-1].End() {
			t.Fatalf("entry %d at %d, previous ends at %d", i, es[i].Offset, es[i-1].End())
		}
	}
	if !Detect(realV1) {
		t.Fatal("Detect(real v1 file) = false")
	}
}

func TestEntriesStopsAtHeaderVersion(t *testing.T) {
	t.Parallel()
	w := newPyWriter()
	w.change(1, schema()...)
	w.change(2, row(2, "a")...)
	w.snapshot(3, []byte("SQLite format 3\x00rest of the file"))
	// The plugin died after appending version 4 but before the header.
	w.appendEntry(4, Change, []byte(strings.Join(row(4, "b"), "\x00")))
	f := mustOpenFile(t, w.file(t))
	es := collect(t, f)
	if len(es) != 3 || es[2].Kind != Snapshot || es[2].Version != 3 || es[2].Statements != nil {
		t.Fatalf("entries: %+v", es)
	}
	got, err := io.ReadAll(es[2].Snapshot)
	if err != nil || string(got) != "SQLite format 3\x00rest of the file" {
		t.Fatalf("snapshot payload %q, %v", got, err)
	}
	if es[1].Statements[1] != bump(2) {
		t.Fatalf("statements %q", es[1].Statements)
	}

	// An error from the callback stops the walk and comes back as is.
	stop := errors.New("stop")
	n := 0
	if err := f.Entries(func(Entry) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("Entries returned %v after %d calls", err, n)
	}
}

func TestEmptyBackup(t *testing.T) {
	t.Parallel()
	f := mustOpenFile(t, newPyWriter().file(t))
	if es := collect(t, f); len(es) != 0 {
		t.Fatalf("%d entries in an empty backup", len(es))
	}
}

// A torn entry after the header's head (the plugin died while appending) is
// not an error: it was never acknowledged.
func TestTornTailIgnored(t *testing.T) {
	t.Parallel()
	w := newPyWriter()
	w.change(1, schema()...)
	w.change(2, row(2, "a")...)
	data := append(w.bytes(), 0, 0, 1, 0, 0, 0, 0, 3, 1, 'I', 'N')
	f := mustOpenFile(t, writeTemp(t, data))
	if es := collect(t, f); len(es) != 2 {
		t.Fatalf("%d entries", len(es))
	}
	data = append(w.bytes(), 0, 0)
	f = mustOpenFile(t, writeTemp(t, data))
	if es := collect(t, f); len(es) != 2 {
		t.Fatalf("%d entries", len(es))
	}
}

func putU32(data []byte, off int, v uint32) []byte {
	binary.BigEndian.PutUint32(data[off:], v)
	return data
}

func TestFormatErrors(t *testing.T) {
	t.Parallel()
	real, err := os.ReadFile(realV1)
	if err != nil {
		t.Fatal(err)
	}
	w := newPyWriter()
	w.change(1, schema()...)
	w.change(2, row(2, "a")...)
	small := w.bytes()
	secondEntry := HeaderSize + EntryHeaderSize + len(strings.Join(schema(), "\x00"))

	for _, tc := range []struct {
		name string
		data []byte
		open bool // the error comes from OpenFile
		want string
	}{
		{"truncated", real[:len(real)-10], true, "truncated: the header says entries end at offset 145989 but the file has 145979 bytes"},
		{"shorter than the header", real[:300], true, "300 bytes, shorter than the 512-byte header"},
		{"bad file_version", putU32(bytes.Clone(real), 0, 2), true, "unknown file_version 2"},
		{"offset_head inside the header", putU32(bytes.Clone(small), 12, 100), true, "offset_head 100 is inside the header"},
		{"offset_prev outside", putU32(bytes.Clone(small), 24, 1<<30), true, "offset_prev 1073741824 is outside"},
		{"length larger than the file", putU32(bytes.Clone(small), secondEntry, 0xfffffff0), false,
			"entry at offset " + uitoa(uint32(secondEntry)) + ": length 4294967280 is larger than the"},
		{"length one byte too long", putU32(bytes.Clone(small), secondEntry, uint32(len(small)-secondEntry-EntryHeaderSize+1)), false,
			"entry at offset " + uitoa(uint32(secondEntry)) + ": length"},
		{"unknown entry type", func() []byte { d := bytes.Clone(small); d[secondEntry+8] = 7; return d }(), false,
			"unknown entry type 7"},
		{"no entry with the header's version", putU32(bytes.Clone(small), 4, 99), false,
			"no entry has the header's version 99 (2 entries read)"},
		{"header claims more than its version's entry", func() []byte {
			d := putU32(bytes.Clone(small), 4, 1) // version 1, head still after entry 2
			return d
		}(), false, "the header says entries end at offset"},
		{"invalid UTF-8", func() []byte {
			d := bytes.Clone(small)
			d[secondEntry+EntryHeaderSize] = 0xff
			return d
		}(), false, "not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeTemp(t, tc.data)
			f, err := OpenFile(path)
			if err == nil {
				defer f.Close()
				err = f.Entries(func(Entry) error { return nil })
			} else if !tc.open {
				t.Fatalf("OpenFile: %v", err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			if tc.open && Detect(path) {
				t.Fatal("Detect = true")
			}
		})
	}
}

// A length field near 4 GiB in a small file allocates nothing of that size.
// Serial: it counts the whole process's allocations (runtime.MemStats).
func TestHugeLengthAllocatesLittle(t *testing.T) {
	w := newPyWriter()
	w.change(1, schema()...)
	data := putU32(w.bytes(), HeaderSize, 0xffffffff)
	f, err := newFile("mem", bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := f.Entries(func(Entry) error { return nil }); err == nil {
		t.Fatal("no error")
	}
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 1<<20 {
		t.Fatalf("allocated %d bytes", d)
	}
}

func TestDetect(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	padded := newPyWriter().bytes()
	padded[100] = 1
	for _, tc := range []struct {
		name string
		data []byte
		want bool
	}{
		{"empty v1", newPyWriter().bytes(), true},
		{"nonzero padding", padded, false},
		{"sqlite file", func() []byte { d, _ := os.ReadFile("../testdata/legacy-v1-live.sqlite3"); return d }(), false},
		{"empty file", nil, false},
		{"text", []byte(strings.Repeat("hello\n", 200)), false},
	} {
		p := dir + "/" + strings.ReplaceAll(tc.name, " ", "_")
		os.WriteFile(p, tc.data, 0o600)
		if got := Detect(p); got != tc.want {
			t.Errorf("%s: Detect = %v, want %v", tc.name, got, tc.want)
		}
	}
	if Detect(dir) || Detect(dir+"/missing") {
		t.Error("Detect of a directory or a missing file")
	}
}
