package local_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/local"
)

// TestGetInto: GetInto reads the range Get reads, into the buffer given
// when it is large enough (no allocation) and a new one otherwise, and
// refuses the ranges Get refuses.
func TestGetInto(t *testing.T) {
	ctx := context.Background()
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789"), 100)
	if err := b.PutIfAbsent(ctx, "packs/ab/x", data); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 2000)
	for _, tc := range []struct {
		name        string
		off, length int64
		buf         []byte
		reused      bool
		err         error
	}{
		{"into a large buffer", 10, 500, big, true, nil},
		{"into a small buffer", 10, 500, make([]byte, 10), false, nil},
		{"into none", 0, -1, nil, false, nil},
		{"to the end", 990, -1, big, true, nil},
		{"empty at the end", 1000, 0, big, true, nil},
		{"past the end", 990, 11, big, false, io.ErrUnexpectedEOF},
		{"offset past the end", 1001, 1, big, false, backend.ErrRange},
		{"negative offset", -1, 1, big, false, backend.ErrRange},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := b.GetInto(ctx, "packs/ab/x", tc.off, tc.length, tc.buf)
			want, gerr := b.Get(ctx, "packs/ab/x", tc.off, tc.length)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !errors.Is(gerr, tc.err) {
					t.Fatalf("GetInto: %v, Get: %v, want %v", err, gerr, tc.err)
				}
				return
			}
			if err != nil || gerr != nil {
				t.Fatalf("GetInto: %v, Get: %v", err, gerr)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("GetInto read %d bytes unlike Get's %d", len(got), len(want))
			}
			if reused := cap(got) > 0 && cap(tc.buf) > 0 && &got[:1][0] == &tc.buf[:1][0]; reused != tc.reused {
				t.Errorf("buffer reused: %v, want %v", reused, tc.reused)
			}
		})
	}
	if _, err := b.GetInto(ctx, "packs/ab/missing", 0, -1, big); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
}
