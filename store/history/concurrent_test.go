package history_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/packs"
)

// The concurrent test's parameters. The grace period is the shortest gc
// allows (twice the writers' limit, testWriterAge); the gc loop advances the
// shared clock by concAdvanceMin..concAdvanceMax after each run, so a
// condemned chunk is deleted a few runs later, and a compaction that spans
// one or two of those jumps is too old to commit and must start over.
const (
	concNodes      = 8
	concGrace      = 2 * testWriterAge
	concAdvanceMin = 20 * time.Second
	concAdvanceMax = 80 * time.Second
	concDBBytes    = 2 << 20
	concBaseSeed   = 7
	// concSlack is how many rounds an actor may run ahead of the slowest.
	concSlack = 2
)

// concRounds is the number of rounds: CLNBACKUP_LONG=1 asks for the long
// run (at least 200), CLNBACKUP_ROUNDS for any number.
func concRounds() int {
	if s := os.Getenv("CLNBACKUP_ROUNDS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return n
		}
	}
	if os.Getenv("CLNBACKUP_LONG") != "" {
		return 200
	}
	if testing.Short() {
		return 6
	}
	return 30
}

// pacer keeps concurrent actors within concSlack rounds of each other, so
// that every round sees every actor run while the order inside the window
// is left to chance. An actor that reached the target stops.
type pacer struct {
	mu      sync.Mutex
	cond    *sync.Cond
	done    []int
	target  int
	stopped bool
}

func newPacer(actors, target int) *pacer {
	p := &pacer{done: make([]int, actors), target: target}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *pacer) min() int {
	m := p.done[0]
	for _, d := range p.done[1:] {
		m = min(m, d)
	}
	return m
}

// next waits until actor may run its next round; false means stop.
func (p *pacer) next(actor int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.stopped && p.done[actor] < p.target && p.done[actor] > p.min()+concSlack {
		p.cond.Wait()
	}
	return !p.stopped && p.done[actor] < p.target
}

// finished records that actor completed a round.
func (p *pacer) finished(actor int) {
	p.mu.Lock()
	p.done[actor]++
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *pacer) stop() {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	p.cond.Broadcast()
}

func (p *pacer) rounds() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.min()
}

// jitter sleeps for a random short time, or just yields.
func jitter(r *rand.Rand) {
	switch r.IntN(4) {
	case 0:
	case 1:
		time.Sleep(time.Duration(r.IntN(200)) * time.Microsecond)
	default:
		time.Sleep(time.Duration(r.IntN(8000)) * time.Microsecond)
	}
}

// concWriter is one node's writer: its own Store (as a separate plugin
// process has), its Node, its workload and every hook it sent.
type concWriter struct {
	name  string
	st    *store.Store
	node  *history.Node
	gen   *workload.Generator
	hooks []workload.Hook
	rng   *rand.Rand

	steps, compactions, seals, tooOld int
}

// compact compacts, starting over while the writer is too old to commit:
// the clock jumped past MaxWriterAge while it worked, so gc may have
// condemned chunks it reused (the safety mechanism at work).
func (w *concWriter) compact() error {
	for try := 0; ; try++ {
		res, err := w.node.Compact(ctx, nil)
		if errors.Is(err, store.ErrWriterTooOld) && try < 100 {
			w.tooOld++
			continue
		}
		if err != nil {
			return fmt.Errorf("node %s: compact: %w", w.name, err)
		}
		if res.Sealed.Manifest != nil {
			w.seals++
		}
		if res.Manifest != nil {
			w.compactions++
		}
		return nil
	}
}

// round sends one workload step through the journal and, now and then,
// compacts.
func (w *concWriter) round() error {
	if err := w.node.LeaseErr(); err != nil {
		return err
	}
	jitter(w.rng)
	err := w.gen.Step(func(h workload.Hook) error {
		if _, err := w.node.Journal().Append(h.Record()); err != nil {
			return err
		}
		w.hooks = append(w.hooks, h)
		return nil
	})
	if err != nil {
		return fmt.Errorf("node %s: step: %w", w.name, err)
	}
	w.steps++
	jitter(w.rng)
	if w.rng.IntN(3) == 0 {
		return nil
	}
	return w.compact()
}

// TestConcurrentNodesForgetGC runs eight nodes' writers on one store (each
// with its own Store, as separate plugin processes), all started from the
// same database so that their snapshots share most chunks, while forget
// (keep the last 3) and gc (the shortest grace period, on an injected clock
// that the gc loop moves forward) run in loops. Timing is randomised from a
// logged seed (CLNBACKUP_SEED repeats it; the interleaving still varies).
// At the end every remaining manifest of every node restores to exactly the
// database its hooks give, the newest state of every node to all its hooks,
// and verify --read-data finds nothing broken; gc must have deleted data.
func TestConcurrentNodesForgetGC(t *testing.T) {
	t.Parallel() // the longest test: it overlaps the others (its clock is its own)
	_, url := newStore(t)
	runConcurrentNodesForgetGC(t, url, concNodes, concRounds(), openWithClock)
}

// runConcurrentNodesForgetGC is TestConcurrentNodesForgetGC on the store at
// url (created, empty) with nodes writers for rounds rounds, each actor's
// Store opened by open.
func runConcurrentNodesForgetGC(t *testing.T, url string, nodes, rounds int, open func(*testing.T, string, *testClock) *store.Store) {
	start := time.Now()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CLNBACKUP_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CLNBACKUP_SEED: %v", err)
		}
	}
	t.Logf("seed %d (CLNBACKUP_SEED=%d repeats it), %d rounds, %d nodes", seed, seed, rounds, nodes)

	dir := t.TempDir()
	base := filepath.Join(dir, "base.sqlite3")
	if err := workload.Build(base, workload.New(workload.Config{Seed: concBaseSeed, TargetBytes: concDBBytes}).Populate); err != nil {
		t.Fatal(err)
	}
	clock := &testClock{}

	writers := make([]*concWriter, nodes)
	for i := range writers {
		w := &concWriter{
			name: fmt.Sprintf("node%d", i),
			st:   open(t, url, clock),
			rng:  rand.New(rand.NewPCG(seed, uint64(i))),
			// One seed and size: the same populated database. Different
			// step fractions make the nodes' histories diverge.
			gen: workload.New(workload.Config{
				Seed: concBaseSeed, TargetBytes: concDBBytes, HotRows: i%2 == 0,
				UpdateFrac: 0.004 + 0.002*float64(i), DeleteFrac: 0.001, InsertFrac: 0.003,
			}),
		}
		if err := w.gen.Populate(func(workload.Hook) error { return nil }); err != nil {
			t.Fatal(err)
		}
		m, err := history.Init(ctx, w.st, w.name, base, nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.Snapshot.Version != w.gen.Version() {
			t.Fatalf("%s: init at data_version %d, the generator is at %d", w.name, m.Snapshot.Version, w.gen.Version())
		}
		if i > 0 && m.Stats.NewChunks != 0 {
			t.Fatalf("%s: init from the shared database stored %d new chunks", w.name, m.Stats.NewChunks)
		}
		if w.node, err = history.OpenNode(ctx, w.st, w.name); err != nil {
			t.Fatal(err)
		}
		w.node.TempDir = dir
		writers[i] = w
	}
	setup := time.Since(start)

	// Actors 0..nodes-1 are the writers, then gc, then forget.
	gcActor, forgetActor := nodes, nodes+1
	pace := newPacer(nodes+2, rounds)
	var (
		wg   sync.WaitGroup
		errs = make(chan error, nodes+2)
	)
	fail := func(err error) {
		errs <- err
		pace.stop()
	}
	for i, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pace.next(i) {
				if err := w.round(); err != nil {
					fail(err)
					return
				}
				pace.finished(i)
			}
		}()
	}

	var gcTotal struct {
		runs, dryRuns                                    int
		deletedPacks, repackedPacks, deletedChunks       int
		condemned, rescued, recheckAdded, young, blocked int
		reclaimed, rewritten                             int64
	}
	gcStore := open(t, url, clock)
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, 1000))
		for pace.next(gcActor) {
			jitter(r)
			dry := r.IntN(8) == 0
			rep, err := history.GC(ctx, gcStore, packs.GCOptions{Grace: concGrace, DryRun: dry})
			if err != nil {
				fail(fmt.Errorf("gc (dry run %v): %w", dry, err))
				return
			}
			if dry {
				gcTotal.dryRuns++
			} else {
				gcTotal.runs++
				gcTotal.deletedPacks += rep.DeletedPacks
				gcTotal.repackedPacks += rep.RepackedPacks
				gcTotal.deletedChunks += rep.DeletedChunks
				gcTotal.reclaimed += rep.ReclaimedBytes
				gcTotal.rewritten += rep.RewrittenBytes
				gcTotal.condemned += rep.NewlyCondemned
				gcTotal.rescued += rep.RescuedChunks
				gcTotal.recheckAdded += rep.RecheckedAdded
				gcTotal.young += rep.YoungChunks
				gcTotal.blocked += rep.BlockedChunks
			}
			clock.Advance(concAdvanceMin + time.Duration(r.Int64N(int64(concAdvanceMax-concAdvanceMin))))
			pace.finished(gcActor)
		}
	}()

	forgetStore := open(t, url, clock)
	forgotten := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(seed, 1001))
		for pace.next(forgetActor) {
			jitter(r)
			rep, err := history.Forget(ctx, forgetStore, history.ForgetOptions{Policy: history.ForgetPolicy{Last: 3}})
			if err != nil {
				fail(fmt.Errorf("forget: %w", err))
				return
			}
			forgotten += rep.Deleted
			pace.finished(forgetActor)
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, w := range writers {
		if err := w.node.Close(); err != nil {
			t.Errorf("%s: close: %v", w.name, err)
		}
	}
	if t.Failed() {
		// Tell lost data from a failure that left the store whole.
		st := open(t, url, clock)
		vr, err := history.Verify(ctx, st, history.VerifyOptions{})
		t.Fatalf("after the failure, verify: %v; problems: %+v", err, vr.Problems)
	}
	ran := time.Since(start) - setup
	done := pace.rounds()

	// Every remaining restore point of every node restores to its hooks.
	check := open(t, url, clock)
	restores, manifests := 0, 0
	for _, w := range writers {
		seqs, err := check.ManifestSeqs(ctx, w.name)
		if err != nil {
			t.Fatal(err)
		}
		manifests += len(seqs)
		// Build the expected databases incrementally, oldest first.
		exp := filepath.Join(dir, w.name+"-expected.sqlite3")
		copyDB(t, base, exp)
		applied := 0
		for _, seq := range seqs {
			m, err := check.Manifest(ctx, w.name, seq)
			if err != nil {
				t.Fatal(err)
			}
			v := m.LastVersion()
			var next []workload.Hook
			for applied < len(w.hooks) && w.hooks[applied].Version <= v {
				next = append(next, w.hooks[applied])
				applied++
			}
			if err := workload.Build(exp, workload.Hooks(next...)); err != nil {
				t.Fatal(err)
			}
			got, res := restore(t, check, history.RestoreOptions{Node: w.name, Manifest: seq})
			if res.Version != v {
				t.Fatalf("%s manifest %d restored at data_version %d, want %d", w.name, seq, res.Version, v)
			}
			assertSame(t, fmt.Sprintf("%s manifest %d (data_version %d)", w.name, seq, v), got, exp)
			os.Remove(got)
			restores++
		}
		if err := workload.Build(exp, workload.Hooks(w.hooks[applied:]...)); err != nil {
			t.Fatal(err)
		}
		got, res := restore(t, check, history.RestoreOptions{Node: w.name})
		if res.Version != w.gen.Version() {
			t.Fatalf("%s newest state at data_version %d, want %d", w.name, res.Version, w.gen.Version())
		}
		assertSame(t, w.name+" newest state", got, exp)
		os.Remove(got)
		restores++
	}
	vr, err := history.Verify(ctx, check, history.VerifyOptions{ReadData: true})
	if err != nil || !vr.OK() {
		t.Fatalf("verify --read-data: %v %+v", err, vr.Problems)
	}

	var steps, compactions, seals, tooOld int
	for _, w := range writers {
		steps += w.steps
		compactions += w.compactions
		seals += w.seals
		tooOld += w.tooOld
	}
	u, _ := check.Usage(ctx)
	t.Logf("%d rounds in %v (setup %v): %d steps, %d compactions (%d seals), %d compactions retried after ErrWriterTooOld",
		done, ran.Round(time.Millisecond), setup.Round(time.Millisecond), steps, compactions, seals, tooOld)
	t.Logf("gc: %d runs (+%d dry): deleted %d packs and %d chunks, repacked %d packs (%d KiB rewritten), reclaimed %d KiB; condemned %d, rescued %d, kept young %d, kept in live packs %d; %d manifests found on recheck",
		gcTotal.runs, gcTotal.dryRuns, gcTotal.deletedPacks, gcTotal.deletedChunks, gcTotal.repackedPacks, gcTotal.rewritten>>10,
		gcTotal.reclaimed>>10, gcTotal.condemned, gcTotal.rescued, gcTotal.young, gcTotal.blocked, gcTotal.recheckAdded)
	t.Logf("forget deleted %d manifests; %d manifests remain; %d restores checked; verify read %d packs; store now %d packs, %d KiB",
		forgotten, manifests, restores, vr.Packs, u.Packs, u.PackBytes>>10)
	if done < rounds {
		t.Fatalf("only %d of %d rounds ran", done, rounds)
	}
	if gcTotal.reclaimed == 0 || gcTotal.deletedChunks == 0 {
		// Six rounds (-short) are a smoke run: some seeds condemn chunks
		// that are still young when it ends. The full run must delete.
		if testing.Short() && rounds < 10 {
			t.Log("gc deleted no chunks in this short run: it proved nothing about deletion (the full run does)")
		} else {
			t.Fatal("gc reclaimed nothing: the test proved nothing about deletion")
		}
	}
	if forgotten == 0 || compactions == 0 {
		t.Fatalf("forget deleted %d manifests, %d compactions", forgotten, compactions)
	}
}

func copyDB(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
