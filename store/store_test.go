package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/chunk"
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
func locate(t testing.TB, st *Store, id chunker.ID) (chunk.Info, bool) {
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
		id, isNew, err := w.Put(ctx, chunk.KindPage, page)
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
	t.Parallel()
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
			if _, isNew, err := w.Put(ctx, chunk.KindPage, page); err != nil || (isNew && lookFirst) {
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
	t.Parallel()
	st, dir := newTestStore(t)
	ids := putChunks(t, st, 10)
	loc, _ := locate(t, st, ids[3])
	path := filepath.Join(dir, "packs", loc.Pack.String()[:2], loc.Pack.String())
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
		if !errors.Is(err, chunk.ErrCorrupt) || !strings.Contains(err.Error(), ids[3].String()) || !strings.Contains(err.Error(), loc.Pack.String()) {
			t.Errorf("%s of damaged chunk: %v", name, err)
		}
	}
	if _, err := st.Get(ctx, ids[4]); err != nil {
		t.Errorf("undamaged chunk: %v", err)
	}
}

func TestOpenRefusals(t *testing.T) {
	t.Parallel()
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
		{"future version", edit(t, func(c map[string]any) { c["version"] = 4 }), "store format version 4 is not supported", false},
		{"version 3 without encryption", edit(t, func(c map[string]any) { c["version"] = 3 }), "store format version 3 records no encryption", false},
		{"version 0", edit(t, func(c map[string]any) { c["version"] = 0 }), "store format version 0 is not supported", false},
		{"other list size", edit(t, func(c map[string]any) { c["params"].(map[string]any)["list_entries"] = 4096 }), "list_entries 4096 (expected 1024)", false},
		{"other hash", edit(t, func(c map[string]any) { c["params"].(map[string]any)["hash"] = "sha256" }), `hash "sha256"`, false},
		{"not a config", edit(t, func(c map[string]any) { c["format"] = "something" }), "not a backup store", false},
		{"missing dir", "file://" + filepath.Join(t.TempDir(), "nope"), "does not exist", false},
		{"empty dir", "file://" + t.TempDir(), "not a backup store", false},
		{"a file", "file://" + aFile, "is a file", false},
		{"no scheme", "/tmp/x", "has no scheme", false},
		{"other scheme", "gs://bucket/x", "unsupported scheme", false},
		{"s3 without its client", "s3://bucket/x", "built without the s3 client", false},
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

// TestLookup: one pass over the indexes finds each chunk asked for (the
// same answer as the loaded index) and reports the others absent (packs'
// TestLookupCondemned tells condemned copies from usable ones).
func TestLookup(t *testing.T) {
	t.Parallel()
	st, dir := newTestStore(t)
	ids := putChunks(t, st, 50)
	absent := chunker.Sum([]byte("never stored"))
	ask := append([]chunker.ID{absent, ids[3]}, ids...) // a repeat, too
	l, err := st.Lookup(ctx, ask)
	if err != nil {
		t.Fatal(err)
	}
	if !l.Known(absent) || l.Has(absent) {
		t.Fatalf("lookup of %d ids: absent known %v has %v", len(ask), l.Known(absent), l.Has(absent))
	}
	if _, ok := l.Locate(absent); ok {
		t.Fatal("absent chunk located")
	}
	full, err := Open(ctx, "file://"+dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer full.Close()
	index, err := full.packs.LoadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		got, ok := l.Locate(id)
		want, _ := index.Locate(id)
		if !ok || !l.Has(id) || got != want {
			t.Fatalf("chunk %s: lookup says %+v (%v), index says %+v", id.Short(), got, ok, want)
		}
	}
	if other := chunker.Sum([]byte("other")); l.Known(other) {
		t.Fatal("a chunk not asked for is known")
	}
}

// TestCountChunks: list's count of distinct chunks, in one pass, equals
// the loaded index's.
func TestCountChunks(t *testing.T) {
	t.Parallel()
	st, dir := newTestStore(t)
	putChunks(t, st, 30)
	w, _ := st.NewWriter(ctx)
	defer w.Close()
	for i := 20; i < 40; i++ { // 10 of them stored again (a second copy)
		page := bytes.Repeat([]byte{byte(i), byte(i >> 8), 7}, 1365)
		w.putAlways(chunk.KindPage, chunker.Sum(page), page)
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
	index, err := full.packs.LoadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := full.packs.CountChunks(ctx); err != nil || n != index.Len() || n != 40 {
		t.Fatalf("count with the index loaded: %d, %v (index: %d)", n, err, index.Len())
	}
}

// TestReadChunksTo: every chunk reaches one worker's put once, and each
// worker that took a put flushes once, after its last put.
func TestReadChunksTo(t *testing.T) {
	t.Parallel()
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
func (w *Writer) putAlways(kind chunk.Kind, id chunker.ID, data []byte) {
	start := len(w.bodies)
	w.bodies = w.enc.EncodeAll(data, w.bodies)
	w.entries = append(w.entries, chunk.Entry{ID: id, Kind: kind, Offset: uint32(start), Length: uint32(len(w.bodies) - start), Raw: uint32(len(data))})
	w.pending[id] = true
}
