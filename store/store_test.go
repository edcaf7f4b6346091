package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
)

var ctx = context.Background()

func newTestStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	st, created, err := Create(ctx, "file://"+dir, Options{})
	if err != nil || !created {
		t.Fatalf("create: %v %v", err, created)
	}
	t.Cleanup(func() { st.Close() })
	return st, dir
}

// locate looks a chunk up the way readers do (one pass over the indexes).
func locate(t testing.TB, st *Store, id chunker.ID) (ChunkInfo, bool) {
	t.Helper()
	l, err := st.Lookup(ctx, []chunker.ID{id})
	if err != nil {
		t.Fatal(err)
	}
	return l.Locate(id)
}

// know gives w a lookup of ids, as callers of a Writer do before putting.
func know(t testing.TB, w *Writer, st *Store, ids ...chunker.ID) {
	t.Helper()
	l, err := st.Lookup(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	w.Know(l)
}

func putChunks(t *testing.T, st *Store, n int) []chunker.ID {
	t.Helper()
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var ids []chunker.ID
	for i := 0; i < n; i++ {
		page := bytes.Repeat([]byte{byte(i), byte(i >> 8), 7}, 1365)
		id, isNew, err := w.Put(ctx, KindPage, page)
		if err != nil || !isNew {
			t.Fatalf("put %d: %v new=%v", i, err, isNew)
		}
		ids = append(ids, id)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestPutGetDedup(t *testing.T) {
	st, dir := newTestStore(t)
	ids := putChunks(t, st, 100)
	for i, id := range ids {
		data, err := st.Get(ctx, id)
		if err != nil || chunker.Sum(data) != id {
			t.Fatalf("get %d: %v", i, err)
		}
	}
	// A second writer, and a store opened afresh, reuse every chunk:
	// looked up first, or looked up when the pack is flushed.
	st2, err := Open(ctx, "file://"+dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	for _, lookFirst := range []bool{true, false} {
		w, _ := st2.NewWriter(ctx)
		defer w.Close()
		if lookFirst {
			know(t, w, st2, ids...)
		}
		for i := 0; i < 100; i++ {
			page := bytes.Repeat([]byte{byte(i), byte(i >> 8), 7}, 1365)
			if _, isNew, err := w.Put(ctx, KindPage, page); err != nil || (isNew && lookFirst) {
				t.Fatalf("chunk %d written again (new=%v, %v)", i, isNew, err)
			}
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if s := w.Stats(); s.NewChunks != 0 || s.Added() != 0 || s.ReusedChunks != 100 {
			t.Fatalf("looked up first %v: stats %+v", lookFirst, s)
		}
	}
	// ReadChunks returns every chunk once, verified.
	got := map[chunker.ID]bool{}
	var mu = make(chan struct{}, 1)
	err = st2.ReadChunks(ctx, append(ids, ids...), func(id chunker.ID, data []byte) error {
		mu <- struct{}{}
		defer func() { <-mu }()
		if got[id] {
			t.Errorf("chunk %s passed twice", id.Short())
		}
		got[id] = true
		return nil
	})
	if err != nil || len(got) != len(ids) {
		t.Fatalf("ReadChunks: %v, %d of %d", err, len(got), len(ids))
	}
}

// TestFlippedByteNamesChunk damages one byte of a pack: reads fail, naming
// the chunk and the pack.
func TestFlippedByteNamesChunk(t *testing.T) {
	st, dir := newTestStore(t)
	ids := putChunks(t, st, 10)
	loc, _ := locate(t, st, ids[3])
	path := filepath.Join(dir, filepath.FromSlash(packName(loc.Pack)))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	data[loc.Offset+loc.Length/2] ^= 0x40
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, read := range map[string]func() error{
		"Get": func() error { _, err := st.Get(ctx, ids[3]); return err },
		"ReadChunks": func() error {
			return st.ReadChunks(ctx, ids, func(chunker.ID, []byte) error { return nil })
		},
	} {
		err := read()
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), ids[3].String()) || !strings.Contains(err.Error(), loc.Pack.String()) {
			t.Errorf("%s of damaged chunk: %v", name, err)
		}
	}
	if _, err := st.Get(ctx, ids[4]); err != nil {
		t.Errorf("undamaged chunk: %v", err)
	}
}

func TestOpenRefusals(t *testing.T) {
	_, dir := newTestStore(t)
	edit := func(t *testing.T, f func(c map[string]any)) string {
		d := filepath.Join(t.TempDir(), "s")
		os.MkdirAll(d, 0o755)
		raw, _ := os.ReadFile(filepath.Join(dir, "config"))
		var c map[string]any
		json.Unmarshal(raw, &c)
		f(c)
		out, _ := json.Marshal(c)
		os.WriteFile(filepath.Join(d, "config"), out, 0o644)
		return "file://" + d
	}
	notEmpty := t.TempDir()
	os.WriteFile(filepath.Join(notEmpty, "photo.jpg"), []byte("x"), 0o644)
	aFile := filepath.Join(t.TempDir(), "file")
	os.WriteFile(aFile, []byte("x"), 0o644)
	for _, tc := range []struct {
		name, url, want string
		create          bool
	}{
		{"future version", edit(t, func(c map[string]any) { c["version"] = 3 }), "store format version 3 is not supported", false},
		{"version 0", edit(t, func(c map[string]any) { c["version"] = 0 }), "store format version 0 is not supported", false},
		{"other list size", edit(t, func(c map[string]any) { c["params"].(map[string]any)["list_entries"] = 4096 }), "list_entries 4096 (expected 1024)", false},
		{"other hash", edit(t, func(c map[string]any) { c["params"].(map[string]any)["hash"] = "sha256" }), `hash "sha256"`, false},
		{"not a config", edit(t, func(c map[string]any) { c["format"] = "something" }), "not a backup store", false},
		{"missing dir", "file://" + filepath.Join(t.TempDir(), "nope"), "does not exist", false},
		{"empty dir", "file://" + t.TempDir(), "not a backup store", false},
		{"a file", "file://" + aFile, "is a file", false},
		{"no scheme", "/tmp/x", "has no scheme", false},
		{"other scheme", "s3://bucket/x", "unsupported scheme", false},
		{"create in non-empty dir", "file://" + notEmpty, "is not empty and is not a backup store", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.create {
				_, _, err = Create(ctx, tc.url, Options{})
			} else {
				_, err = Open(ctx, tc.url, Options{})
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// Create on an existing store opens it.
	st, created, err := Create(ctx, "file://"+dir, Options{})
	if err != nil || created {
		t.Fatalf("create on existing store: %v created=%v", err, created)
	}
	st.Close()
}

func TestPackTrailerMatchesIndex(t *testing.T) {
	st, _ := newTestStore(t)
	ids := putChunks(t, st, 5)
	loc, _ := locate(t, st, ids[0])
	pack, err := st.Objects().Get(ctx, packName(loc.Pack), 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if chunker.Sum(pack) != loc.Pack {
		t.Fatal("pack name is not the hash of its content")
	}
	entries, err := parsePackTrailer(pack)
	if err != nil || len(entries) != 5 {
		t.Fatalf("trailer: %v (%d entries)", err, len(entries))
	}
	var n int
	st.Objects().List(ctx, "index/", func(backend.Info) error { n++; return nil })
	if n != 1 {
		t.Fatalf("%d index objects", n)
	}
}

func FuzzDecodeIndex(f *testing.F) {
	e := []indexEntry{{ID: chunker.Sum([]byte("a")), Kind: KindPage, Offset: 0, Length: 10, Raw: 4096}}
	f.Add(encodeIndex(indexVersion1, chunker.Sum(nil), e))
	f.Add(buildPack(indexVersion1, make([]byte, 10), e))
	// Version 2: a full entry and delta entries.
	e2 := append(e, indexEntry{ID: chunker.Sum([]byte("b")), Kind: KindPage, Offset: 10, Length: 3, Raw: 4096, Base: e[0].ID},
		indexEntry{ID: chunker.Sum([]byte("c")), Kind: KindList, Offset: 13, Length: 5, Raw: 40})
	f.Add(encodeIndex(indexVersion2, chunker.Sum(nil), e2))
	f.Add(encodeIndex(indexVersion2, chunker.Sum(nil), e2[1:2]))
	f.Add(buildPack(indexVersion2, make([]byte, 18), e2))
	f.Fuzz(func(t *testing.T, b []byte) {
		if pack, entries, err := decodeIndex(b, int64(len(b))); err == nil {
			v := binary.BigEndian.Uint16(b[6:8])
			if !bytes.Equal(encodeIndex(v, pack, entries), b) {
				t.Fatal("index does not round-trip")
			}
			for _, e := range entries {
				if e.delta() && (e.Kind != KindPage || e.Base == e.ID || v != indexVersion2) {
					t.Fatalf("accepted a bad delta entry %+v (index version %d)", e, v)
				}
			}
		}
		parsePackTrailer(b)
	})
}

func TestDecodeIndexV2(t *testing.T) {
	a, b := chunker.Sum([]byte("a")), chunker.Sum([]byte("b"))
	full := indexEntry{ID: a, Kind: KindPage, Length: 10, Raw: 4096}
	delta := indexEntry{ID: b, Kind: KindPage, Offset: 10, Length: 3, Raw: 4096, Base: a}
	idx := encodeIndex(indexVersion2, chunker.ID{}, []indexEntry{full, delta})
	_, got, err := decodeIndex(idx, 13)
	if err != nil || len(got) != 2 || got[0] != full || got[1] != delta {
		t.Fatalf("decode: %v %+v", err, got)
	}
	if _, _, err := decodeIndex(idx, 12); err == nil {
		t.Fatal("entry outside the pack accepted")
	}
	bad := func(name string, b []byte) {
		t.Helper()
		if _, _, err := decodeIndex(b, -1); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	bad("truncated base", idx[:len(idx)-1])
	bad("trailing byte", append(append([]byte(nil), idx...), 0))
	v1 := append([]byte(nil), idx...)
	binary.BigEndian.PutUint16(v1[6:], indexVersion1)
	bad("delta in a version-1 index", v1)
	list := append([]byte(nil), idx...)
	list[indexHeaderLen+indexEntryLen+chunker.IDSize] = byte(KindList) | kindDelta
	bad("delta list chunk", list)
	self := encodeIndex(indexVersion2, chunker.ID{}, []indexEntry{{ID: a, Kind: KindPage, Raw: 1, Base: b}})
	copy(self[indexHeaderLen+indexEntryLen:], a[:])
	bad("delta against itself", self)
	zero := encodeIndex(indexVersion2, chunker.ID{}, []indexEntry{{ID: a, Kind: KindPage, Raw: 1, Base: b}})
	copy(zero[indexHeaderLen+indexEntryLen:], make([]byte, 32))
	bad("zero base", zero)
	v3 := append([]byte(nil), idx...)
	binary.BigEndian.PutUint16(v3[6:], 3)
	bad("version 3", v3)
}

// TestLookup: one pass over the indexes finds each chunk asked for (the
// same answer as the loaded index), reports the others absent, prefers a
// copy gc has not condemned, and tells a condemned-only chunk (readable,
// but not to be relied on by writers) from a stored one.
func TestLookup(t *testing.T) {
	st, dir := newTestStore(t)
	ids := putChunks(t, st, 50)
	absent := chunker.Sum([]byte("never stored"))
	ask := append([]chunker.ID{absent, ids[3]}, ids...) // a repeat, too
	l, err := st.Lookup(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != len(ids)+1 || !l.Known(absent) || l.Has(absent) {
		t.Fatalf("lookup of %d ids: %d known, absent known %v has %v", len(ask), l.Len(), l.Known(absent), l.Has(absent))
	}
	if _, ok := l.Locate(absent); ok {
		t.Fatal("absent chunk located")
	}
	full, err := Open(ctx, "file://"+dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	if err := full.packs.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		got, ok := l.Locate(id)
		want, _ := full.packs.Locate(id)
		if !ok || !l.Has(id) || got != want {
			t.Fatalf("chunk %s: lookup says %+v (%v), index says %+v", id.Short(), got, ok, want)
		}
	}
	if other := chunker.Sum([]byte("other")); l.Known(other) {
		t.Fatal("a chunk not asked for is known")
	}

	// Condemn ids[0]'s only copy and ids[1]'s first copy, then store
	// ids[1] again: ids[0] is condemned-only, ids[1] has a fresh copy.
	first, _ := l.Locate(ids[1])
	rec := newCondemnedRecord(2)
	rec.add(chunkCopy{ids[0], first.Pack}, 0)
	rec.add(chunkCopy{ids[1], first.Pack}, 0)
	if _, err := writeCondemned(ctx, st.be, st.now(), rec); err != nil {
		t.Fatal(err)
	}
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	know(t, w, st, ids[0], ids[1])
	if w.Has(ids[0]) || w.Has(ids[1]) {
		t.Fatal("a writer relies on a condemned copy")
	}
	page := bytes.Repeat([]byte{1, 0, 7}, 1365) // putChunks' chunk 1
	if chunker.Sum(page) != ids[1] {
		t.Fatal("test page is not chunk 1")
	}
	if isNew, err := w.PutID(ctx, KindPage, ids[1], page); err != nil || !isNew {
		t.Fatalf("store again: %v %v", err, isNew)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if !w.Has(ids[1]) {
		t.Fatal("the writer does not know the copy it stored")
	}
	l, err = st.Lookup(ctx, ids[:2])
	if err != nil {
		t.Fatal(err)
	}
	if info, ok := l.Locate(ids[0]); !ok || l.Has(ids[0]) || info.Pack != first.Pack {
		t.Fatalf("condemned-only chunk: located %v (%+v), has %v", ok, info, l.Has(ids[0]))
	}
	if info, ok := l.Locate(ids[1]); !ok || !l.Has(ids[1]) || info.Pack == first.Pack {
		t.Fatalf("chunk stored again: located %v in %s (condemned copy in %s), has %v", ok, info.Pack.Short(), first.Pack.Short(), l.Has(ids[1]))
	}
}

// TestCountChunks: list's count of distinct chunks, in one pass, equals
// the loaded index's.
func TestCountChunks(t *testing.T) {
	st, dir := newTestStore(t)
	putChunks(t, st, 30)
	w, _ := st.NewWriter(ctx)
	defer w.Close()
	for i := 20; i < 40; i++ { // 10 of them stored again (a second copy)
		page := bytes.Repeat([]byte{byte(i), byte(i >> 8), 7}, 1365)
		w.putAlways(KindPage, chunker.Sum(page), page)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := st.packs.CountChunks(ctx)
	if err != nil || n != 40 {
		t.Fatalf("count: %d, %v; want 40", n, err)
	}
	full, _ := Open(ctx, "file://"+dir, Options{})
	defer full.Close()
	if err := full.packs.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := full.packs.CountChunks(ctx); err != nil || n != full.packs.ChunkCount() || n != 40 {
		t.Fatalf("count with the index loaded: %d, %v (index: %d)", n, err, full.packs.ChunkCount())
	}
}

// TestKeyIndex: the bucketed search finds every key, its first position
// among equal keys, and nothing else, including at the ends of the range.
func TestKeyIndex(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys []uint64
	}{
		{"empty", nil},
		{"ends", []uint64{0, 1, 1<<48 - 1, 1 << 48, ^uint64(0) - 1, ^uint64(0)}},
		{"repeats", []uint64{5, 5, 5, 1 << 60, 1 << 60, ^uint64(0), ^uint64(0)}},
		{"spread", func() []uint64 {
			var k []uint64
			for i := uint64(0); i < 5000; i++ {
				k = append(k, i*0x9e3779b97f4a7c15)
			}
			slices.Sort(k)
			return k
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newKeyIndex(tc.keys)
			for i, k := range tc.keys {
				at, ok := x.search(k)
				if !ok || tc.keys[at] != k || (at > 0 && tc.keys[at-1] == k) || at > i {
					t.Fatalf("key %#x (at %d): found %v at %d", k, i, ok, at)
				}
			}
			for _, k := range []uint64{2, 3, 1<<48 + 1, 1<<60 + 1, ^uint64(0) - 2} {
				if _, ok := slices.BinarySearch(tc.keys, k); ok {
					continue
				}
				if _, ok := x.search(k); ok {
					t.Fatalf("found %#x, which is not there", k)
				}
			}
		})
	}
}

// TestReadChunksTo: every chunk reaches one worker's put once, and each
// worker that took a put flushes once, after its last put.
func TestReadChunksTo(t *testing.T) {
	st, _ := newTestStore(t)
	ids := putChunks(t, st, 300)
	var mu sync.Mutex
	got := map[chunker.ID]int{}
	sinks, flushes := 0, 0
	err := st.ReadChunksTo(ctx, ids, func() (func(chunker.ID, []byte) error, func() error) {
		mu.Lock()
		sinks++
		mu.Unlock()
		var mine []chunker.ID
		flushed := false
		put := func(id chunker.ID, data []byte) error {
			if flushed {
				return fmt.Errorf("put after flush")
			}
			if chunker.Sum(data) != id {
				return fmt.Errorf("chunk %s: wrong data", id.Short())
			}
			mine = append(mine, id)
			return nil
		}
		flush := func() error {
			flushed = true
			mu.Lock()
			defer mu.Unlock()
			flushes++
			for _, id := range mine {
				got[id]++
			}
			return nil
		}
		return put, flush
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ids) || flushes != sinks {
		t.Fatalf("%d of %d chunks flushed; %d sinks, %d flushes", len(got), len(ids), sinks, flushes)
	}
	for id, n := range got {
		if n != 1 {
			t.Fatalf("chunk %s put %d times", id.Short(), n)
		}
	}
	// A flush error fails the read.
	err = st.ReadChunksTo(ctx, ids, func() (func(chunker.ID, []byte) error, func() error) {
		return func(chunker.ID, []byte) error { return nil }, func() error { return errors.New("disk full") }
	})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("flush error: %v", err)
	}
}

// putAlways stores a chunk even if the store has it (a second copy): the
// chunk is neither looked up nor dropped when the pack is flushed.
func (w *Writer) putAlways(kind Kind, id chunker.ID, data []byte) {
	start := len(w.bodies)
	w.bodies = w.enc.EncodeAll(data, w.bodies)
	w.entries = append(w.entries, indexEntry{ID: id, Kind: kind, Offset: uint32(start), Length: uint32(len(w.bodies) - start), Raw: uint32(len(data))})
	w.pending[id] = true
}
