package history_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/packs"
)

// deltaDBSize is the database of the delta tests (small: they run with -race).
const deltaDBSize = 3 << 20

// newVersionStore creates a store of the given format version (0: current)
// with the given clock (nil: real time).
func newVersionStore(t testing.TB, version int, clock *testClock) (*store.Store, string) {
	t.Helper()
	url := "file://" + filepath.Join(t.TempDir(), "store")
	opts := store.Options{FormatVersion: version}
	if version == store.EncryptedFormatVersion {
		opts = unlocked()
		opts.Encrypt = &store.Encryption{Passphrase: []byte(testPass), KDF: testKDF}
	}
	if clock != nil {
		opts.Now, opts.MaxWriterAge = clock.Now, testWriterAge
	}
	st, created, err := store.Create(ctx, url, opts)
	if err != nil || !created {
		t.Fatalf("create store: %v (created %v)", err, created)
	}
	t.Cleanup(func() { st.Close() })
	return st, url
}

// deltaPages returns the pages of a restored database stored as deltas,
// with their bases.
func deltaPages(t testing.TB, st *store.Store, path string) map[chunker.ID]chunker.ID {
	t.Helper()
	ids := pageIDs(t, path)
	l, err := st.Lookup(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	out := map[chunker.ID]chunker.ID{}
	for _, id := range ids {
		info, ok := l.Locate(id)
		if !ok {
			t.Fatalf("page %s not located", id.Short())
		}
		if info.Base != (chunker.ID{}) {
			out[id] = info.Base
		}
	}
	return out
}

// restoreAll restores every manifest of node n1 and checks that each
// snapshot manifest restores equal to the seal before it (same
// data_version, rebuilt from the previous snapshot and the changes).
func restoreAll(t *testing.T, st *store.Store) map[uint64]string {
	t.Helper()
	seqs, err := st.ManifestSeqs(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[uint64]string{}
	byVersion := map[uint32]string{}
	for _, seq := range seqs {
		p, res := restore(t, st, history.RestoreOptions{Manifest: seq})
		paths[seq] = p
		if other, ok := byVersion[res.Version]; ok {
			assertSame(t, "manifest "+res.Node, p, other)
		}
		byVersion[res.Version] = p
	}
	return paths
}

// TestDeltaCompaction: on a version-2 store, a compaction after ~1% of the
// pages changed stores the changed pages as deltas against their previous
// versions, adding far fewer bytes than the pages alone; a second
// compaction deltas against the full bases (never against a delta); every
// restore point restores equal. A version-1 store never gets a delta.
//
// With windows of a few pages, the snapshots and restores cross many
// window and base-batch boundaries (pages repeated across windows, bases
// of one window stored in another).
func TestDeltaCompaction(t *testing.T) {
	for _, tc := range []struct {
		version int
		windows bool
	}{{2, false}, {1, false}, {2, true}} {
		version := tc.version
		name := "v" + string(rune('0'+version))
		if tc.windows {
			name += "-small-windows"
		}
		t.Run(name, func(t *testing.T) {
			if tc.windows {
				defer history.SetWindows(7, 11, 3)()
			}
			dir := t.TempDir()
			dbPath, g := buildDB(t, dir, 3, deltaDBSize)
			st, url := newVersionStore(t, version, nil)
			if got := st.Config().Version; got != version {
				t.Fatalf("store version %d, want %d", got, version)
			}
			m1, n := initNode(t, st, dbPath, dir)
			prevPath, _ := restore(t, st, history.RestoreOptions{Manifest: m1.Seq})
			for round := 1; round <= 2; round++ {
				hooks, _, res := touchAndCompact(t, n, g, dbPath, 0.01)
				newPath, _ := restore(t, st, history.RestoreOptions{Manifest: res.Manifest.Seq})
				changed, zstdBytes := changedPages(t, prevPath, newPath)
				deltas := deltaPages(t, st, newPath)
				ratio := float64(res.Added) / float64(zstdBytes)
				t.Logf("round %d: %d pages changed (%d bytes in zstd), %d stored as deltas; compaction added %d bytes: %.3fx", round, changed, zstdBytes, len(deltas), res.Added, ratio)
				if version == 1 {
					if len(deltas) > 0 {
						t.Fatalf("a version-1 store got %d deltas", len(deltas))
					}
				} else {
					if len(deltas) < changed/2 {
						t.Errorf("only %d of %d changed pages stored as deltas", len(deltas), changed)
					}
					if ratio > 0.6 {
						t.Errorf("compaction added %.2fx the changed pages' zstd size (want < 0.6x with deltas)", ratio)
					}
					for id, base := range deltas {
						if info, ok := locate(t, st, base); !ok || info.Base != (chunker.ID{}) {
							t.Fatalf("delta %s has base %s stored as %+v (bases must be full copies)", id.Short(), base.Short(), info)
						}
					}
				}
				if err := workload.Build(dbPath, workload.Hooks(hooks...)); err != nil {
					t.Fatal(err)
				}
				prevPath = newPath
			}
			got, _ := restore(t, st, history.RestoreOptions{})
			assertSame(t, "newest state", got, dbPath)
			restoreAll(t, st)
			// Every index object is of the store's index version.
			for name := range indexNames(t, st) {
				data, err := st.Objects().Get(ctx, name, 0, -1)
				if err != nil {
					t.Fatal(err)
				}
				if v := int(data[6])<<8 | int(data[7]); v != version {
					t.Fatalf("index %s has format version %d in a version-%d store", name, v, version)
				}
			}
			// A fresh Store reads it all back (verify decodes every delta).
			st2, err := store.Open(ctx, url, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st2.Close()
			rep, err := history.Verify(ctx, st2, history.VerifyOptions{ReadData: true})
			if err != nil || !rep.OK() {
				t.Fatalf("verify: %v %+v", err, rep.Problems)
			}
		})
	}
}

// deltaFixture makes a version-2 store whose node n1 has an initial
// snapshot (manifest 1), a seal (2) and a snapshot (3) with deltas whose
// bases only manifests 1 and 2 name. It returns the store's URL, manifest
// 3 restored, and the deltas of manifest 3 with their bases; g and dbPath
// are the workload and the node's database (the newest state).
func deltaFixture(t *testing.T, clock *testClock) (url, want string, m3 *manifest.Manifest, deltas map[chunker.ID]chunker.ID, g *workload.Generator, dbPath string) {
	t.Helper()
	dir := t.TempDir()
	dbPath, g = buildDB(t, dir, 4, deltaDBSize)
	st, url := newVersionStore(t, 0, clock)
	if _, err := history.Init(ctx, st, "n1", dbPath, nil); err != nil {
		t.Fatal(err)
	}
	n, err := history.OpenNode(ctx, st, "n1")
	if err != nil {
		t.Fatal(err)
	}
	n.TempDir = dir
	hooks, _, res := touchAndCompact(t, n, g, dbPath, 0.01)
	n.Close()
	if err := workload.Build(dbPath, workload.Hooks(hooks...)); err != nil {
		t.Fatal(err)
	}
	m3 = res.Manifest
	if m3.Seq != 3 {
		t.Fatalf("snapshot is manifest %d, want 3", m3.Seq)
	}
	want, _ = restore(t, st, history.RestoreOptions{Manifest: 3})
	deltas = deltaPages(t, st, want)
	inM3 := map[chunker.ID]bool{}
	for _, id := range pageIDs(t, want) {
		inM3[id] = true
	}
	onlyOld := 0
	for _, base := range deltas {
		if !inM3[base] {
			onlyOld++
		}
	}
	if len(deltas) == 0 || onlyOld == 0 {
		t.Fatalf("fixture: %d deltas, %d of them with a base manifest 3 does not name", len(deltas), onlyOld)
	}
	return url, want, m3, deltas, g, dbPath
}

// TestGCKeepsDeltaBases: a page stored full in manifest 1 is the base of a
// delta in manifest 3. Manifest 3 names its pages through manifest 1's list
// chunks plus a patch (and the lists still name the bases), so its page
// table is copied, as fresh list chunks, to the one manifest of node n2,
// and n1's manifests are forgotten: only the deltas then need the bases.
// gc (run past the grace period, three times) must neither condemn nor
// delete them, also when it repacks or consolidates the base's pack; n2's
// manifest restores byte-identical throughout.
func TestGCKeepsDeltaBases(t *testing.T) {
	t.Parallel()
	for _, rewrite := range []bool{false, true} {
		name := "keep packs"
		opts := packs.GCOptions{Grace: testGrace, ConsolidateBelow: -1, RepackBelow: 1e-9}
		if rewrite {
			name = "repack and consolidate"
			opts = packs.GCOptions{Grace: testGrace, ConsolidateBelow: 1 << 30, RepackBelow: 0.999}
		}
		t.Run(name, func(t *testing.T) {
			clock := &testClock{}
			url, want, m3, deltas, _, _ := deltaFixture(t, clock)
			st := openWithClock(t, url, clock)
			copyToFreshLists(t, st, m3, want, "n2", clock.Now())
			for _, seq := range []uint64{1, 2, 3} {
				if err := st.DeleteManifest(ctx, "n1", seq); err != nil {
					t.Fatal(err)
				}
			}
			basePack := map[chunker.ID]chunker.ID{}
			if _, err := packsOf(t, st).LoadIndex(ctx); err != nil {
				t.Fatal(err)
			}
			for _, base := range deltas {
				info, _ := indexOf(t, st).Locate(base)
				basePack[base] = info.Pack
			}
			var rewritten int
			for run := 1; run <= 3; run++ {
				clock.Advance(testGrace + time.Minute)
				rep, err := history.GC(ctx, st, opts)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("gc %d: %+v", run, rep)
				rewritten += rep.RepackedPacks + rep.ConsolidatedPacks
				if run == 1 && rep.NewlyCondemned == 0 {
					t.Fatal("gc condemned nothing: manifests 1 and 2 named chunks no one else does")
				}
				// A fresh reader: every base is stored, uncondemned.
				st2 := openWithClock(t, url, clock)
				if _, err := packsOf(t, st2).LoadIndex(ctx); err != nil {
					t.Fatal(err)
				}
				for id, base := range deltas {
					if !indexOf(t, st2).Has(base) {
						t.Fatalf("gc %d: base %s of delta %s is gone or condemned", run, base.Short(), id.Short())
					}
				}
				got, _ := restore(t, st2, history.RestoreOptions{Node: "n2", Manifest: 1})
				if !sameFile(t, got, want) {
					t.Fatalf("gc %d: the snapshot restores different bytes", run)
				}
				if rewrite && run == 3 {
					moved := 0
					for base, pack := range basePack {
						if info, _ := indexOf(t, st2).Locate(base); info.Pack != pack {
							moved++
						}
					}
					if rewritten == 0 || moved == 0 {
						t.Fatalf("gc rewrote %d packs and moved %d bases: the test did not move a base", rewritten, moved)
					}
				}
			}
			if rep, err := history.Verify(ctx, openWithClock(t, url, clock), history.VerifyOptions{ReadData: true}); err != nil || !rep.OK() {
				t.Fatalf("verify after gc: %v %+v", err, rep.Problems)
			}
		})
	}
}

// copyToFreshLists writes a manifest of node (created) whose snapshot is
// m's, with the page table of its restored database path as new list
// chunks.
func copyToFreshLists(t *testing.T, st *store.Store, m *manifest.Manifest, path, node string, now time.Time) {
	t.Helper()
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	tab := pageIDs(t, path)
	snap := m.Snapshot
	snap.Lists, snap.Patches = nil, nil
	for start := 0; start < len(tab); start += 1024 {
		id, isNew, err := w.Put(ctx, chunk.KindList, manifest.EncodeList(tab[start:min(len(tab), start+1024)]))
		if err != nil || !isNew {
			t.Fatalf("list chunk: %v (new %v)", err, isNew)
		}
		snap.Lists = append(snap.Lists, id)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateNode(ctx, store.NodeInfo{Name: node}); err != nil {
		t.Fatal(err)
	}
	if err := putManifest(ctx, st, &manifest.Manifest{Format: manifest.FormatVersion, Node: node, Seq: 1, Created: now, Snapshot: snap}); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyMissingBase: verify reports a delta whose base's pack is gone,
// naming the delta's pack and the restore points that need the delta.
func TestVerifyMissingBase(t *testing.T) {
	t.Parallel()
	url, _, m3, deltas, _, _ := deltaFixture(t, nil)
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := packsOf(t, st).LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	var id, base chunker.ID
	for id, base = range deltas {
		break
	}
	bi, _ := indexOf(t, st).Locate(base)
	di, _ := indexOf(t, st).Locate(id)
	if bi.Pack == di.Pack {
		t.Fatal("fixture: the delta and its base share a pack")
	}
	dir := strings.TrimPrefix(url, "file://")
	s := bi.Pack.String()
	if err := os.Remove(filepath.Join(dir, "packs", s[:2], s)); err != nil {
		t.Fatal(err)
	}
	rep, err := history.Verify(ctx, st, history.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range rep.Problems {
		t.Logf("problem: %s: %s; affects %v", p.Object, p.Problem, p.Affects)
		if strings.Contains(p.Object, di.Pack.String()) && strings.Contains(p.Problem, "deltas of base chunks") {
			for _, c := range p.Chunks {
				if c == id {
					found = true
				}
			}
			for _, want := range []history.RestorePoint{{Node: "n1", Manifest: m3.Seq}, {Node: "n1", Newest: true}} {
				if !containsRP(p.Affects, want) {
					t.Errorf("problem %q does not name %s", p.Problem, want)
				}
			}
		}
	}
	if !found {
		t.Fatalf("no problem names delta %s of the lost base %s", id.Short(), base.Short())
	}
	// Reading the delta fails naming it, its base and its pack.
	_, err = st.Get(ctx, id)
	if err == nil || !strings.Contains(err.Error(), id.String()) || !strings.Contains(err.Error(), base.String()) || !strings.Contains(err.Error(), di.Pack.String()) {
		t.Fatalf("read of a delta without its base: %v", err)
	}
}

// TestDeltaRestoreThroughServer: a node client of a store server restores
// a store holding deltas (the server sends delta bodies with their base
// ids; the client asks for the bases), and compacts through it with full
// pages only.
func TestDeltaRestoreThroughServer(t *testing.T) {
	t.Parallel()
	url, want, m3, _, g, dbPath := deltaFixture(t, nil)
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rst, _ := remoteStore(t, st, "n1")
	if rst.DeltasAllowed() {
		t.Fatal("a node client may write deltas")
	}
	got, _ := restore(t, rst, history.RestoreOptions{Manifest: m3.Seq})
	if !sameFile(t, got, want) {
		t.Fatal("restore through the server differs")
	}
	// Compact through the server: the pages it adds are full.
	n, err := history.OpenNode(ctx, rst, "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	n.TempDir = t.TempDir()
	hooks, _, res := touchAndCompact(t, n, g, dbPath, 0.01)
	if err := workload.Build(dbPath, workload.Hooks(hooks...)); err != nil {
		t.Fatal(err)
	}
	newPath, _ := restore(t, st, history.RestoreOptions{Manifest: res.Manifest.Seq})
	for id, base := range deltaPages(t, st, newPath) {
		if info, _ := indexOf(t, st).Locate(id); info.Pack != (chunker.ID{}) {
			// Deltas of manifest 3 are still there; new pages must be full.
			if _, was := m3Pages(t, st, want)[id]; !was {
				t.Fatalf("page %s written through the server as a delta of %s", id.Short(), base.Short())
			}
		}
	}
	got, _ = restore(t, rst, history.RestoreOptions{})
	assertSame(t, "newest state through the server", got, dbPath)
}

func m3Pages(t testing.TB, st *store.Store, path string) map[chunker.ID]bool {
	out := map[chunker.ID]bool{}
	for _, id := range pageIDs(t, path) {
		out[id] = true
	}
	return out
}

func sameFile(t testing.TB, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}

func containsRP(rps []history.RestorePoint, r history.RestorePoint) bool {
	for _, x := range rps {
		if x == r {
			return true
		}
	}
	return false
}

// TestGCKeepsFullCopyOverFreshDelta: a chunk whose full copy gc condemned
// is stored again by a writer as a delta; once a manifest names it, gc
// rescues the full copy rather than let the delta copy replace it (a base
// must keep a full copy), and the chunk reads back.
func TestGCKeepsFullCopyOverFreshDelta(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	_, url := newVersionStore(t, 0, clock)
	st := openWithClock(t, url, clock)
	base := make([]byte, 4096)
	for i := range base {
		base[i] = byte(i * i >> 3) // compresses poorly alone
	}
	page := append([]byte(nil), base...)
	copy(page[100:], "changed")
	baseID, pageID := chunker.Sum(base), chunker.Sum(page)
	commit := func(st *store.Store, w *store.Writer, node string, id chunker.ID) {
		t.Helper()
		list, _, err := w.Put(ctx, chunk.KindList, manifest.EncodeList([]chunker.ID{id}))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := st.CreateNode(ctx, store.NodeInfo{Name: node}); err != nil {
			t.Fatal(err)
		}
		m := &manifest.Manifest{Format: manifest.FormatVersion, Node: node, Seq: 1, Created: clock.Now(),
			Snapshot: manifest.Snapshot{Version: 1, PageSize: 4096, Pages: 1, Lists: []chunker.ID{list}}}
		if err := putManifest(ctx, st, m); err != nil {
			t.Fatal(err)
		}
	}
	// The base, named by a manifest; the page full, named by none.
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.PutID(ctx, chunk.KindPage, baseID, base)
	commit(st, w, "keep", baseID)
	w.PutID(ctx, chunk.KindPage, pageID, page)
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	clock.Advance(testGrace + time.Minute)
	if r := gc(t, st); r.NewlyCondemned == 0 {
		t.Fatalf("nothing condemned: %+v", r)
	}
	// A writer that sees the condemned record stores the page again, as a
	// delta, and commits a manifest naming it.
	ws := openWithClock(t, url, clock)
	w, err = ws.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	know(t, w, ws, pageID, baseID)
	if isNew, err := w.PutDelta(ctx, pageID, page, baseID, base); err != nil || !isNew {
		t.Fatalf("put delta: %v %v", err, isNew)
	}
	commit(ws, w, "n", pageID)
	if w.Stats().DeltaChunks != 1 {
		t.Fatalf("the page was not stored as a delta: %+v", w.Stats())
	}
	for run := 1; run <= 2; run++ {
		clock.Advance(testGrace + time.Minute)
		gc(t, st)
		fresh := openWithClock(t, url, clock)
		if _, err := packsOf(t, fresh).LoadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		if info, ok := indexOf(t, fresh).Locate(pageID); !ok || info.Base != (chunker.ID{}) || !indexOf(t, fresh).Has(pageID) {
			t.Fatalf("gc %d: the page's full copy is gone (located %v as %+v)", run, ok, info)
		}
		if data, err := fresh.Get(ctx, pageID); err != nil || !bytes.Equal(data, page) {
			t.Fatalf("gc %d: read back: %v", run, err)
		}
	}
}
