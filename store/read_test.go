package store

import (
	"bytes"
	"slices"
	"sync"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/chunk"
)

// TestReadDeltasByBaseLocation: deltas whose bases lie in several packs
// are read in batches ordered by where their bases are stored (pack, then
// offset), and every chunk reads back whole whatever the batch size, also
// with full chunks and repeated ids in the same read.
func TestReadDeltasByBaseLocation(t *testing.T) {
	st, _ := newTestStore(t)
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want := map[chunker.ID][]byte{}
	var bases, pages []chunker.ID
	// Bases in three packs, in an order unrelated to their ids.
	for pack := range 3 {
		for i := range 8 {
			base, _ := deltaPair(byte(pack*8 + i))
			id := chunker.Sum(base)
			if _, err := w.PutID(ctx, chunk.KindPage, id, base); err != nil {
				t.Fatal(err)
			}
			bases, want[id] = append(bases, id), base
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Their deltas, in reverse order, in one pack.
	for i := len(bases) - 1; i >= 0; i-- {
		base, page := deltaPair(byte(i))
		id := chunker.Sum(page)
		know(t, w, st, id, bases[i])
		if _, err := w.PutDelta(ctx, id, page, bases[i], base); err != nil {
			t.Fatal(err)
		}
		pages, want[id] = append(pages, id), page
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The order of the second pass.
	l, err := st.Lookup(ctx, append(slices.Clone(bases), pages...))
	if err != nil {
		t.Fatal(err)
	}
	refs := make([]chunk.DeltaRef, 0, len(pages))
	for _, id := range pages {
		info, ok := l.Locate(id)
		if !ok || info.Base == (chunker.ID{}) {
			t.Fatalf("page %s stored as %+v, want a delta", id.Short(), info)
		}
		refs = append(refs, chunk.DeltaRef{ID: id, Base: info.Base})
	}
	slices.SortFunc(refs, func(a, b chunk.DeltaRef) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	orderByLocation(refs, l, func(d chunk.DeltaRef) chunker.ID { return d.Base })
	for i := 1; i < len(refs); i++ {
		a, _ := l.Locate(refs[i-1].Base)
		b, _ := l.Locate(refs[i].Base)
		if c := bytes.Compare(a.Pack[:], b.Pack[:]); c > 0 || c == 0 && a.Offset > b.Offset {
			t.Fatalf("delta %d's base (pack %s offset %d) is ordered after delta %d's (pack %s offset %d)", i-1, a.Pack.Short(), a.Offset, i, b.Pack.Short(), b.Offset)
		}
	}
	all := append(append(slices.Clone(pages), bases[:5]...), pages[:3]...)
	for _, batch := range []int{1, 3, 1024} {
		old := deltaBatch
		deltaBatch = batch
		got := map[chunker.ID][]byte{}
		var mu sync.Mutex
		err := st.ReadChunks(ctx, all, func(id chunker.ID, d []byte) error {
			mu.Lock()
			defer mu.Unlock()
			if _, dup := got[id]; dup {
				t.Errorf("batch %d: chunk %s handed twice", batch, id.Short())
			}
			got[id] = bytes.Clone(d)
			return nil
		})
		deltaBatch = old
		if err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		if len(got) != len(pages)+5 {
			t.Fatalf("batch %d: %d chunks read, want %d", batch, len(got), len(pages)+5)
		}
		for id, d := range got {
			if !bytes.Equal(d, want[id]) {
				t.Fatalf("batch %d: chunk %s read back wrong", batch, id.Short())
			}
		}
	}
}
