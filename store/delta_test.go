package store

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/chunk"
)

// deltaPair returns a page and a slightly changed version of it.
func deltaPair(seed byte) (base, page []byte) {
	base = make([]byte, 4096)
	for i := range base {
		base[i] = byte(i*7) ^ seed
	}
	page = append([]byte(nil), base...)
	copy(page[1000:], "changed row")
	return base, page
}

// TestPutDelta: a delta is stored against a full base, read back whole
// (alone and among full chunks, in one ReadChunks), preferred less than a
// full copy of the same chunk, and never made against a delta, a missing
// base or in a version-1 store.
func TestPutDelta(t *testing.T) {
	t.Parallel()
	st, _ := newTestStore(t)
	base, page := deltaPair(1)
	baseID, pageID := chunker.Sum(base), chunker.Sum(page)
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The base is not stored yet: the page goes in full.
	other, otherPage := deltaPair(2)
	if _, err := w.PutDelta(ctx, chunker.Sum(otherPage), otherPage, chunker.Sum(other), other); err != nil {
		t.Fatal(err)
	}
	if _, err := w.PutID(ctx, chunk.KindPage, baseID, base); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := locate(t, st, chunker.Sum(otherPage)); info.Base != (chunker.ID{}) {
		t.Fatal("delta against a base the store lacks")
	}
	know(t, w, st, pageID, baseID)
	if isNew, err := w.PutDelta(ctx, pageID, page, baseID, base); err != nil || !isNew {
		t.Fatalf("put delta: %v %v", err, isNew)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if w.Stats().DeltaChunks != 1 {
		t.Fatalf("stats: %+v", w.Stats())
	}
	info, ok := locate(t, st, pageID)
	if !ok || info.Base != baseID || info.Length > 200 {
		t.Fatalf("delta stored as %+v", info)
	}
	// A page whose previous version is a delta is not made a delta of it.
	third := append([]byte(nil), page...)
	copy(third[2000:], "another row")
	know(t, w, st, chunker.Sum(third), pageID)
	if _, err := w.PutDelta(ctx, chunker.Sum(third), third, pageID, page); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := locate(t, st, chunker.Sum(third)); info.Base != (chunker.ID{}) {
		t.Fatal("delta against a delta")
	}
	// Read back by a fresh Store, with full chunks in the same call.
	st2, err := Open(ctx, st.Location(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	want := map[chunker.ID][]byte{baseID: base, pageID: page, chunker.Sum(third): third}
	got := map[chunker.ID][]byte{}
	var mu sync.Mutex // fn runs on several goroutines
	ids := []chunker.ID{pageID, baseID, chunker.Sum(third), pageID}
	if err := st2.ReadChunks(ctx, ids, func(id chunker.ID, d []byte) error {
		mu.Lock()
		defer mu.Unlock()
		got[id] = append([]byte(nil), d...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for id, w := range want {
		if !bytes.Equal(got[id], w) {
			t.Fatalf("chunk %s read back wrong", id.Short())
		}
	}
	// A server refuses delta bodies from a client.
	_, err = st2.packs.PutBodies(ctx, []chunk.Body{{ID: pageID, Kind: chunk.KindPage, Raw: 4096, Base: baseID, Body: []byte{1}}})
	if !errors.Is(err, chunk.ErrBad) {
		t.Fatalf("delta body from a client: %v", err)
	}
	// A full copy of the same chunk is preferred once indexed.
	w2, err := st2.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	w2.putAlways(chunk.KindPage, pageID, page)
	if err := w2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := locate(t, st2, pageID); info.Base != (chunker.ID{}) {
		t.Fatal("the delta copy is preferred to a full copy")
	}
}

// TestVersion1StoreNoDeltas: a version-1 store opens, writes index format
// 1 and stores PutDelta pages full.
func TestVersion1StoreNoDeltas(t *testing.T) {
	t.Parallel()
	dir := t.TempDir() + "/store"
	st, _, err := Create(ctx, "file://"+dir, Options{FormatVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Config().Version != 1 || st.DeltasAllowed() {
		t.Fatalf("version %d, deltas %v", st.Config().Version, st.DeltasAllowed())
	}
	base, page := deltaPair(3)
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.PutID(ctx, chunk.KindPage, chunker.Sum(base), base)
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	know(t, w, st, chunker.Sum(page), chunker.Sum(base))
	if _, err := w.PutDelta(ctx, chunker.Sum(page), page, chunker.Sum(base), base); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if info, _ := locate(t, st, chunker.Sum(page)); info.Base != (chunker.ID{}) {
		t.Fatal("a delta in a version-1 store")
	}
	if _, _, err := Create(ctx, "file://"+t.TempDir()+"/x", Options{FormatVersion: 3}); err == nil {
		t.Fatal("created a version-3 store")
	}
}
