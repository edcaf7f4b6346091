package legacy

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// FuzzParseV1 feeds arbitrary bytes to the v1 reader as a backup file:
// OpenFile and Entries must return (an error or entries) without panicking,
// every entry must lie inside the file in order, and no allocation may be
// larger than the input.
func FuzzParseV1(f *testing.F) {
	if real, err := os.ReadFile(realV1); err == nil {
		f.Add(real)
		f.Add(real[:HeaderSize+2000])
	}
	w := newPyWriter()
	f.Add(w.bytes())
	w.change(1, schema()...)
	w.change(1, "PRAGMA foreign_keys = OFF;")
	w.change(2, row(2, "a")...)
	w.snapshot(3, []byte("SQLite format 3\x00..."))
	w.change(4, row(4, "b")...)
	w.rewind()
	w.change(4, row(4, "c")...)
	w.appendEntry(5, Change, []byte("x"))
	f.Add(w.bytes())
	f.Add(append(w.bytes(), 0, 0, 0xff, 0xff))

	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		file, err := newFile("fuzz", bytes.NewReader(data), size)
		if err != nil {
			return
		}
		h := file.Header()
		next := int64(HeaderSize)
		err = file.Entries(func(e Entry) error {
			if e.Offset != next || e.Length < 0 || e.End() > size {
				t.Fatalf("entry at %d (length %d) after %d in a %d-byte file", e.Offset, e.Length, next, size)
			}
			next = e.End()
			switch e.Kind {
			case Change:
				n := 0
				for _, s := range e.Statements {
					n += len(s) + 1
				}
				if int64(n) > e.Length+1 {
					t.Fatalf("statements hold %d bytes of a %d-byte payload", n, e.Length)
				}
			case Snapshot:
				if m, err := io.Copy(io.Discard, e.Snapshot); err != nil || m != e.Length {
					t.Fatalf("snapshot: read %d of %d bytes: %v", m, e.Length, err)
				}
			default:
				t.Fatalf("kind %v", e.Kind)
			}
			return nil
		})
		if err == nil && next != HeaderSize && uint64(next) < h.OffsetHead {
			t.Fatalf("entries end at %d before offset_head %d", next, h.OffsetHead)
		}
	})
}
