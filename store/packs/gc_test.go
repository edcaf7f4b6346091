package packs

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"

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

// newGCPacks is packs on a clock of their own.
func newGCPacks(t *testing.T) (*Packs, *gcClock) {
	t.Helper()
	clock := &gcClock{t: time.Now()}
	return newTestPacks(t, clock.now), clock
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

func gcRunOf(t *testing.T, p *Packs, opts GCOptions, mark Marker) GCReport {
	t.Helper()
	if opts.Grace == 0 {
		opts.Grace = gcTestGrace
	}
	rep, err := p.GC(ctx, opts, mark)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// readable reports which of ids a fresh lookup finds and reads back.
func readable(t *testing.T, p *Packs, ids []chunker.ID) (n int) {
	t.Helper()
	for _, id := range ids {
		if _, err := p.Get(ctx, id); err == nil {
			n++
		} else if !errors.Is(err, chunk.ErrMissing) {
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
			p, clock := newGCPacks(t)
			a, b := putPack(t, p, 1, 10), putPack(t, p, 2, 10)
			live := append(append([]chunker.ID(nil), a[:tc.liveA]...), b[:tc.liveB]...)
			mark := marking(&live)
			// Young packs are not touched.
			if r := gcRunOf(t, p, GCOptions{}, mark); r.YoungChunks != 20-len(live) || r.NewlyCondemned != 0 {
				t.Fatalf("young run: %+v", r)
			}
			clock.advance(gcTestGrace + time.Second)
			// Run 1 condemns the dead chunks and deletes nothing.
			r1 := gcRunOf(t, p, GCOptions{}, mark)
			if r1.NewlyCondemned != 20-len(live) || r1.DeletedPacks+r1.RepackedPacks != 0 || r1.LiveChunks != len(live) {
				t.Fatalf("condemning run: %+v", r1)
			}
			if readable(t, p, a) != 10 || readable(t, p, b) != 10 {
				t.Fatal("a condemned chunk was deleted before its grace period")
			}
			clock.advance(gcTestGrace + time.Second)
			r2 := gcRunOf(t, p, GCOptions{}, mark)
			// Packs whose chunks are all live need no grace period to be
			// consolidated: the first run past their youth does it.
			if r2.DeletedPacks != tc.deletedPacks || r2.RepackedPacks != tc.repackedPacks || r1.ConsolidatedPacks+r2.ConsolidatedPacks != tc.consolidated {
				t.Fatalf("deleting run: %+v", r2)
			}
			if ra, rb := readable(t, p, a), readable(t, p, b); ra != tc.readableA || rb != tc.readableB {
				t.Fatalf("readable after gc: %d of A, %d of B; want %d, %d", ra, rb, tc.readableA, tc.readableB)
			}
			for _, id := range live {
				if _, err := p.Get(ctx, id); err != nil {
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
	p, clock := newGCPacks(t)
	ids := putPack(t, p, 5, 10)
	var live []chunker.ID
	mark := marking(&live)
	clock.advance(gcTestGrace + time.Second)
	if r := gcRunOf(t, p, GCOptions{}, mark); r.NewlyCondemned != 10 {
		t.Fatalf("condemning run: %+v", r)
	}
	live = ids[:4]
	clock.advance(gcTestGrace + time.Second)
	r := gcRunOf(t, p, GCOptions{}, mark)
	if r.RescuedChunks != 4 || r.RepackedPacks != 1 {
		t.Fatalf("rescuing run: %+v", r)
	}
	if n := readable(t, p, ids); n != 4 {
		t.Fatalf("%d chunks readable after the rescue, want 4", n)
	}
}

// TestGCDryRunPlan: a dry run's plan reports what a run would do, holds no
// lock, writes nothing, and cannot be executed.
func TestGCDryRunPlan(t *testing.T) {
	t.Parallel()
	p, clock := newGCPacks(t)
	ids := putPack(t, p, 7, 10)
	var live []chunker.ID
	clock.advance(gcTestGrace + time.Second)
	plan, err := p.PlanGC(ctx, GCOptions{Grace: gcTestGrace, DryRun: true}, marking(&live))
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
	if set, name, err := newestCondemned(ctx, p.be); err != nil || name != "" || set.len() != 0 {
		t.Fatalf("a dry run wrote a condemned record: %q %v", name, err)
	}
	// A real plan can be made meanwhile: the dry run holds no lock.
	real, err := p.PlanGC(ctx, GCOptions{Grace: gcTestGrace}, marking(&live))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := real.Execute(ctx); err != nil {
		t.Fatal(err)
	}
	real.Close()
	if n := readable(t, p, ids); n != 10 {
		t.Fatalf("condemning run deleted chunks: %d readable", n)
	}
}

// TestGCMarkerError: a marker that fails stops the run before anything is
// written, and the lock is released.
func TestGCMarkerError(t *testing.T) {
	t.Parallel()
	p, clock := newGCPacks(t)
	putPack(t, p, 9, 3)
	clock.advance(gcTestGrace + time.Second)
	boom := errors.New("damaged manifest")
	failing := func(context.Context, func(context.Context, chunker.ID) ([]byte, error), func(chunker.ID)) (MarkCount, error) {
		return MarkCount{}, boom
	}
	if _, err := p.GC(ctx, GCOptions{Grace: gcTestGrace}, failing); !errors.Is(err, boom) {
		t.Fatalf("gc with a failing marker: %v", err)
	}
	var none []chunker.ID
	if r := gcRunOf(t, p, GCOptions{}, marking(&none)); r.NewlyCondemned != 3 {
		t.Fatalf("run after a failed one: %+v", r)
	}
}

// TestGCLock: while a plan holds the gc lock no other run can plan; once it
// is closed one can.
func TestGCLock(t *testing.T) {
	t.Parallel()
	p, _ := newGCPacks(t)
	var none []chunker.ID
	plan, err := p.PlanGC(ctx, GCOptions{Grace: gcTestGrace}, marking(&none))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PlanGC(ctx, GCOptions{Grace: gcTestGrace}, marking(&none)); err == nil {
		t.Fatal("two gc runs planned at once")
	}
	plan.Close()
	again, err := p.PlanGC(ctx, GCOptions{Grace: gcTestGrace}, marking(&none))
	if err != nil {
		t.Fatalf("plan after the lock was released: %v", err)
	}
	again.Close()
}

// TestGCExclusive: an exclusive run (the caller holds off every writer)
// deletes and repacks in one run what the two phases take two runs and
// two grace periods for, young packs included, and still writes the
// condemned record before anything goes; BeforeDelete failing deletes
// nothing.
func TestGCExclusive(t *testing.T) {
	tests := []struct {
		name                                      string
		liveA, liveB                              int
		refuse                                    bool
		deletedPacks, repackedPacks, consolidated int
		readableA, readableB                      int
	}{
		{name: "nothing live", liveA: 0, liveB: 0, deletedPacks: 2},
		{name: "one pack live", liveA: 10, liveB: 0, deletedPacks: 1, readableA: 10},
		{name: "mostly dead pack repacked", liveA: 2, liveB: 10, repackedPacks: 1, readableA: 2, readableB: 10},
		{name: "small live packs consolidated", liveA: 10, liveB: 10, consolidated: 2, readableA: 10, readableB: 10},
		{name: "BeforeDelete refuses", liveA: 0, liveB: 0, refuse: true, readableA: 10, readableB: 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, _ := newGCPacks(t) // packs just written: young for a normal run
			a, b := putPack(t, p, 1, 10), putPack(t, p, 2, 10)
			live := append(append([]chunker.ID(nil), a[:tc.liveA]...), b[:tc.liveB]...)
			var checked bool
			opts := GCOptions{Grace: gcTestGrace, Exclusive: true, BeforeDelete: func(ctx context.Context) error {
				checked = true
				n := 0
				if err := p.be.List(ctx, condemnedPrefix, func(backend.Info) error { n++; return nil }); err != nil || n == 0 {
					t.Errorf("no condemned record before deleting: %d, %v", n, err)
				}
				if tc.refuse {
					return errors.New("a node appeared")
				}
				return nil
			}}
			r, err := p.GC(ctx, opts, marking(&live))
			if tc.refuse != (err != nil) || !checked {
				t.Fatalf("err %v, BeforeDelete called %v", err, checked)
			}
			if !tc.refuse && (r.DeletedPacks != tc.deletedPacks || r.RepackedPacks != tc.repackedPacks || r.ConsolidatedPacks != tc.consolidated ||
				r.YoungChunks+r.NewlyCondemned+r.WaitingChunks != 0 || !r.Exclusive) {
				t.Fatalf("exclusive run: %+v", r)
			}
			if got := readable(t, p, a); got != tc.readableA {
				t.Errorf("pack A: %d chunks readable, want %d", got, tc.readableA)
			}
			if got := readable(t, p, b); got != tc.readableB {
				t.Errorf("pack B: %d chunks readable, want %d", got, tc.readableB)
			}
		})
	}
}
