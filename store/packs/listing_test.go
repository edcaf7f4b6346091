package packs

import (
	"context"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store/backend"
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
			q := New(listingLiar{p.be, tc.size}, Options{StoreVersion: 2, PackSize: 8 << 20, Codec: p.codec, Now: p.now, MaxWriterAge: gcTestWriterAge})
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
