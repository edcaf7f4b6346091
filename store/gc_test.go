package store

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
)

// The sweep is tested here with synthetic live sets (a Marker that marks
// what the test says); gc of real histories, whose live sets come from
// manifests, is tested in store/history.

// gcClock is a store clock the test moves past grace periods.
type gcClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *gcClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *gcClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const (
	gcTestWriterAge = time.Minute
	gcTestGrace     = 2 * gcTestWriterAge
)

// newGCStore is a store with a clock of its own and one pack per chunk
// group put.
func newGCStore(t *testing.T) (*Store, *gcClock) {
	t.Helper()
	clock := &gcClock{t: time.Now()}
	dir := filepath.Join(t.TempDir(), "store")
	st, _, err := Create(ctx, "file://"+dir, Options{Now: clock.now, MaxWriterAge: gcTestWriterAge})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, clock
}

// putGroup stores n new chunks (seeded by seed) as one pack.
func putGroup(t *testing.T, st *Store, seed byte, n int) []chunker.ID {
	t.Helper()
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var ids []chunker.ID
	for i := range n {
		id, _, err := w.Put(ctx, KindPage, bytes.Repeat([]byte{seed, byte(i), 3}, 1000))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return ids
}

// marking is a Marker that marks the chunks of live (read when it runs).
func marking(live *[]chunker.ID) Marker {
	return func(_ context.Context, _ func(context.Context, chunker.ID) ([]byte, error), use func(chunker.ID)) (MarkCount, error) {
		for _, id := range *live {
			use(id)
		}
		return MarkCount{Nodes: 1, Manifests: 1}, nil
	}
}

func gcRunOf(t *testing.T, st *Store, opts GCOptions, mark Marker) GCReport {
	t.Helper()
	if opts.Grace == 0 {
		opts.Grace = gcTestGrace
	}
	rep, err := st.packs.GC(ctx, opts, mark)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// readable reports which of ids a fresh lookup finds and reads back.
func readable(t *testing.T, st *Store, ids []chunker.ID) (n int) {
	t.Helper()
	for _, id := range ids {
		if _, err := st.Get(ctx, id); err == nil {
			n++
		} else if !errors.Is(err, ErrChunkMissing) {
			t.Fatalf("read %s: %v", id.Short(), err)
		}
	}
	return n
}

// TestGCPlanExecute: the two phases of a sweep, run by run, for live sets
// that make a pack deleted, repacked, kept, or consolidated.
func TestGCPlanExecute(t *testing.T) {
	tests := []struct {
		name string
		// liveA, liveB: how many of the 10 chunks of packs A and B are live.
		liveA, liveB int
		// After the deleting run:
		deletedPacks, repackedPacks, consolidated int
		readableA, readableB                      int
	}{
		{name: "nothing live", liveA: 0, liveB: 0, deletedPacks: 2, readableA: 0, readableB: 0},
		{name: "one pack live", liveA: 10, liveB: 0, deletedPacks: 1, readableA: 10, readableB: 0},
		{name: "mostly dead pack repacked", liveA: 2, liveB: 10, repackedPacks: 1, readableA: 2, readableB: 10},
		{name: "small live packs consolidated", liveA: 10, liveB: 10, consolidated: 2, readableA: 10, readableB: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, clock := newGCStore(t)
			a, b := putGroup(t, st, 1, 10), putGroup(t, st, 2, 10)
			live := append(append([]chunker.ID(nil), a[:tc.liveA]...), b[:tc.liveB]...)
			mark := marking(&live)
			// Young packs are not touched.
			if r := gcRunOf(t, st, GCOptions{}, mark); r.YoungChunks != 20-len(live) || r.NewlyCondemned != 0 {
				t.Fatalf("young run: %+v", r)
			}
			clock.advance(gcTestGrace + time.Second)
			// Run 1 condemns the dead chunks and deletes nothing.
			r1 := gcRunOf(t, st, GCOptions{}, mark)
			if r1.NewlyCondemned != 20-len(live) || r1.DeletedPacks+r1.RepackedPacks != 0 || r1.LiveChunks != len(live) {
				t.Fatalf("condemning run: %+v", r1)
			}
			if readable(t, st, a) != 10 || readable(t, st, b) != 10 {
				t.Fatal("a condemned chunk was deleted before its grace period")
			}
			clock.advance(gcTestGrace + time.Second)
			r2 := gcRunOf(t, st, GCOptions{}, mark)
			// Packs whose chunks are all live need no grace period to be
			// consolidated: the first run past their youth does it.
			if r2.DeletedPacks != tc.deletedPacks || r2.RepackedPacks != tc.repackedPacks || r1.ConsolidatedPacks+r2.ConsolidatedPacks != tc.consolidated {
				t.Fatalf("deleting run: %+v", r2)
			}
			if ra, rb := readable(t, st, a), readable(t, st, b); ra != tc.readableA || rb != tc.readableB {
				t.Fatalf("readable after gc: %d of A, %d of B; want %d, %d", ra, rb, tc.readableA, tc.readableB)
			}
			for _, id := range live {
				if _, err := st.Get(ctx, id); err != nil {
					t.Fatalf("live chunk %s: %v", id.Short(), err)
				}
			}
		})
	}
}

// TestGCRescue: a condemned chunk that becomes live again before its grace
// period ends (a writer reused it and committed) is rescued.
func TestGCRescue(t *testing.T) {
	t.Parallel()
	st, clock := newGCStore(t)
	ids := putGroup(t, st, 5, 10)
	var live []chunker.ID
	mark := marking(&live)
	clock.advance(gcTestGrace + time.Second)
	if r := gcRunOf(t, st, GCOptions{}, mark); r.NewlyCondemned != 10 {
		t.Fatalf("condemning run: %+v", r)
	}
	live = ids[:4]
	clock.advance(gcTestGrace + time.Second)
	r := gcRunOf(t, st, GCOptions{}, mark)
	if r.RescuedChunks != 4 || r.RepackedPacks != 1 {
		t.Fatalf("rescuing run: %+v", r)
	}
	if n := readable(t, st, ids); n != 4 {
		t.Fatalf("%d chunks readable after the rescue, want 4", n)
	}
}

// TestGCDryRunPlan: a dry run's plan reports what a run would do, holds no
// lock, writes nothing, and cannot be executed.
func TestGCDryRunPlan(t *testing.T) {
	t.Parallel()
	st, clock := newGCStore(t)
	ids := putGroup(t, st, 7, 10)
	var live []chunker.ID
	clock.advance(gcTestGrace + time.Second)
	plan, err := st.packs.PlanGC(ctx, GCOptions{Grace: gcTestGrace, DryRun: true}, marking(&live))
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	if r := plan.Report(); !r.DryRun || r.NewlyCondemned != 10 {
		t.Fatalf("dry plan: %+v", r)
	}
	if _, err := plan.Execute(ctx); err == nil {
		t.Fatal("a dry run's plan was executed")
	}
	if set, name, err := newestCondemned(ctx, st.be); err != nil || name != "" || set.len() != 0 {
		t.Fatalf("a dry run wrote a condemned record: %q %v", name, err)
	}
	// A real plan can be made meanwhile: the dry run holds no lock.
	real, err := st.packs.PlanGC(ctx, GCOptions{Grace: gcTestGrace}, marking(&live))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := real.Execute(ctx); err != nil {
		t.Fatal(err)
	}
	real.Close()
	if n := readable(t, st, ids); n != 10 {
		t.Fatalf("condemning run deleted chunks: %d readable", n)
	}
}

// TestGCMarkerError: a marker that fails stops the run before anything is
// written, and the lock is released.
func TestGCMarkerError(t *testing.T) {
	t.Parallel()
	st, clock := newGCStore(t)
	putGroup(t, st, 9, 3)
	clock.advance(gcTestGrace + time.Second)
	boom := errors.New("damaged manifest")
	failing := func(context.Context, func(context.Context, chunker.ID) ([]byte, error), func(chunker.ID)) (MarkCount, error) {
		return MarkCount{}, boom
	}
	if _, err := st.packs.GC(ctx, GCOptions{Grace: gcTestGrace}, failing); !errors.Is(err, boom) {
		t.Fatalf("gc with a failing marker: %v", err)
	}
	var none []chunker.ID
	if r := gcRunOf(t, st, GCOptions{}, marking(&none)); r.NewlyCondemned != 3 {
		t.Fatalf("run after a failed one: %+v", r)
	}
}

// TestGCLock: while a plan holds the gc lock no other run can plan; once it
// is closed one can.
func TestGCLock(t *testing.T) {
	t.Parallel()
	st, _ := newGCStore(t)
	var none []chunker.ID
	plan, err := st.packs.PlanGC(ctx, GCOptions{Grace: gcTestGrace}, marking(&none))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.packs.PlanGC(ctx, GCOptions{Grace: gcTestGrace}, marking(&none)); err == nil {
		t.Fatal("two gc runs planned at once")
	}
	plan.Close()
	again, err := st.packs.PlanGC(ctx, GCOptions{Grace: gcTestGrace}, marking(&none))
	if err != nil {
		t.Fatalf("plan after the lock was released: %v", err)
	}
	again.Close()
}
