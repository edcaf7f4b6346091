package history_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// The verify tests damage a copy of one realistic store in each of the ways
// the issue lists and check two things: verify reports the damage, and the
// restore points it names are exactly those that really fail to restore
// (every manifest and every node's newest state is restored in a fresh
// Store, as another process would).

var vctx = context.Background()

const testdataDir = "../../testdata/"

// fixture is a store with three nodes: "a" recorded from a real db_write
// trace with compactions (manifests sharing chunks, a journal after the
// newest), "b" initialised from a real database, and "j" whose journal is
// cut into small segments.
var fixture struct {
	once sync.Once
	dir  string
	err  error
}

func fixtureStore(t *testing.T) (dir, url string) {
	t.Helper()
	fixture.once.Do(func() {
		base, err := os.MkdirTemp("", "verify-fixture")
		if err != nil {
			fixture.err = err
			return
		}
		fixture.dir = filepath.Join(base, "store")
		fixture.err = buildFixture(fixture.dir)
	})
	if fixture.err != nil {
		t.Fatalf("build fixture: %v", fixture.err)
	}
	dir = filepath.Join(t.TempDir(), "store")
	if err := os.CopyFS(dir, os.DirFS(fixture.dir)); err != nil {
		t.Fatal(err)
	}
	return dir, "file://" + dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixture.dir != "" {
		os.RemoveAll(filepath.Dir(fixture.dir))
	}
	if benchFixture.dir != "" {
		os.RemoveAll(benchFixture.dir)
	}
	os.Exit(code)
}

func buildFixture(dir string) error {
	st, _, err := store.Create(vctx, "file://"+dir, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	entries, err := replay.ReadTrace(testdataDir + "trace1.jsonl")
	if err != nil {
		return err
	}
	recs := replay.Records(entries)
	if _, err := history.Init(vctx, st, "a", "", nil); err != nil {
		return err
	}
	n, err := history.OpenNode(vctx, st, "a")
	if err != nil {
		return err
	}
	for i, r := range recs {
		if i == 120 || i == 250 || i == 330 {
			if _, err := n.Compact(vctx, nil); err != nil {
				return err
			}
		}
		if _, err := n.Journal().Append(r); err != nil {
			return err
		}
	}
	if err := n.Close(); err != nil {
		return err
	}
	if _, err := history.Init(vctx, st, "b", testdataDir+"crash3-final.sqlite3", nil); err != nil {
		return err
	}
	if _, err := history.Init(vctx, st, "j", "", nil); err != nil {
		return err
	}
	jdir := filepath.Join(dir, store.JournalObject("j"))
	j, err := journal.Open(jdir, journal.Options{SegmentSize: 16 << 10})
	if err != nil {
		return err
	}
	for _, r := range recs[:150] {
		if _, err := j.Append(r); err != nil {
			return err
		}
	}
	return j.Close()
}

// restorePoints lists every manifest of every node and each node's newest
// state.
func restorePoints(t *testing.T, st *store.Store) []history.RestorePoint {
	t.Helper()
	nodes, err := st.Nodes(vctx)
	if err != nil {
		t.Fatal(err)
	}
	var rps []history.RestorePoint
	for _, n := range nodes {
		seqs, err := st.ManifestSeqs(vctx, n)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range seqs {
			rps = append(rps, history.RestorePoint{Node: n, Manifest: s})
		}
		rps = append(rps, history.RestorePoint{Node: n, Newest: true})
	}
	return rps
}

// broken restores every restore point in a fresh Store and returns those
// that fail, sorted as verify sorts them.
func broken(t *testing.T, url string) []history.RestorePoint {
	t.Helper()
	st, err := store.Open(vctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out []history.RestorePoint
	for _, rp := range restorePoints(t, st) {
		opts := history.RestoreOptions{Node: rp.Node, Manifest: rp.Manifest, Dest: filepath.Join(t.TempDir(), "r.sqlite3")}
		if _, err := history.Restore(vctx, st, opts); err != nil {
			t.Logf("restore %s fails: %v", rp, err)
			out = append(out, rp)
		}
	}
	sortRPs(out)
	return out
}

func sortRPs(rs []history.RestorePoint) {
	sort.Slice(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.Node != b.Node {
			return a.Node < b.Node
		}
		if a.Newest != b.Newest {
			return b.Newest
		}
		return a.Manifest < b.Manifest
	})
}

func verify(t *testing.T, url string, opts history.VerifyOptions) history.VerifyReport {
	t.Helper()
	st, err := store.Open(vctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep, err := history.Verify(vctx, st, opts)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	for _, p := range rep.Problems {
		t.Logf("problem: %s: %s; affects %v", p.Object, p.Problem, p.Affects)
	}
	return rep
}

// affected is the union of the restore points the problems name.
func affected(rep history.VerifyReport) []history.RestorePoint {
	set := map[history.RestorePoint]bool{}
	for _, p := range rep.Problems {
		for _, r := range p.Affects {
			set[r] = true
		}
	}
	out := make([]history.RestorePoint, 0, len(set))
	for r := range set {
		out = append(out, r)
	}
	sortRPs(out)
	return out
}

// expectBroken checks that verify reports a problem on object (a prefix
// suffices), and that the restore points it names are exactly the ones that
// fail to restore, which must be some but not all.
func expectBroken(t *testing.T, url string, rep history.VerifyReport, object string) {
	t.Helper()
	if rep.OK() || !slices.ContainsFunc(rep.Problems, func(p history.VerifyProblem) bool { return strings.HasPrefix(p.Object, object) }) {
		t.Fatalf("verify did not report %s: %+v", object, rep.Problems)
	}
	want := broken(t, url)
	got := affected(rep)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("verify names restore points %v; those that fail to restore are %v", got, want)
	}
	if len(want) == 0 {
		t.Fatal("the damage broke no restore point: the test damages the wrong thing")
	}
}

func mustOpen(t *testing.T, url string) *store.Store {
	t.Helper()
	st, err := store.Open(vctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// pageOf returns the chunk id of page i (0-based) of a manifest's snapshot,
// read from its first list chunk.
func pageOf(t *testing.T, st *store.Store, node string, seq uint64, i int) chunker.ID {
	t.Helper()
	m, err := st.Manifest(vctx, node, seq)
	if err != nil {
		t.Fatal(err)
	}
	data, err := st.Get(vctx, m.Snapshot.Lists[0])
	if err != nil {
		t.Fatal(err)
	}
	ids, err := manifest.DecodeList(data)
	if err != nil {
		t.Fatal(err)
	}
	return ids[i]
}

func packPath(dir string, id chunker.ID) string {
	s := id.String()
	return filepath.Join(dir, "packs", s[:2], s)
}

func TestVerifyHealthy(t *testing.T) {
	t.Parallel()
	_, url := fixtureStore(t)
	for _, opts := range []history.VerifyOptions{{}, {ReadData: true}, {Node: "a", ReadData: true, Percent: 50}} {
		rep := verify(t, url, opts)
		journals := 2 // a and j; b never had a writer
		if opts.Node != "" {
			journals = 1
		}
		if !rep.OK() || rep.Nodes == 0 || rep.Manifests < 7 || rep.Journals != journals || rep.Chunks == 0 {
			t.Fatalf("healthy store %+v: %+v", opts, rep)
		}
		if opts.ReadData && (rep.ReadData == nil || rep.ReadData.Packs == 0 || rep.ReadData.Chunks == 0) {
			t.Fatalf("read-data read nothing: %+v", rep.ReadData)
		}
	}
	if b := broken(t, url); len(b) != 0 {
		t.Fatalf("healthy fixture has broken restore points: %v", b)
	}
}

func TestVerifyDeletedPack(t *testing.T) {
	t.Parallel()
	dir, url := fixtureStore(t)
	st := mustOpen(t, url)
	// A page of node a's first snapshot with data.
	seqs, _ := st.ManifestSeqs(vctx, "a")
	var victim chunker.ID
	for _, s := range seqs {
		if m, _ := st.Manifest(vctx, "a", s); m.Snapshot.Pages > 10 {
			victim = pageOf(t, st, "a", s, 5)
			break
		}
	}
	loc, ok := locate(t, st, victim)
	if !ok {
		t.Fatal("page not indexed")
	}
	if err := os.Remove(packPath(dir, loc.Pack)); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, url, history.VerifyOptions{})
	expectBroken(t, url, rep, "packs/"+loc.Pack.String()[:2]+"/"+loc.Pack.String())
}

func TestVerifyFlippedByte(t *testing.T) {
	t.Parallel()
	dir, url := fixtureStore(t)
	st := mustOpen(t, url)
	victim := pageOf(t, st, "b", 1, 20)
	flipChunk(t, dir, st, victim)
	// Structure is intact: only reading the data finds it.
	if rep := verify(t, url, history.VerifyOptions{}); !rep.OK() {
		t.Fatalf("structural verify found a flipped byte it cannot see: %+v", rep.Problems)
	}
	rep := verify(t, url, history.VerifyOptions{ReadData: true})
	expectBroken(t, url, rep, "packs/")
	if p := rep.Problems[0]; len(p.Chunks) != 1 || p.Chunks[0] != victim {
		t.Fatalf("damaged chunks %v, want only %s", p.Chunks, victim)
	}
	// A sample reads the share of packs asked for, at least one.
	rep = verify(t, url, history.VerifyOptions{ReadData: true, Percent: 0.001})
	if r := rep.ReadData; r.Packs != 1 || r.SampledOut != rep.Packs-1 {
		t.Fatalf("sample of 0.001%%: read %d packs, left out %d of %d", r.Packs, r.SampledOut, rep.Packs)
	}
}

// TestVerifyWhileWriting: verify runs while a writer appends to the journal
// and compacts (new packs, indexes and manifests, trimmed segments), and
// never reports a problem.
func TestVerifyWhileWriting(t *testing.T) {
	t.Parallel()
	_, url := fixtureStore(t)
	st := mustOpen(t, url)
	recs := replayRecords(t)
	if _, err := history.Init(vctx, st, "w", "", nil); err != nil {
		t.Fatal(err)
	}
	n, err := history.OpenNode(vctx, st, "w")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	done := make(chan error, 1)
	verified := make(chan struct{}, 1)
	go func() {
		for i, r := range recs {
			if i > 0 && i%40 == 0 {
				if _, err := n.Compact(vctx, nil); err != nil {
					done <- err
					return
				}
				<-verified // let verify runs overlap every stage
			}
			if _, err := n.Journal().Append(r); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	runs := 0
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if runs < 3 {
				t.Fatalf("only %d verify runs overlapped the writer", runs)
			}
			t.Logf("%d verify runs while writing", runs)
			return
		default:
		}
		if rep := verify(t, url, history.VerifyOptions{ReadData: runs%2 == 0}); !rep.OK() {
			t.Fatalf("verify run %d while writing: %+v", runs, rep.Problems)
		}
		runs++
		select {
		case verified <- struct{}{}:
		default:
		}
	}
}

func replayRecords(t *testing.T) []journal.Record {
	t.Helper()
	entries, err := replay.ReadTrace(testdataDir + "trace1.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	return replay.Records(entries)
}

// flipChunk damages one chunk's body inside its pack.
func flipChunk(t *testing.T, dir string, st *store.Store, id chunker.ID) {
	t.Helper()
	loc, ok := locate(t, st, id)
	if !ok {
		t.Fatalf("chunk %s not indexed", id)
	}
	path := packPath(dir, loc.Pack)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[int(loc.Offset)+int(loc.Length)/2] ^= 0x10
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyPatchedPages: a snapshot stored as lists plus patches needs the
// pages the patches set, not the ones they replace; verify names exactly
// the restore points whose final page table holds a damaged page.
func TestVerifyPatchedPages(t *testing.T) {
	t.Parallel()
	_, url := fixtureStore(t)
	st := mustOpen(t, url)
	seqs, _ := st.ManifestSeqs(vctx, "a")
	var m *manifest.Manifest
	for _, s := range seqs {
		if mm, _ := st.Manifest(vctx, "a", s); len(mm.Snapshot.Patches) > 0 {
			m = mm
			break
		}
	}
	if m == nil {
		t.Fatal("the fixture has no patched snapshot")
	}
	data, err := st.Get(vctx, m.Snapshot.Patches[0])
	if err != nil {
		t.Fatal(err)
	}
	p, err := manifest.DecodePatch(data)
	if err != nil || len(p.Entries) == 0 {
		t.Fatalf("patch: %v %+v", err, p)
	}
	e := p.Entries[0]
	for _, tc := range []struct {
		name string
		id   func() chunker.ID
	}{
		{"page set by a patch", func() chunker.ID { return e.ID }},
		{"page replaced by a patch", func() chunker.ID { return pageOf(t, st, "a", m.Seq, int(e.Page)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, url := fixtureStore(t)
			st := mustOpen(t, url)
			id := tc.id()
			flipChunk(t, dir, st, id)
			rep := verify(t, url, history.VerifyOptions{ReadData: true})
			expectBroken(t, url, rep, "packs/")
			// The page a patch sets may be stored as a delta of the page
			// it replaces: then damage to the replaced page breaks it too.
			loc, _ := locate(t, st, e.ID)
			want := tc.name == "page set by a patch" || loc.Base == id
			if slices.Contains(affected(rep), history.RestorePoint{Node: "a", Manifest: m.Seq}) != want {
				t.Fatalf("manifest %d (patched at page %d) wrongly judged: %v", m.Seq, e.Page, affected(rep))
			}
		})
	}
}

func TestVerifyTruncatedManifest(t *testing.T) {
	t.Parallel()
	dir, url := fixtureStore(t)
	path := filepath.Join(dir, filepath.FromSlash(store.ManifestObject("a", 3)))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw[:len(raw)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, url, history.VerifyOptions{})
	expectBroken(t, url, rep, store.ManifestObject("a", 3))
}

func TestVerifyMissingListChunk(t *testing.T) {
	t.Parallel()
	_, url := fixtureStore(t)
	st := mustOpen(t, url)
	m, err := st.Manifest(vctx, "b", 1)
	if err != nil {
		t.Fatal(err)
	}
	// A manifest naming a list chunk that was never stored.
	m2 := *m
	m2.Seq = 2
	m2.Snapshot.Lists = slices.Clone(m.Snapshot.Lists)
	m2.Snapshot.Lists[0] = chunker.Sum([]byte("a list chunk nobody stored"))
	if err := putManifest(vctx, st, &m2); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, url, history.VerifyOptions{})
	expectBroken(t, url, rep, "chunk "+m2.Snapshot.Lists[0].String())
	if got := affected(rep); fmt.Sprint(got) != "[b manifest 2 b newest state]" {
		t.Fatalf("affected %v", got)
	}
}

func TestVerifyDamagedJournal(t *testing.T) {
	t.Parallel()
	dir, url := fixtureStore(t)
	segs, err := filepath.Glob(filepath.Join(dir, "nodes", "j", "journal", "*.seg"))
	if err != nil || len(segs) < 3 {
		t.Fatalf("journal of node j has segments %v (%v); want several", segs, err)
	}
	sort.Strings(segs)
	raw, err := os.ReadFile(segs[0]) // the oldest: not the last segment
	if err != nil {
		t.Fatal(err)
	}
	raw[32+8+30] ^= 0x01 // inside the first record's payload
	if err := os.WriteFile(segs[0], raw, 0o644); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, url, history.VerifyOptions{})
	if len(rep.Problems) != 1 || rep.Problems[0].Object != store.JournalObject("j") {
		t.Fatalf("problems %+v", rep.Problems)
	}
	if got := affected(rep); fmt.Sprint(got) != "[j newest state]" {
		t.Fatalf("affected %v", got)
	}
	// The newest state needs the damaged records. (history.Restore also
	// refuses manifest 1, which needs no journal record: it reads the
	// journal first to learn the newest data_version. Manifest 1 itself is
	// intact, which is what verify reports.)
	st := mustOpen(t, url)
	if _, err := history.Restore(vctx, st, history.RestoreOptions{Node: "j", Dest: filepath.Join(t.TempDir(), "r")}); err == nil {
		t.Fatal("newest state of j restored from a damaged journal")
	}
	if b := broken(t, url); !slices.Contains(b, history.RestorePoint{Node: "j", Newest: true}) {
		t.Fatalf("broken %v", b)
	}
}

// TestVerifyDamagedCoveredJournal: damage in journal records a manifest
// already covers breaks no restore point, but is reported (the plugin's
// journal refuses to open with it).
func TestVerifyDamagedCoveredJournal(t *testing.T) {
	t.Parallel()
	dir, url := fixtureStore(t)
	st := mustOpen(t, url)
	// A manifest of j covering the first 100 journal records.
	m := &manifest.Manifest{Format: manifest.FormatVersion, Node: "j", Seq: 2, Created: time.Now(), JournalSeq: 100}
	if err := putManifest(vctx, st, m); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "nodes", "j", "journal", "*.seg"))
	sort.Strings(segs)
	raw, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	raw[32+8+30] ^= 0x01
	if err := os.WriteFile(segs[0], raw, 0o644); err != nil {
		t.Fatal(err)
	}
	rep := verify(t, url, history.VerifyOptions{Node: "j"})
	if len(rep.Problems) != 1 || rep.Problems[0].Object != store.JournalObject("j") || len(rep.Problems[0].Affects) != 0 ||
		!strings.Contains(rep.Problems[0].Problem, "cannot open this journal") {
		t.Fatalf("problems %+v", rep.Problems)
	}
	if rep.JournalRecords != 50 {
		t.Fatalf("%d journal records after manifest 2, want 50", rep.JournalRecords)
	}
}
