package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/local"
	"github.com/clnbackup/backup/store/packs"
)

// yearConfig is one run of `backup-bench year` (issue 16 point 5): N nodes
// with a restore point a day for D days, written by the real compaction
// path with the store's clock injected (day d of node i is
// yearStart + d days), then forget, gc and verify by backup-cli.
type yearConfig struct {
	Nodes      int    `json:"nodes"`
	Days       int    `json:"days"`
	Size       int64  `json:"db_bytes_target"`
	Seed       uint64 `json:"seed"`
	Workers    int    `json:"workers"`
	KeepDaily  int    `json:"keep_daily"`
	KeepWeekly int    `json:"keep_weekly"`
	// CheckNodes is how many nodes (the first ones) have every kept
	// restore point restored and compared; every node's newest state is.
	CheckNodes int `json:"check_nodes"`
	// MeasureOnly: the history in the work directory is measured as it is
	// (a generation that was stopped: each node's days are counted).
	MeasureOnly bool `json:"measure_only,omitempty"`
	// MaxGenerate stops the generation after the day during which it ran
	// this long (0: never), to measure within a time budget.
	MaxGenerate time.Duration `json:"max_generate_ns,omitempty"`
	nodeDays    []int
	// GCEvery: an exclusive gc runs after every GCEvery days of writing
	// (0: never), as in a store in service.
	GCEvery int `json:"gc_every_days"`
	// Baseline, if set, is another backup-cli run on the same store for
	// the read-only commands (before/after in one run).
	Baseline string `json:"baseline_cli,omitempty"`
}

// yearStart is day 0 of every node: a Monday, so that ISO weeks are
// whole days 0-6, 7-13, ... (the retention check does not rely on it).
var yearStart = time.Date(2025, 1, 6, 12, 0, 0, 0, time.UTC)

// dayTime is when node i compacts on day d (nodes spread over an hour).
func dayTime(i, d int) time.Time {
	return yearStart.Add(time.Duration(d)*24*time.Hour + time.Duration(i%60)*time.Minute)
}

// runYear is `backup-bench year`.
func runYear(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backup-bench year", flag.ContinueOnError)
	fs.SetOutput(stderr)
	y := yearConfig{}
	var size, workDir string
	var keep, asJSON, verbose bool
	c := &config{}
	fs.IntVar(&y.Nodes, "nodes", 100, "nodes in the store")
	fs.IntVar(&y.Days, "days", 365, "daily restore points per node (day 0 is init, each later day one compaction)")
	fs.StringVar(&size, "size", "256KB", "database size of each node at day 0")
	fs.Uint64Var(&y.Seed, "seed", 1, "workload seed (node i uses seed+i)")
	fs.IntVar(&y.Workers, "workers", runtime.GOMAXPROCS(0), "nodes generated at once")
	fs.IntVar(&y.KeepDaily, "keep-daily", 30, "forget --keep-daily")
	fs.IntVar(&y.KeepWeekly, "keep-weekly", 52, "forget --keep-weekly")
	fs.IntVar(&y.CheckNodes, "check-nodes", 2, "nodes whose every kept restore point is restored and compared after gc")
	fs.IntVar(&y.GCEvery, "gc-every", 7, "while writing, run gc --exclusive (no forget) after every N days, as a store in service does (0: never)")
	fs.BoolVar(&y.MeasureOnly, "measure-only", false, "measure the history an interrupted run left in --work-dir as it is (no generation)")
	fs.DurationVar(&y.MaxGenerate, "max-generate", 0, "stop writing days after this long and measure the days written (0: write them all)")
	fs.StringVar(&y.Baseline, "baseline-cli", "", "also run verify, forget --dry-run and gc --dry-run with this backup-cli (e.g. main's), for before/after in one run")
	fs.StringVar(&c.cli, "cli", "", "backup-cli binary (default: next to this binary, else built with go build)")
	fs.StringVar(&workDir, "work-dir", "", "work directory (default: a new temporary directory)")
	fs.BoolVar(&keep, "keep", false, "keep the work directory")
	fs.BoolVar(&asJSON, "json", false, "print the results as JSON")
	fs.BoolVar(&verbose, "v", false, "log progress to stderr")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the generation to `FILE`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var err error
	if y.Size, err = parseSize(size); err != nil {
		return err
	}
	if y.Nodes < 1 || y.Days < 2 || y.Workers < 1 || y.Size < 64<<10 {
		return errors.New("year: need at least 1 node, 2 days, 1 worker and 64 KB")
	}
	dir, cleanup, err := makeWorkDir(workDir, keep)
	if err != nil {
		return err
	}
	defer cleanup()
	// Only backup-cli is needed: no plugin runs here.
	c.plugin, c.noop = "unused", "unused"
	if err := c.prepare(ctx, dir, verbose, stderr); err != nil {
		return err
	}
	res, err := y.run(ctx, c)
	if err != nil {
		return err
	}
	return emit(stdout, asJSON, res, res.print)
}

// yearResult is what `backup-bench year` measured and checked.
type yearResult struct {
	Config  yearConfig `json:"config"`
	Machine machine    `json:"machine"`
	// Generate is the in-process writing of the history.
	Generate struct {
		Seconds     float64 `json:"seconds"`
		Compactions int     `json:"compactions"`
		Manifests   int     `json:"manifests"`
		StoreBytes  int64   `json:"store_bytes"`
		StoreFiles  int64   `json:"store_files"`
		// GCRuns exclusive gcs (no forget) ran meanwhile, in GCSeconds.
		GCRuns    int     `json:"gc_runs"`
		GCSeconds float64 `json:"gc_seconds"`
		// StoppedAfter is the days written when --max-generate stopped
		// the generation early (0: all of them).
		StoppedAfter int `json:"stopped_after_days,omitempty"`
	} `json:"generate"`
	// Commands are the backup-cli runs, in order.
	Commands []yearCommand `json:"commands"`
	// After forget and gc.
	KeptManifests int   `json:"kept_manifests"`
	StoreBytes    int64 `json:"store_bytes_after_gc"`
	StoreFiles    int64 `json:"store_files_after_gc"`
	// RetentionOK: every node kept exactly the restore points the policy
	// names (computed here from the days, apart from forget's code).
	RetentionOK bool     `json:"retention_ok"`
	Restores    int      `json:"restores_compared"`
	NotCompared int      `json:"kept_not_compared,omitempty"`
	Mismatches  []string `json:"mismatches"`
	RSSFloor    int64    `json:"rss_floor_bytes"`
	Seconds     float64  `json:"seconds"`
}

// yearCommand is one backup-cli run.
type yearCommand struct {
	Name     string  `json:"name"`
	Baseline bool    `json:"baseline,omitempty"`
	Seconds  float64 `json:"seconds"`
	MaxRSS   int64   `json:"max_rss_bytes"`
	Summary  string  `json:"summary"`
}

func (y *yearConfig) run(ctx context.Context, c *config) (*yearResult, error) {
	start := time.Now()
	res := &yearResult{Config: *y, Mismatches: []string{}}
	if err := y.generated(ctx, c, res); err != nil {
		return nil, err
	}
	if err := y.countDays(ctx, filepath.Join(c.work, "store.gen")); err != nil {
		return nil, err
	}
	// The commands run on a copy, so that a kept work directory can be
	// measured again (--work-dir DIR --keep, then --work-dir DIR).
	storeDir := filepath.Join(c.work, "store")
	c.storeDir = storeDir
	url := "file://" + storeDir
	if err := os.RemoveAll(storeDir); err != nil {
		return nil, err
	}
	if out, err := exec.CommandContext(ctx, "cp", "-a", filepath.Join(c.work, "store.gen"), storeDir).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy the generated store: %v: %s", err, out)
	}
	if err := y.commands(ctx, c, url, res); err != nil {
		return nil, err
	}
	if err := y.check(ctx, c, url, res); err != nil {
		return nil, err
	}
	if u, _, err := storeUsage(storeDir); err == nil {
		res.StoreBytes, res.StoreFiles = u.Allocated, u.Files
	}
	if floor, err := c.runCLIFloor(ctx); err == nil {
		res.RSSFloor = floor
	}
	res.Machine = describeMachine(storeDir)
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// generated writes the history into <work>/store.gen, or reuses the one
// an earlier run with the same configuration left there.
func (y *yearConfig) generated(ctx context.Context, c *config, res *yearResult) error {
	marker := filepath.Join(c.work, "generated.json")
	want, _ := json.Marshal(y.genKey())
	if y.MeasureOnly {
		c.logf("measuring the history in %s as it is", c.work)
		return nil
	}
	if b, err := os.ReadFile(marker); err == nil {
		var prev struct {
			Key      json.RawMessage
			Generate json.RawMessage
		}
		if json.Unmarshal(b, &prev) == nil && string(prev.Key) == string(want) {
			c.logf("reusing the history generated in %s", c.work)
			return json.Unmarshal(prev.Generate, &res.Generate)
		}
	}
	dir := filepath.Join(c.work, "store.gen")
	for _, d := range []string{dir, filepath.Join(c.work, "nodes"), marker} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	g := time.Now()
	if err := y.generate(ctx, c, "file://"+dir, res); err != nil {
		return err
	}
	res.Generate.Seconds = time.Since(g).Seconds()
	days := y.Days
	if res.Generate.StoppedAfter > 0 {
		days = res.Generate.StoppedAfter
	}
	res.Generate.Compactions = y.Nodes * (days - 1)
	res.Generate.Manifests = y.Nodes * (1 + 2*(days-1))
	if u, _, err := storeUsage(dir); err == nil {
		res.Generate.StoreBytes, res.Generate.StoreFiles = u.Allocated, u.Files
	}
	gen, _ := json.Marshal(res.Generate)
	b, _ := json.Marshal(map[string]json.RawMessage{"Key": want, "Generate": gen})
	return os.WriteFile(marker, b, 0o600)
}

// genKey is what the generated history depends on.
func (y *yearConfig) genKey() any {
	return []any{y.Nodes, y.Days, y.Size, y.Seed, y.KeepDaily, y.KeepWeekly, y.CheckNodes, y.GCEvery}
}

// yearClock is a worker's store clock: the day being written plus the
// real time since it began (so that leases and writer ages see time pass).
type yearClock struct {
	day  atomic.Int64 // unix ns of the simulated time at set
	real atomic.Int64 // unix ns of the real time at set
}

func (k *yearClock) set(t time.Time) {
	k.real.Store(time.Now().UnixNano())
	k.day.Store(t.UnixNano())
}

func (k *yearClock) now() time.Time {
	return time.Unix(0, k.day.Load()+time.Now().UnixNano()-k.real.Load())
}

// yearNode is one simulated node: its database follows its hooks.
type yearNode struct {
	i         int
	name, dir string
	db        string
	gen       *workload.Generator
	keep      map[int]bool // days whose snapshot state is copied aside
}

// generate creates the store and writes the year day by day: every node's
// day (Workers nodes at a time, each worker with its own store handle and
// clock), then, every GCEvery days, an exclusive gc as an operator's
// cron would run it (without forget, so every restore point stays; it
// consolidates the day's small packs, as it does in a store in service).
func (y *yearConfig) generate(ctx context.Context, c *config, url string, res *yearResult) error {
	start := time.Now()
	st, _, err := store.Create(ctx, url, store.Options{})
	if err != nil {
		return err
	}
	st.Close()
	nodes := make([]*yearNode, y.Nodes)
	workers := make([]yearWorker, y.Workers)
	plain, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		return err
	}
	defer plain.Close()
	be, err := local.New(strings.TrimPrefix(url, "file://"))
	if err != nil {
		return err
	}
	defer be.Close()
	shared := newIndexListing(be)
	for w := range workers {
		clk := &yearClock{}
		// The journals are the plain store's (in the store directory).
		if workers[w].st, err = store.OpenBackend(ctx, shared, store.Options{Now: clk.now}, plain); err != nil {
			return err
		}
		defer workers[w].st.Close()
		workers[w].clk = clk
		// Lookups from the index in memory, refreshed with the index
		// objects other writers add (as a store server answers them),
		// not by reading every index object per lookup.
		p, err := workers[w].st.Packs("year")
		if err != nil {
			return err
		}
		if _, err := p.LoadIndex(ctx); err != nil {
			return err
		}
	}
	for d := 0; d < y.Days; d++ {
		if err := y.day(ctx, c, workers, nodes, d); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if y.GCEvery > 0 && d%y.GCEvery == y.GCEvery-1 {
			t := time.Now()
			workers[0].clk.set(dayTime(0, d).Add(2 * time.Hour))
			if _, err := history.GCExclusive(ctx, workers[0].st, packs.GCOptions{}); err != nil {
				return fmt.Errorf("gc after day %d: %w", d, err)
			}
			res.Generate.GCRuns++
			res.Generate.GCSeconds += time.Since(t).Seconds()
		}
		c.logf("day %d of %d written", d+1, y.Days)
		if y.MaxGenerate > 0 && time.Since(start) > y.MaxGenerate && d+1 < y.Days {
			c.logf("stopping the generation after day %d of %d (--max-generate %v)", d+1, y.Days, y.MaxGenerate)
			res.Generate.StoppedAfter = d + 1
			return nil
		}
	}
	return nil
}

// yearWorker is one generating goroutine's store handle and clock.
type yearWorker struct {
	st  *store.Store
	clk *yearClock
}

// day writes day d of every node (initNode on day 0), Workers nodes at a
// time.
func (y *yearConfig) day(ctx context.Context, c *config, workers []yearWorker, nodes []*yearNode, d int) error {
	next := atomic.Int64{}
	errs := make([]error, y.Workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= y.Nodes {
					return
				}
				var err error
				if d == 0 {
					nodes[i], err = y.initNode(ctx, c, workers[w].st, workers[w].clk, i)
				} else {
					err = y.nodeDay(ctx, workers[w].st, workers[w].clk, nodes[i], d)
				}
				if err != nil {
					errs[w] = fmt.Errorf("node %s day %d: %w", nodeName(i), d, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func nodeName(i int) string { return fmt.Sprintf("n%03d", i) }

// initNode generates node i's database and inits the node on day 0.
func (y *yearConfig) initNode(ctx context.Context, c *config, st *store.Store, clk *yearClock, i int) (*yearNode, error) {
	n := &yearNode{i: i, name: nodeName(i), dir: filepath.Join(c.work, "nodes", nodeName(i)), keep: map[int]bool{}}
	if err := os.MkdirAll(n.dir, 0o700); err != nil {
		return nil, err
	}
	n.db = filepath.Join(n.dir, "node.sqlite3")
	n.gen = workload.New(workload.Config{Seed: y.Seed + uint64(i), TargetBytes: y.Size, HotRows: true,
		UpdateFrac: 0.01, DeleteFrac: 0.001, InsertFrac: 0.003})
	if err := workload.Build(n.db, n.gen.Populate); err != nil {
		return nil, err
	}
	if i < y.CheckNodes {
		n.keep = y.keptDays(i, y.Days)
	}
	clk.set(dayTime(i, 0))
	if _, err := history.Init(ctx, st, n.name, n.db, nil); err != nil {
		return nil, err
	}
	return n, n.save(0)
}

// save copies the node's database aside when day d's snapshot is one the
// check restores.
func (n *yearNode) save(d int) error {
	if !n.keep[d] {
		return nil
	}
	return copyFileTo(n.db, filepath.Join(n.dir, fmt.Sprintf("day%03d.sqlite3", d)))
}

// nodeDay is day d of a node: a workload step plus one small trailing
// hook (which the day's compaction leaves unsealed) through the journal,
// and a compaction. The node's database follows the hooks; the state of
// the day's snapshot (all but the trailing hook) is saved first.
func (y *yearConfig) nodeDay(ctx context.Context, st *store.Store, clk *yearClock, n *yearNode, d int) error {
	var step, tail []workload.Hook
	if err := n.gen.Step(func(h workload.Hook) error { step = append(step, h); return nil }); err != nil {
		return err
	}
	if err := n.gen.Block(func(h workload.Hook) error { tail = append(tail, h); return nil }); err != nil {
		return err
	}
	if err := workload.Build(n.db, workload.Hooks(step...)); err != nil {
		return err
	}
	if err := n.save(d); err != nil {
		return err
	}
	if err := workload.Build(n.db, workload.Hooks(tail...)); err != nil {
		return err
	}
	clk.set(dayTime(n.i, d))
	return compactDay(ctx, st, n.name, append(step, tail...))
}

// compactDay opens the node (taking its lease at the day's time), appends
// the day's hooks to its journal, compacts and closes it.
func compactDay(ctx context.Context, st *store.Store, name string, hooks []workload.Hook) error {
	n, err := history.OpenNode(ctx, st, name)
	if err != nil {
		return err
	}
	for _, h := range hooks {
		if _, err := n.Journal().Append(h.Record()); err != nil {
			n.Close()
			return err
		}
	}
	res, err := n.Compact(ctx, nil)
	if cerr := n.Close(); err == nil {
		err = cerr
	}
	if err == nil && (res.Manifest == nil || res.Sealed.Manifest == nil) {
		err = errors.New("compaction wrote no seal and snapshot")
	}
	return err
}

// copyFileTo copies src over dst in 1 MiB blocks, so that a large database
// is never held in memory.
func copyFileTo(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if _, err := io.CopyBuffer(out, in, make([]byte, 1<<20)); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	return nil
}
