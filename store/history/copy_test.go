package history_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// copySource is a store whose node n1 received the trace's hooks from
// index from to index upto (exclusive), compacting before the hooks of
// compactAt and sealing every 97 hooks. The node stays open: the source
// is live while it is copied.
type copySource struct {
	st   *store.Store
	url  string
	n    *history.Node
	recs []journal.Record
	fed  int
}

func newCopySource(t *testing.T, trace string) *copySource {
	t.Helper()
	st, url := newStore(t)
	_, n := initNode(t, st, "", t.TempDir())
	return &copySource{st: st, url: url, n: n, recs: traceRecords(t, trace)}
}

func (s *copySource) feedUpTo(t *testing.T, upto int, compactAt map[int]bool) {
	t.Helper()
	for ; s.fed < upto && s.fed < len(s.recs); s.fed++ {
		if compactAt[s.fed] {
			if _, err := s.n.Compact(ctx, nil); err != nil {
				t.Fatalf("compact before hook %d: %v", s.fed, err)
			}
		}
		if s.fed%97 == 0 {
			if _, err := s.n.Seal(ctx); err != nil {
				t.Fatalf("seal before hook %d: %v", s.fed, err)
			}
		}
		feed(t, s.n, s.recs[s.fed])
	}
}

func copyNodes(t *testing.T, src, dst *store.Store) history.CopyResult {
	t.Helper()
	res, err := history.Copy(ctx, src, dst, history.CopyOptions{})
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	return res
}

// assertCopied checks that dst restores like src: every manifest dst
// holds (all of them with all, else the newest two), a few versions, and
// the newest state with the journal; and that the journals after the
// newest manifest hold the same records with the same seqs.
func assertCopied(t *testing.T, src, dst *store.Store, all bool) {
	t.Helper()
	seqs, err := dst.ManifestSeqs(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	srcSeqs, _ := src.ManifestSeqs(ctx, "n1")
	if len(seqs) != len(srcSeqs) {
		t.Fatalf("destination holds manifests %v, source %v", seqs, srcSeqs)
	}
	if !all {
		seqs = seqs[max(0, len(seqs)-2):]
	}
	for _, seq := range seqs {
		want, _ := restore(t, src, history.RestoreOptions{Manifest: seq})
		got, _ := restore(t, dst, history.RestoreOptions{Manifest: seq})
		assertSame(t, "manifest copied", got, want)
	}
	wres := assertNewest(t, src, dst)
	for _, v := range []uint32{1, 57, wres.Version / 2, wres.Version - 1} {
		want, _ := restore(t, src, history.RestoreOptions{Version: &v})
		got, _ := restore(t, dst, history.RestoreOptions{Version: &v})
		assertSame(t, "version copied", got, want)
	}
}

// assertNewest checks that dst's newest state (manifest and journal)
// restores like src's and that the journals after the newest manifest hold
// the same records with the same seqs.
func assertNewest(t *testing.T, src, dst *store.Store) history.RestoreResult {
	t.Helper()
	want, wres := restore(t, src, history.RestoreOptions{})
	got, gres := restore(t, dst, history.RestoreOptions{})
	if gres.Version != wres.Version {
		t.Fatalf("newest state copied at data_version %d, source at %d", gres.Version, wres.Version)
	}
	assertSame(t, "newest state copied", got, want)
	if a, b := journalTail(t, src), journalTail(t, dst); !sameRecords(a, b) {
		t.Fatalf("journal after the newest manifest: destination %v, source %v", seqsOfRecords(b), seqsOfRecords(a))
	}
	return wres
}

func journalTail(t *testing.T, st *store.Store) []journal.Record {
	t.Helper()
	m, err := st.LatestManifest(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	var out []journal.Record
	if err := st.ReadJournal(ctx, "n1", m.JournalSeq, func(r journal.Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameRecords(a, b []journal.Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Seq != b[i].Seq || a[i].Version != b[i].Version || !a[i].Time.Equal(b[i].Time) || strings.Join(a[i].Statements, ";") != strings.Join(b[i].Statements, ";") {
			return false
		}
	}
	return true
}

func seqsOfRecords(rs []journal.Record) []uint64 {
	var out []uint64
	for _, r := range rs {
		out = append(out, r.Seq)
	}
	return out
}

// TestCopyFileToFile: a live node's history (trace1, compactions, seals, a
// journal tail) copied to an empty store restores equal at every manifest,
// several versions and the newest state; a second run copies nothing; the
// source goes on (more changes, a compaction) and the next run copies just
// that; a live writer on the destination node makes the copy refuse,
// naming it.
func TestCopyFileToFile(t *testing.T) {
	t.Parallel()
	src := newCopySource(t, "trace1.jsonl")
	src.feedUpTo(t, 300, map[int]bool{1: true, 5: true, 100: true, 250: true})
	dst, _ := newStore(t)

	res := copyNodes(t, src.st, dst)
	srcSeqs, _ := src.st.ManifestSeqs(ctx, "n1")
	if res.Mode != history.CopyAsStored || res.Manifests != len(srcSeqs) || res.Chunks == 0 || res.ReadBack == 0 || res.Nodes[0].JournalHeld == 0 {
		t.Fatalf("first copy: %+v", res)
	}
	assertCopied(t, src.st, dst, true)

	again := copyNodes(t, src.st, dst)
	if again.Manifests != 0 || again.Chunks != 0 || again.JournalRecords != 0 || again.Bytes != 0 || again.ManifestsSkipped != len(srcSeqs) {
		t.Fatalf("second copy copied something: %+v", again)
	}

	src.feedUpTo(t, len(src.recs), map[int]bool{386: true})
	more := copyNodes(t, src.st, dst)
	if more.Manifests == 0 || more.ManifestsSkipped != len(srcSeqs) || more.Chunks >= res.Chunks {
		t.Fatalf("copy after the source went on: %+v (first copy: %d chunks)", more, res.Chunks)
	}
	assertCopied(t, src.st, dst, false)
	got, _ := restore(t, dst, history.RestoreOptions{})
	assertSame(t, "newest state copied", got, filepath.Join("..", "..", "testdata", "trace1-final.sqlite3"))

	// A live writer on the destination node.
	n, err := history.OpenNode(ctx, dst, "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	_, err = history.Copy(ctx, src.st, dst, history.CopyOptions{Nodes: []string{"n1"}})
	if !errors.Is(err, store.ErrLeaseHeld) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("copy onto a node with a live writer: %v", err)
	}
}

// rewindAt is the index of the first hook that re-sends the version of the
// non-PRAGMA hook before it (lightningd's rewind after a crash).
func rewindAt(t *testing.T, recs []journal.Record) int {
	t.Helper()
	for i := 1; i < len(recs); i++ {
		if !recs[i].PragmaOnly() && recs[i].Version == recs[i-1].Version && !recs[i-1].PragmaOnly() {
			return i
		}
	}
	t.Fatal("no rewind in the trace")
	return 0
}

// TestCopyRewoundJournal: crash3's rewind (lightningd re-sent a version it
// had not committed) leaves the source's journal with a gap in its seqs.
// Copied before the rewind, the destination holds the uncommitted change;
// copied again after it, the destination's record is replaced as the
// source's was, and the journals hold the same records with the same
// seqs, gap included.
func TestCopyRewoundJournal(t *testing.T) {
	t.Parallel()
	src := newCopySource(t, "crash3.jsonl")
	at := rewindAt(t, src.recs)
	src.feedUpTo(t, at, map[int]bool{50: true, 300: true})
	dst, _ := newStore(t)
	copyNodes(t, src.st, dst)
	assertCopied(t, src.st, dst, false)

	src.feedUpTo(t, at+5, nil)
	tail := journalTail(t, src.st)
	gap := false
	for i := 1; i < len(tail); i++ {
		gap = gap || tail[i].Seq != tail[i-1].Seq+1
	}
	if !gap {
		t.Fatalf("fixture: no gap in the source's journal seqs %v", seqsOfRecords(tail))
	}
	res := copyNodes(t, src.st, dst)
	if res.JournalRecords != 5 {
		t.Fatalf("copied %d journal records, want 5 (the rewind and 4 more)", res.JournalRecords)
	}
	assertCopied(t, src.st, dst, false)

	// A fresh destination gets the gap in one go.
	dst2, _ := newStore(t)
	copyNodes(t, src.st, dst2)
	assertCopied(t, src.st, dst2, false)
}

// TestCopyReencode: between stores whose list chunks differ (list_entries
// 256), manifests are rewritten through plaintext and restore equal; a
// second run copies nothing. A version-2 store with deltas copied to a
// version-1 store gets full pages, and to a version-2 store keeps the
// deltas as stored.
func TestCopyReencode(t *testing.T) {
	t.Parallel()
	src := newCopySource(t, "trace1.jsonl")
	src.feedUpTo(t, 200, map[int]bool{1: true, 100: true, 150: true})
	p := store.DefaultParams()
	p.ListEntries = 256
	url := "file://" + filepath.Join(t.TempDir(), "store")
	dst, _, err := store.Create(ctx, url, store.Options{Params: &p})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	res := copyNodes(t, src.st, dst)
	if res.Mode != history.CopyReencode || !strings.Contains(res.Reason, "list_entries") {
		t.Fatalf("copy to other list_entries: %+v", res)
	}
	assertCopied(t, src.st, dst, true)
	if again := copyNodes(t, src.st, dst); again.Manifests != 0 || again.Chunks != 0 || again.JournalRecords != 0 {
		t.Fatalf("second re-encoding copy copied something: %+v", again)
	}
	// And back: the store of other params as the source.
	back, _ := newStore(t)
	copyNodes(t, dst, back)
	assertCopied(t, src.st, back, false)

	url2, want, m3, deltas, _, _ := deltaFixture(t, nil)
	dsrc, err := store.Open(ctx, url2, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dsrc.Close()
	for _, version := range []int{1, 2} {
		ddst, _ := newVersionStore(t, version, nil)
		res := copyNodes(t, dsrc, ddst)
		if res.Mode != history.CopyAsStored {
			t.Fatalf("copy to a version-%d store: %+v", version, res)
		}
		got, _ := restore(t, ddst, history.RestoreOptions{Manifest: m3.Seq})
		assertSame(t, "snapshot with deltas copied", got, want)
		kept := deltaPages(t, ddst, got)
		if version == 1 && len(kept) > 0 || version == 2 && len(kept) != len(deltas) {
			t.Fatalf("version-%d destination holds %d deltas, the source %d", version, len(kept), len(deltas))
		}
		for seq := uint64(1); seq < m3.Seq; seq++ {
			want, _ := restore(t, dsrc, history.RestoreOptions{Manifest: seq})
			got, _ := restore(t, ddst, history.RestoreOptions{Manifest: seq})
			assertSame(t, "manifest copied", got, want)
		}
	}
}

// TestCopyThroughServer: file → store server (a node token: no packs, no
// deltas, journals on the server) → file restores equal at every
// manifest and at the newest state: the server's journal is started at the
// source's next record (journal-start), so the journal tail is copied too.
func TestCopyThroughServer(t *testing.T) {
	t.Parallel()
	src := newCopySource(t, "trace1.jsonl")
	src.feedUpTo(t, 250, map[int]bool{1: true, 100: true, 200: true})
	mid, _ := newStore(t)
	rmid, _ := remoteStore(t, mid, "n1")
	res := copyNodes(t, src.st, rmid)
	if res.Manifests == 0 || res.Nodes[0].JournalNote != "" || res.JournalRecords == 0 {
		t.Fatalf("copy to a server: %+v", res)
	}
	dst, _ := newStore(t)
	res = copyNodes(t, rmid, dst)
	if res.Manifests == 0 || res.Nodes[0].JournalNote != "" {
		t.Fatalf("copy from a server: %+v", res)
	}
	seqs, _ := src.st.ManifestSeqs(ctx, "n1")
	for _, seq := range seqs {
		want, _ := restore(t, src.st, history.RestoreOptions{Manifest: seq})
		got, _ := restore(t, dst, history.RestoreOptions{Manifest: seq})
		assertSame(t, "manifest copied through a server", got, want)
	}
	want, _ := restore(t, src.st, history.RestoreOptions{})
	got, _ := restore(t, dst, history.RestoreOptions{})
	assertSame(t, "newest state copied through a server", got, want)
	if again := copyNodes(t, src.st, rmid); again.Manifests != 0 || again.Chunks != 0 {
		t.Fatalf("second copy to the server copied something: %+v", again)
	}
}

// TestCopyInterrupted stops copies at every step of a copy (windows of a
// few chunks: many steps) and checks the destination: whatever it holds
// restores equal to the source at the same data_version. The copy then
// resumes, skipping what it had copied, and the destination equals the
// source.
func TestCopyInterrupted(t *testing.T) {
	runCopyInterrupted(t, func(t *testing.T) *store.Store {
		dst, _ := newStore(t)
		return dst
	}, 7)
}

// runCopyInterrupted is TestCopyInterrupted into stores newDst makes, at
// up to stops points spread over the copy. It sets the package's copy
// hooks, so its callers do not run in parallel.
func runCopyInterrupted(t *testing.T, newDst func(t *testing.T) *store.Store, stops int) {
	defer history.SetCopyWindows(64, 64)()
	src := newCopySource(t, "trace1.jsonl")
	src.feedUpTo(t, 260, map[int]bool{1: true, 100: true, 200: true})
	steps := 0
	restoreStep := history.SetCopyStep(func() { steps++ })
	probe, _ := newStore(t)
	copyNodes(t, src.st, probe)
	restoreStep()
	if steps < 10 {
		t.Fatalf("a copy takes only %d steps", steps)
	}
	at := []int{1, steps / 5, 2 * steps / 5, 3 * steps / 5, 4 * steps / 5, steps - 3, steps - 1}
	if stops < len(at) {
		at = []int{1, steps / 2, steps - 1}[:max(stops, 1)]
	}
	for _, stop := range at {
		dst := newDst(t)
		cctx, cancel := context.WithCancel(ctx)
		n := 0
		undo := history.SetCopyStep(func() {
			if n++; n == stop {
				cancel()
			}
		})
		_, err := history.Copy(cctx, src.st, dst, history.CopyOptions{})
		undo()
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("copy stopped at step %d: %v", stop, err)
		}
		held, _ := dst.ManifestSeqs(ctx, "n1")
		if len(held) > 0 {
			got, res := restore(t, dst, history.RestoreOptions{})
			want, _ := restore(t, src.st, history.RestoreOptions{Version: &res.Version})
			assertSame(t, "copy stopped midway", got, want)
		}
		res := copyNodes(t, src.st, dst)
		if res.ManifestsSkipped != len(held) {
			t.Fatalf("resumed copy skipped %d manifests, the destination held %d", res.ManifestsSkipped, len(held))
		}
		assertNewest(t, src.st, dst)
	}
}

// TestCopyLiveSource: the source node goes on while it is copied (more
// changes and a compaction between two manifests of the copy): the copy
// finds the source moved when it reads the journal, copies the new
// manifests, and the destination ends equal to the source.
func TestCopyLiveSource(t *testing.T) {
	src := newCopySource(t, "trace1.jsonl")
	src.feedUpTo(t, 200, map[int]bool{1: true, 100: true})
	dst, _ := newStore(t)
	step := 0
	defer history.SetCopyStep(func() {
		if step++; step == 2 {
			src.feedUpTo(t, 260, map[int]bool{230: true})
		}
	})()
	res := copyNodes(t, src.st, dst)
	if src.fed != 260 {
		t.Fatal("the source did not go on during the copy")
	}
	seqs, _ := src.st.ManifestSeqs(ctx, "n1")
	if res.Manifests != len(seqs) {
		t.Fatalf("copied %d manifests, the source holds %d", res.Manifests, len(seqs))
	}
	assertNewest(t, src.st, dst)
}

// TestCopyDamagedSource: a body damaged in the source's pack is refused
// before it is written (the copy fails naming the damage), and the
// destination holds only restore points that restore.
func TestCopyDamagedSource(t *testing.T) {
	t.Parallel()
	src := newCopySource(t, "trace1.jsonl")
	src.feedUpTo(t, 120, map[int]bool{1: true, 100: true})
	packs, err := filepath.Glob(filepath.Join(strings.TrimPrefix(src.url, "file://"), "packs", "*", "*"))
	if err != nil || len(packs) == 0 {
		t.Fatalf("packs: %v %v", packs, err)
	}
	biggest, size := "", int64(0)
	for _, p := range packs {
		if fi, err := os.Stat(p); err == nil && fi.Size() > size {
			biggest, size = p, fi.Size()
		}
	}
	data, err := os.ReadFile(biggest)
	if err != nil {
		t.Fatal(err)
	}
	data[size/4] ^= 0x55 // in the bodies, far from the trailer
	if err := os.WriteFile(biggest, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dst, _ := newStore(t)
	_, err = history.Copy(ctx, src.st, dst, history.CopyOptions{})
	if !errors.Is(err, chunk.ErrCorrupt) {
		t.Fatalf("copy of a damaged source: %v", err)
	}
	seqs, _ := dst.ManifestSeqs(ctx, "n1")
	for _, seq := range seqs {
		restore(t, dst, history.RestoreOptions{Manifest: seq})
	}
}
