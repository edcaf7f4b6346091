package history_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/history"
	"github.com/klauspost/compress/zstd"
)

// dedupSize is the database size of the dedup tests: 50 MB by default, as
// the design's measurements use; 5 MB with -short.
func dedupSize(t testing.TB) int64 {
	if testing.Short() {
		return 5 << 20
	}
	return 50 << 20
}

// buildDB generates a workload database of about size bytes in dir.
func buildDB(t testing.TB, dir string, seed uint64, size int64) (string, *workload.Generator) {
	t.Helper()
	path := filepath.Join(dir, "node.sqlite3")
	g := workload.New(workload.Config{Seed: seed, TargetBytes: size})
	if err := workload.Build(path, g.Populate); err != nil {
		t.Fatal(err)
	}
	return path, g
}

// pageIDs splits a database file into its page IDs.
func pageIDs(t testing.TB, path string) []chunker.ID {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ids []chunker.ID
	if _, err := chunker.Split(f, func(p chunker.Page) error { ids = append(ids, p.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// indexNames lists the store's index objects.
func indexNames(t testing.TB, st *store.Store) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := st.Objects().List(ctx, "index/", func(in backend.Info) error { names[in.Name] = true; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// Index object layout (docs/store-format.md): a 44-byte header, then 45-byte
// entries starting with the chunk id (77 bytes for a delta entry of index
// version 2).
const (
	indexHeaderLen = 6 + 2 + 32 + 4
	indexEntryLen  = 32 + 1 + 4 + 4 + 4
)

// newChunks counts, by kind, the chunks in index objects that were not in
// before: what the store gained, read from the store itself.
func newChunks(t testing.TB, st *store.Store, before map[string]bool) map[chunk.Kind]int {
	t.Helper()
	if _, err := packsOf(t, st).LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	kinds := map[chunk.Kind]int{}
	for name := range indexNames(t, st) {
		if before[name] {
			continue
		}
		data, err := st.Objects().Get(ctx, name, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		n := int(binary.BigEndian.Uint32(data[indexHeaderLen-4:]))
		o := indexHeaderLen
		for range n {
			if len(data)-o < indexEntryLen {
				t.Fatalf("index %s: %d entries in %d bytes", name, n, len(data))
			}
			var id chunker.ID
			copy(id[:], data[o:])
			if data[o+32]&0x80 != 0 { // a delta entry (index version 2): base id follows
				o += 32
			}
			o += indexEntryLen
			ci, ok := indexOf(t, st).Locate(id)
			if !ok {
				t.Fatalf("chunk %s of index %s is not located", id.Short(), name)
			}
			kinds[ci.Kind]++
		}
	}
	return kinds
}

// changedPages compares two database files page by page and returns the
// number of pages of b that differ from a (or lie beyond its end) and the
// sum of their zstd sizes, each page compressed alone at the default level:
// the "page bound" the store's additions are measured against.
func changedPages(t testing.TB, a, b string) (changed int, zstdBytes int64) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	var old, frame []byte
	_, err = chunker.Split(fb, func(p chunker.Page) error {
		old = append(old[:0], make([]byte, len(p.Data))...)
		n, err := fa.ReadAt(old, int64(p.Index)*int64(len(p.Data)))
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if n == len(p.Data) && bytes.Equal(old, p.Data) {
			return nil
		}
		changed++
		frame = enc.EncodeAll(p.Data, frame[:0])
		zstdBytes += int64(len(frame))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return changed, zstdBytes
}

// touchAndCompact sends TouchPages(frac) and one small unrelated change (the
// newest change is never sealed) through the node's journal and compacts.
// It returns the hooks sent, the number of rows touched and the result.
func touchAndCompact(t testing.TB, n *history.Node, g *workload.Generator, dbPath string, frac float64) ([]workload.Hook, int, history.CompactResult) {
	t.Helper()
	var hooks []workload.Hook
	touched := 0
	send := func(h workload.Hook) error {
		hooks = append(hooks, h)
		_, err := n.Journal().Append(h.Record())
		return err
	}
	if err := g.TouchPages(dbPath, frac, func(h workload.Hook) error {
		touched += len(h.Statements) - 1
		return send(h)
	}); err != nil {
		t.Fatal(err)
	}
	if err := g.Block(send); err != nil {
		t.Fatal(err)
	}
	res, err := n.Compact(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest == nil {
		t.Fatal("compaction wrote no snapshot")
	}
	return hooks, touched, res
}

// TestDedupOnePercent changes 1% of a generated database's pages through the
// journal and compacts: the store must gain exactly the changed pages (plus
// list or patch chunks and the change chunk), and no more bytes than 1.3x the
// changed pages compressed one by one.
func TestDedupOnePercent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbPath, g := buildDB(t, dir, 1, dedupSize(t))
	st, _ := newStore(t)
	m1, n := initNode(t, st, dbPath, dir)

	before := indexNames(t, st)
	hooks, touched, res := touchAndCompact(t, n, g, dbPath, 0.01)
	kinds := newChunks(t, st, before)
	snap := res.Manifest
	if want := hooks[len(hooks)-2].Version; snap.Snapshot.Version != want {
		t.Fatalf("snapshot at data_version %d, want %d (the newest change must stay in the journal)", snap.Snapshot.Version, want)
	}

	oldPath, _ := restore(t, st, history.RestoreOptions{Manifest: m1.Seq})
	newPath, _ := restore(t, st, history.RestoreOptions{Manifest: snap.Seq})
	changed, zstdBytes := changedPages(t, oldPath, newPath)
	t.Logf("%d pages (%d MB): %d rows touched, %d pages changed; new chunks: %d page, %d list, %d patch, %d change; added %d bytes, changed pages alone in zstd %d bytes: %.3fx",
		snap.Snapshot.Pages, snap.Snapshot.Size()>>20, touched, changed, kinds[chunk.KindPage], kinds[chunk.KindList], kinds[chunk.KindPatch], kinds[chunk.KindChange],
		res.Added, zstdBytes, float64(res.Added)/float64(zstdBytes))

	if changed != touched+2 {
		t.Errorf("%d pages changed for %d touched rows; want the touched leaves, page 1 and the vars page", changed, touched)
	}
	if kinds[chunk.KindPage] != changed {
		t.Errorf("store gained %d page chunks, %d pages changed", kinds[chunk.KindPage], changed)
	}
	if got, want := snap.Stats.NewChunks, changed+kinds[chunk.KindList]+kinds[chunk.KindPatch]; got != want {
		t.Errorf("snapshot manifest counts %d new chunks, the store gained %d pages + lists + patches", got, want)
	}
	if kinds[chunk.KindList]+kinds[chunk.KindPatch] == 0 {
		t.Error("no list or patch chunk for the new page table")
	}
	if res.Sealed.Manifest == nil || kinds[chunk.KindChange] != res.Sealed.Manifest.Stats.NewChunks {
		t.Errorf("store gained %d change chunks; seal: %+v", kinds[chunk.KindChange], res.Sealed)
	}
	if ratio := float64(res.Added) / float64(zstdBytes); ratio > 1.3 {
		t.Errorf("compaction added %d bytes, %.2fx the changed pages' zstd size %d (limit 1.3x)", res.Added, ratio, zstdBytes)
	}

	// The newest state equals the same hooks applied directly.
	got, rr := restore(t, st, history.RestoreOptions{})
	if rr.Version != g.Version() {
		t.Fatalf("restored data_version %d, want %d", rr.Version, g.Version())
	}
	if err := workload.Build(dbPath, workload.Hooks(hooks...)); err != nil {
		t.Fatal(err)
	}
	assertSame(t, "newest state", got, dbPath)
}

// TestTwoNodesShareChunks inits nodes from two different databases of the
// same schema: the second reuses the pages they have in common, and a node
// inited from a copy of an existing node's database adds nothing.
func TestTwoNodesShareChunks(t *testing.T) {
	t.Parallel()
	size := int64(4 << 20)
	if testing.Short() {
		size = 2 << 20
	}
	st, _ := newStore(t)
	dbA, _ := buildDB(t, t.TempDir(), 1, size)
	dbB, _ := buildDB(t, t.TempDir(), 2, size)

	if _, err := history.Init(ctx, st, "a", dbA, nil); err != nil {
		t.Fatal(err)
	}
	pathA, _ := restore(t, st, history.RestoreOptions{Node: "a"})
	inA := map[chunker.ID]bool{}
	for _, id := range pageIDs(t, pathA) {
		inA[id] = true
	}

	before := indexNames(t, st)
	mB, err := history.Init(ctx, st, "b", dbB, nil)
	if err != nil {
		t.Fatal(err)
	}
	kinds := newChunks(t, st, before)
	pathB, _ := restore(t, st, history.RestoreOptions{Node: "b"})
	idsB := pageIDs(t, pathB)
	shared, fresh := 0, map[chunker.ID]bool{}
	for _, id := range idsB {
		if inA[id] {
			shared++
		} else {
			fresh[id] = true
		}
	}
	t.Logf("node b: %d pages, %d of them already stored by node a; %d new page chunks, %d reused chunks", len(idsB), shared, kinds[chunk.KindPage], mB.Stats.ReusedChunks)
	if shared == 0 || mB.Stats.ReusedChunks < shared {
		t.Fatalf("node b shares %d pages with node a but reused %d chunks", shared, mB.Stats.ReusedChunks)
	}
	if kinds[chunk.KindPage] != len(fresh) {
		t.Fatalf("node b added %d page chunks, has %d distinct pages not in node a", kinds[chunk.KindPage], len(fresh))
	}

	for _, tc := range []struct{ node, db string }{{"a-clone", dbA}, {"b-clone", dbB}} {
		m, err := history.Init(ctx, st, tc.node, tc.db, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.Stats.NewChunks != 0 || m.Stats.AddedBytes != 0 {
			t.Errorf("%s: a clone added %d chunks, %d bytes", tc.node, m.Stats.NewChunks, m.Stats.AddedBytes)
		}
		if want := int(m.Snapshot.Pages) + len(m.Snapshot.Lists); m.Stats.ReusedChunks != want {
			t.Errorf("%s: reused %d chunks, want %d pages + lists", tc.node, m.Stats.ReusedChunks, want)
		}
	}
}
