package packs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/local"
)

// listingLiar is a store whose listing reports index objects at a size
// of its choosing: a damaged or hostile store.
type listingLiar struct {
	backend.Backend
	size func(real int64) int64
}

func (b listingLiar) List(ctx context.Context, prefix string, fn func(backend.Info) error) error {
	return b.Backend.List(ctx, prefix, func(in backend.Info) error {
		if strings.HasPrefix(in.Name, indexPrefix) {
			in.Size = b.size(in.Size)
		}
		return fn(in)
	})
}

// TestIndexSizeFromListing: a pass over the index objects reads each at
// the size its listing gives and refuses one listed past what an index
// can hold before reading it, so a hostile store cannot make a lookup,
// a gc or a verify allocate more; a listing that understates an index
// yields bytes that do not match its name, one that overstates it a read
// past its end. Every case is an error naming the index, never a lookup
// of wrong locations.
func TestIndexSizeFromListing(t *testing.T) {
	for _, tc := range []struct {
		name string
		size func(real int64) int64
		want string
	}{
		{"huge", func(int64) int64 { return 1 << 40 }, "outside the"},
		{"negative", func(int64) int64 { return -1 }, "outside the"},
		{"short", func(r int64) int64 { return r - 1 }, "does not match its name"},
		{"long", func(r int64) int64 { return r + 1 }, "read index"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPacks(t, nil)
			ids := putPack(t, p, 1, 10)
			q := newTestPacksOn(t, listingLiar{p.be, tc.size}, nil)
			_, err := q.LoadIndex(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "index/") {
				t.Fatalf("load the index: %v, want an error naming the index with %q", err, tc.want)
			}
			if _, err := q.lookup(ctx, ids[:1]); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("look a chunk up: %v, want %q", err, tc.want)
			}
			rep, err := q.VerifyIndex(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != 1 || !strings.HasPrefix(rep.Problems[0].Object, indexPrefix) {
				t.Fatalf("verify reports %+v, want one problem with the index", rep.Problems)
			}
			t.Logf("verify: %s", rep.Problems[0].Problem)
		})
	}
}

// TestCondemnedRecordBounded: every lookup reads the newest condemned
// record whole, so one larger than the store's index can justify is refused
// before it is read (here a sparse file claiming gigabytes): a restore from
// a lying store allocates nothing for it.
func TestCondemnedRecordBounded(t *testing.T) {
	dir := t.TempDir()
	be, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := putPack(t, newTestPacksOn(t, be, nil), 1, 10)
	bound, err := maxCondemnedSize(ctx, be)
	if err != nil {
		t.Fatal(err)
	}
	name := condemnedPrefix + "00000000000000000001"
	path := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(max(bound+1, 4<<30)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := newTestPacksOn(t, be, nil).lookup(ctx, ids[:1]); !errors.Is(err, backend.ErrTooLarge) || !strings.Contains(err.Error(), name) {
		t.Fatalf("look up beside a %d-byte condemned record (bound %d): %v, want ErrTooLarge naming it", max(bound+1, 4<<30), bound, err)
	}
}
