package chunker_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/zeebo/blake3"
)

// realDatabases are the SQLite files shipped in testdata.
func realDatabases(t testing.TB) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("..", "testdata", "*.sqlite3"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no testdata databases (%v)", err)
	}
	return paths
}

// TestSplitRealDatabases splits every real database: 4 KiB pages, the page
// count of the file size and of the header, IDs that name the bytes, and
// pages that put back together give the file.
func TestSplitRealDatabases(t *testing.T) {
	t.Parallel()
	for _, path := range realDatabases(t) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			hdr, err := chunker.ParseHeader(data)
			if err != nil {
				t.Fatal(err)
			}
			whole := blake3.New()
			var next uint32
			h, err := chunker.Split(bytes.NewReader(data), func(p chunker.Page) error {
				if p.Index != next {
					t.Fatalf("page index %d, want %d", p.Index, next)
				}
				next++
				if len(p.Data) != 4096 {
					t.Fatalf("page %d has %d bytes", p.Index, len(p.Data))
				}
				if p.ID != chunker.Sum(p.Data) {
					t.Fatalf("page %d: ID does not name its bytes", p.Index)
				}
				whole.Write(p.Data)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if h.PageSize != 4096 || hdr.PageSize != 4096 {
				t.Fatalf("page size %d (header %d), want 4096", h.PageSize, hdr.PageSize)
			}
			if want := uint32(len(data) / 4096); h.Pages != want || hdr.Pages != want || next != want {
				t.Fatalf("pages: split %d, header %d, callbacks %d; file has %d", h.Pages, hdr.Pages, next, want)
			}
			if sum := blake3.Sum256(data); !bytes.Equal(whole.Sum(nil), sum[:]) {
				t.Fatal("pages put together differ from the file")
			}
		})
	}
}

// header returns a 100-byte SQLite header with the given raw page size
// field and page count.
func header(rawPageSize uint16, pages uint32) []byte {
	h := make([]byte, chunker.HeaderSize)
	copy(h, "SQLite format 3\x00")
	binary.BigEndian.PutUint16(h[16:], rawPageSize)
	binary.BigEndian.PutUint32(h[28:], pages)
	return h
}

// TestParseHeader covers valid page sizes (65536 is stored as 1), invalid
// ones, and input that is not a SQLite header.
func TestParseHeader(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		in       []byte
		pageSize uint32
		pages    uint32
		notSQL   bool   // error wraps ErrNotSQLite
		errText  string // error contains this ("" = no error)
	}{
		{"4096", header(4096, 92), 4096, 92, false, ""},
		{"512", header(512, 1), 512, 1, false, ""},
		{"32768", header(32768, 7), 32768, 7, false, ""},
		{"65536 encoded as 1", header(1, 3), 65536, 3, false, ""},
		{"not a power of two", header(1000, 1), 0, 0, false, "power of two"},
		{"too small", header(256, 1), 0, 0, false, "power of two"},
		{"zero", header(0, 1), 0, 0, false, "power of two"},
		{"bad magic", append([]byte("SQLite format 2\x00"), header(4096, 1)[16:]...), 0, 0, true, "not a SQLite database"},
		{"short", header(4096, 1)[:99], 0, 0, true, "shorter than"},
		{"empty", nil, 0, 0, true, "shorter than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, err := chunker.ParseHeader(tc.in)
			if tc.errText == "" {
				if err != nil {
					t.Fatal(err)
				}
				if h.PageSize != tc.pageSize || h.Pages != tc.pages {
					t.Fatalf("got %+v, want page size %d, %d pages", h, tc.pageSize, tc.pages)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("error %v, want one containing %q", err, tc.errText)
			}
			if errors.Is(err, chunker.ErrNotSQLite) != tc.notSQL {
				t.Fatalf("error %v: wraps ErrNotSQLite = %v, want %v", err, !tc.notSQL, tc.notSQL)
			}
		})
	}
}

// failingReader returns data and then a read error.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// TestSplitRejects checks that non-SQLite input, truncated files and read
// errors fail with clear errors, and that a callback error stops Split.
func TestSplitRejects(t *testing.T) {
	t.Parallel()
	db, err := os.ReadFile(realDatabases(t)[0])
	if err != nil {
		t.Fatal(err)
	}
	trace, err := os.ReadFile(filepath.Join("..", "testdata", "trace1.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	broken := errors.New("disk on fire")
	for _, tc := range []struct {
		name    string
		r       io.Reader
		notSQL  bool
		errText string
	}{
		{"not SQLite", bytes.NewReader(trace), true, "not a SQLite database"},
		{"empty file", bytes.NewReader(nil), true, "shorter than"},
		{"header only", bytes.NewReader(db[:chunker.HeaderSize+10]), false, "truncated: page 1 has 110 of 4096 bytes"},
		{"partial last page", bytes.NewReader(db[:3*4096+100]), false, "truncated: page 4 has 100 of 4096 bytes"},
		{"cut at a page boundary", bytes.NewReader(db[:10*4096]), false, "the file has 10"},
		{"read error", &failingReader{bytes.NewReader(db[:2*4096]), broken}, false, "disk on fire"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := chunker.Split(tc.r, func(chunker.Page) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("error %v, want one containing %q", err, tc.errText)
			}
			if errors.Is(err, chunker.ErrNotSQLite) != tc.notSQL {
				t.Fatalf("error %v: wraps ErrNotSQLite = %v", err, !tc.notSQL)
			}
		})
	}
	t.Run("callback error stops", func(t *testing.T) {
		t.Parallel()
		stop := errors.New("stop")
		calls := 0
		_, err := chunker.Split(bytes.NewReader(db), func(p chunker.Page) error {
			calls++
			if p.Index == 2 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || calls != 3 {
			t.Fatalf("error %v after %d calls, want stop after 3", err, calls)
		}
	})
}

// TestIDText checks the hex form of chunk IDs round-trips and rejects junk.
func TestIDText(t *testing.T) {
	t.Parallel()
	id := chunker.Sum([]byte("page"))
	back, err := chunker.ParseID(id.String())
	if err != nil || back != id {
		t.Fatalf("ParseID(String()) = %v, %v", back, err)
	}
	for _, bad := range []string{"", "abc", strings.Repeat("z", 64), id.String()[:63]} {
		if _, err := chunker.ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
	if !(chunker.ID{}).IsZero() || id.IsZero() {
		t.Fatal("IsZero")
	}
}

// syntheticDatabase writes a file of size bytes (a multiple of 4096) that
// the chunker accepts: a SQLite header and pseudo-random pages with some
// zero runs, as in half-full b-tree pages.
func syntheticDatabase(tb testing.TB, size int) string {
	tb.Helper()
	pages := size / 4096
	buf := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for off := 0; off < size; off += 8 {
		if (off/1024)%4 != 3 { // a quarter of each page stays zero
			binary.LittleEndian.PutUint64(buf[off:], r.Uint64())
		}
	}
	copy(buf, header(4096, uint32(pages)))
	path := filepath.Join(tb.TempDir(), "synthetic.sqlite3")
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}

// BenchmarkSplit measures splitting a 64 MiB database into page chunks
// (read, BLAKE3 per page), from a file and from memory.
func BenchmarkSplit(b *testing.B) {
	const size = 64 << 20
	path := syntheticDatabase(b, size)
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		open func() (io.Reader, func())
	}{
		{"file", func() (io.Reader, func()) {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			return f, func() { f.Close() }
		}},
		{"memory", func() (io.Reader, func()) { return bytes.NewReader(data), func() {} }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				r, done := tc.open()
				h, err := chunker.Split(r, func(chunker.Page) error { return nil })
				done()
				if err != nil || h.Pages != size/4096 {
					b.Fatalf("split: %v (%d pages)", err, h.Pages)
				}
			}
		})
	}
}
