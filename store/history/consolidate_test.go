package history_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/packs"
)

func countPacks(t *testing.T, st *store.Store) int {
	t.Helper()
	n := 0
	if err := st.Objects().List(ctx, "packs/", func(backend.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGCConsolidatesSmallPacks: every compaction leaves a small pack; once
// they are older than the grace period, gc rewrites their live chunks into
// full packs and deletes them, and every restore point restores exactly as
// before; the store verifies clean; a young pack is left alone.
func TestGCConsolidatesSmallPacks(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	dir := t.TempDir()
	_, url := newStore(t)
	st := openWithClock(t, url, clock)
	g := workload.New(workload.Config{Seed: 3, TargetBytes: 1 << 20, UpdateFrac: 0.03, DeleteFrac: 0.01, InsertFrac: 0.03, HotRows: true})
	db := filepath.Join(dir, "lightningd.sqlite3")
	if err := workload.Build(db, g.Populate); err != nil {
		t.Fatal(err)
	}
	if _, err := history.Init(ctx, st, "n1", db, nil); err != nil {
		t.Fatal(err)
	}
	n, err := history.OpenNode(ctx, st, "n1")
	if err != nil {
		t.Fatal(err)
	}
	n.TempDir = dir
	send := func(h workload.Hook) error { _, err := n.Journal().Append(h.Record()); return err }
	for range 5 {
		if err := g.Step(send); err != nil {
			t.Fatal(err)
		}
		if err := g.Block(send); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Compact(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	seqs, err := st.ManifestSeqs(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	before := map[uint64][]byte{}
	for _, seq := range seqs {
		p, _ := restore(t, st, history.RestoreOptions{Node: "n1", Manifest: seq})
		if before[seq], err = os.ReadFile(p); err != nil {
			t.Fatal(err)
		}
	}
	small := countPacks(t, st)
	if small < 5 {
		t.Fatalf("%d packs after 5 compactions: want a small pack each", small)
	}
	if r := gc(t, st); r.ConsolidatedPacks != 0 {
		t.Fatalf("young packs consolidated: %+v", r)
	}
	clock.Advance(testGrace + time.Minute)
	dry, err := history.GC(ctx, st, packs.GCOptions{Grace: testGrace, DryRun: true})
	if err != nil || dry.ConsolidatedPacks != small || countPacks(t, st) != small {
		t.Fatalf("dry run: %+v %v; %d packs, had %d", dry, err, countPacks(t, st), small)
	}
	r := gc(t, st)
	if r.ConsolidatedPacks != small || r.ConsolidatedInto != 1 || r.DeletedChunks != 0 {
		t.Fatalf("gc consolidated %d packs into %d (deleted %d chunks); want all %d into 1", r.ConsolidatedPacks, r.ConsolidatedInto, r.DeletedChunks, small)
	}
	if got := countPacks(t, st); got != 1 {
		t.Fatalf("%d packs after consolidation, want 1", got)
	}
	// A fresh Store (no cached index) restores every restore point as
	// before, and verifies clean.
	st2 := openWithClock(t, url, clock)
	for _, seq := range seqs {
		p, _ := restore(t, st2, history.RestoreOptions{Node: "n1", Manifest: seq, Dest: filepath.Join(t.TempDir(), "r.sqlite3")})
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(before[seq]) {
			t.Fatalf("restore point %d differs after consolidation", seq)
		}
	}
	ir, err := packsOf(t, st2).VerifyIndex(ctx, nil)
	if err != nil || len(ir.Problems) > 0 {
		t.Fatalf("verify index: %v %+v", err, ir.Problems)
	}
	pr, err := packsOf(t, st2).VerifyPacks(ctx, nil, nil)
	if err != nil || len(pr.Problems) > 0 {
		t.Fatalf("verify packs: %v %+v", err, pr.Problems)
	}
	// The new pack is young: a later run leaves it, and there is no
	// second small pack anyway.
	if r := gc(t, st2); r.ConsolidatedPacks != 0 || r.Packs != 1 {
		t.Fatalf("second gc: %+v", r)
	}
}
