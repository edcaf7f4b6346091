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
	want, bases, pages := storeDeltas(t, st)
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

// storeDeltas stores 24 base pages in three packs, in an order unrelated to
// their ids, and a delta of each in a fourth, in reverse order; it returns
// every chunk's bytes, the bases' ids and the deltas' ids (deltas[i] is
// stored against bases[i]).
func storeDeltas(t *testing.T, st *Store) (want map[chunker.ID][]byte, bases, deltas []chunker.ID) {
	t.Helper()
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	want = map[chunker.ID][]byte{}
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
	deltas = make([]chunker.ID, len(bases))
	for i := len(bases) - 1; i >= 0; i-- {
		base, page := deltaPair(byte(i))
		id := chunker.Sum(page)
		know(t, w, st, id, bases[i])
		if _, err := w.PutDelta(ctx, id, page, bases[i], base); err != nil {
			t.Fatal(err)
		}
		deltas[i], want[id] = id, page
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return want, bases, deltas
}

// TestPlanNextRead: reads planned one after another, each lookup also
// looking up the delta bases of the read before, complete each plan (its
// bases known, so its read looks nothing up) and read every chunk back
// whole; an incomplete plan (the newest) reads too.
func TestPlanNextRead(t *testing.T) {
	st, _ := newTestStore(t)
	want, bases, deltas := storeDeltas(t, st)
	reads := [][]chunker.ID{
		append(slices.Clone(deltas[:10]), bases[20:]...), // deltas and full chunks
		bases[:4],   // no deltas
		deltas[10:], // only deltas
	}
	readBack := func(p *ReadPlan, ids []chunker.ID) {
		t.Helper()
		got := map[chunker.ID][]byte{}
		var mu sync.Mutex
		err := st.ReadPlanned(ctx, p, sinkOf(func(id chunker.ID, d []byte) error {
			mu.Lock()
			defer mu.Unlock()
			got[id] = bytes.Clone(d)
			return nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(ids) {
			t.Fatalf("%d chunks read, want %d", len(got), len(ids))
		}
		for _, id := range ids {
			if !bytes.Equal(got[id], want[id]) {
				t.Fatalf("chunk %s read back wrong", id.Short())
			}
		}
	}
	var plans []*ReadPlan
	var prev *ReadPlan
	for i, ids := range append(reads, nil) {
		p, err := st.PlanNextRead(ctx, prev, ids)
		if err != nil {
			t.Fatal(err)
		}
		if prev != nil {
			if prev.bases == nil {
				t.Fatalf("read %d: its plan is not complete after the next one", i-1)
			}
			for _, id := range prev.ids {
				if info, _ := prev.l.Locate(id); info.Base != (chunker.ID{}) && !prev.bases.Known(info.Base) {
					t.Fatalf("read %d: the base of delta %s is not looked up", i-1, id.Short())
				}
			}
		}
		if ids == nil {
			if p != nil {
				t.Fatal("a plan for no read")
			}
			break
		}
		if i == 0 {
			readBack(p, ids) // incomplete: the read looks its bases up
		}
		plans, prev = append(plans, p), p
	}
	for i, p := range plans {
		readBack(p, reads[i])
	}
}
