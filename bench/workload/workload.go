// Package workload generates deterministic, Core-Lightning-like database
// workloads for tests and benchmarks: a schema shaped like lightningd's, a
// population phase that fills a database to a target size, evolution steps
// (inserts, updates, deletes), and scattered page touches. Everything comes out
// as db_write hooks, exactly as lightningd sends them (complete SQL with
// inlined literals, ending with the data_version bump), so tests can feed them
// through the real journal, and Build applies them straight to a file when a
// test only needs the database.
//
// The same Config (seed included) always yields the same hooks, byte for byte,
// on every platform: all randomness comes from math/rand/v2's PCG seeded from
// Config.Seed, and the generator never looks at the clock.
package workload

import (
	"math"
	"math/rand/v2"

	"github.com/clnbackup/backup/store/journal"
)

// Hook is one db_write call: the statements of one lightningd transaction and
// the data_version the database has after it. The last statement is always
// lightningd's data_version bump
// (UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = Version-1).
type Hook struct {
	Version    uint32
	Statements []string
}

// Record returns the hook as a journal record (Seq and Time left for the
// journal to assign), ready for journal.Append or replay.DB.Apply.
func (h Hook) Record() journal.Record {
	return journal.Record{Version: h.Version, Statements: h.Statements}
}

// Hooks turns recorded hooks into the streaming form Build takes, so a test
// can apply to a second file exactly the hooks it sent through the journal.
func Hooks(hs ...Hook) func(fn func(Hook) error) error {
	return func(fn func(Hook) error) error {
		for _, h := range hs {
			if err := fn(h); err != nil {
				return err
			}
		}
		return nil
	}
}

// Config describes a workload. The zero value of each fraction means "none".
type Config struct {
	// Seed selects the workload; equal seeds give identical hooks.
	Seed uint64
	// TargetBytes is the database file size Populate aims at (within about
	// 15%; the estimate is calibrated for the default 4 KiB page size).
	TargetBytes int64
	// UpdateFrac and DeleteFrac are, per Step, the fraction of each table's
	// live rows that is updated and deleted. InsertFrac is the number of
	// rows added per Step as a fraction of all live rows, spread over the
	// tables in the same mix as Populate.
	UpdateFrac, DeleteFrac, InsertFrac float64
	// HotRows makes updates and deletes pick among the newest rows (the
	// newest 5% of each table), as a node that mostly touches recent HTLCs,
	// payments and invoices does; otherwise rows are picked uniformly.
	HotRows bool
	// StepHookStatements caps the statements of one Step hook before the
	// data_version bump (0: 200, few large hooks, fast to build). lightningd's
	// own transactions are small: 2.3 statements per db_write on average in
	// a recorded routing node's trace (testdata/long-3000.jsonl), so
	// latency measurements set 2 or 3.
	StepHookStatements int
}

// Statements per generated hook: populate and touch hooks batch many rows
// (fast to build), step hooks stay closer to lightningd's small transactions.
const (
	populateRowsPerHook = 1000
	stepStmtsPerHook    = 200
)

// table indexes the tables whose rows the generator creates in bulk.
type table int

const (
	tHTLCs table = iota
	tForwards
	tInvoices
	tPayments
	tOutputs
	tDatastore
	numTables
)

// weights are the shares of populated rows per table (they sum to 100):
// a routing node's database is dominated by HTLCs and forwards.
var weights = [numTables]int{tHTLCs: 40, tForwards: 25, tInvoices: 12, tPayments: 10, tOutputs: 8, tDatastore: 5}

// rowSet is the set of live rows of one table, named by their creation
// number n (ascending; the SQL key is derived from n).
type rowSet struct {
	next  int64
	ids   []int64
	alive []bool
	live  int
}

func (s *rowSet) add() int64 {
	n := s.next
	s.next++
	s.ids = append(s.ids, n)
	s.alive = append(s.alive, true)
	s.live++
	return n
}

// pick returns a live row, uniformly or among the newest 5%, without
// removing it; ok is false when the table is empty.
func (s *rowSet) pick(r *rand.Rand, hot bool) (int, bool) {
	if s.live == 0 {
		return 0, false
	}
	lo := 0
	if hot {
		lo = len(s.ids) - max(len(s.ids)/20, 16)
		lo = max(lo, 0)
	}
	for range 64 {
		i := lo + r.IntN(len(s.ids)-lo)
		if s.alive[i] {
			return i, true
		}
	}
	// Dense deletions: scan from a random start.
	start := lo + r.IntN(len(s.ids)-lo)
	for k := range len(s.ids) {
		i := start + k
		if i >= len(s.ids) {
			i = i - len(s.ids)
		}
		if s.alive[i] {
			return i, true
		}
	}
	return 0, false
}

func (s *rowSet) remove(i int) {
	s.alive[i] = false
	s.live--
	if s.live < len(s.ids)/2 && len(s.ids) > 64 {
		j := 0
		for k, n := range s.ids {
			if s.alive[k] {
				s.ids[j], s.alive[j] = n, true
				j++
			}
		}
		s.ids, s.alive = s.ids[:j], s.alive[:j]
	}
}

// Generator produces a workload's hooks. It remembers what it created (row
// counts, live rows, the data_version), so hooks from Populate, Step,
// TouchPages and Block must be applied in the order they were produced. A
// Generator is not safe for concurrent use.
type Generator struct {
	cfg      Config
	rng      *rand.Rand
	version  uint32
	channels int
	htlcNext []int64 // per-channel next channel_htlc_id
	rows     [numTables]rowSet
	updIndex int64
	payIndex int64
	now      int64 // simulated unix time, seconds
	height   int64 // simulated block height
	est      float64
}

// New returns a generator for cfg. It produces nothing until asked.
func New(cfg Config) *Generator {
	return &Generator{
		cfg:    cfg,
		rng:    rand.New(rand.NewPCG(cfg.Seed, 0x636c6e6261636b75)),
		now:    1_700_000_000,
		height: 800_000,
	}
}

// Version is the data_version after the last hook the generator produced
// (0 before any).
func (g *Generator) Version() uint32 { return g.version }

// EstimatedBytes is the generator's estimate of the database file size after
// the hooks produced so far.
func (g *Generator) EstimatedBytes() int64 { return int64(g.est) }

// hook finishes a hook: it bumps the data_version as lightningd does.
func (g *Generator) hook(stmts []string) Hook {
	g.version++
	stmts = append(stmts, bumpStatement(g.version-1))
	return Hook{Version: g.version, Statements: stmts}
}

// bumpStatement is lightningd's data_version increment, guarded by the
// previous version so that a database at another version refuses the change.
func bumpStatement(prev uint32) string {
	return "UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = " + itoa(int64(prev))
}

// Populate streams the hooks that create the schema (data_version 1) and
// fill the database to about Config.TargetBytes, about 1000 rows per hook.
// Only one hook's SQL is in memory at a time, so a 200 MB database can be
// generated with a few MB of heap. Call it once, first.
func (g *Generator) Populate(fn func(Hook) error) error {
	if err := fn(g.hook(g.schemaStatements())); err != nil {
		return err
	}
	// Peers and channels: a few dozen to a few hundred, scaled with size.
	nch := int(min(max(g.cfg.TargetBytes>>20, 16), 400))
	var stmts []string
	for i := range nch {
		stmts = append(stmts, g.insertPeer(i), g.insertChannel(i))
	}
	g.channels = nch
	g.htlcNext = make([]int64, nch)
	if err := fn(g.hook(stmts)); err != nil {
		return err
	}
	for g.est < float64(g.cfg.TargetBytes) {
		stmts = make([]string, 0, populateRowsPerHook+1)
		for range populateRowsPerHook {
			stmts = append(stmts, g.insert(g.pickTable()))
			if g.est >= float64(g.cfg.TargetBytes) {
				break
			}
		}
		g.tick()
		if err := fn(g.hook(stmts)); err != nil {
			return err
		}
	}
	return nil
}

// pickTable chooses a table by the populate weights.
func (g *Generator) pickTable() table {
	x := g.rng.IntN(100)
	for t, w := range weights {
		if x < w {
			return table(t)
		}
		x -= w
	}
	return tHTLCs
}

// tick advances simulated time (a few seconds per hook).
func (g *Generator) tick() { g.now += 1 + int64(g.rng.IntN(30)) }

// count turns an expected count into an integer deterministically: the
// integer part plus one with the probability of the fractional part.
func (g *Generator) count(x float64) int {
	n := math.Floor(x)
	if g.rng.Float64() < x-n {
		n++
	}
	return int(n)
}

type opKind uint8

const (
	opInsert opKind = iota
	opUpdate
	opDelete
)

type op struct {
	kind opKind
	t    table
	n    int64 // row number (update, delete)
}

// Step streams the hooks of one evolution step: InsertFrac times the live
// rows are added (appended: new rows get the highest keys), and in every table
// UpdateFrac of the live rows are updated and DeleteFrac deleted (channels
// are only updated). Operations are shuffled and cut into hooks of at most
// Config.StepHookStatements (default 200) statements; the first hook also records a new block height, as
// lightningd does once per block.
func (g *Generator) Step(fn func(Hook) error) error {
	if g.channels == 0 {
		return errNotPopulated
	}
	var ops []op
	total := 0
	for t := range numTables {
		total += g.rows[t].live
	}
	for range g.count(g.cfg.InsertFrac * float64(total)) {
		ops = append(ops, op{kind: opInsert, t: g.pickTable()})
	}
	for t := range numTables {
		s := &g.rows[t]
		for range g.count(g.cfg.DeleteFrac * float64(s.live)) {
			i, ok := s.pick(g.rng, g.cfg.HotRows)
			if !ok {
				break
			}
			ops = append(ops, op{kind: opDelete, t: table(t), n: s.ids[i]})
			s.remove(i)
		}
	}
	for t := range numTables {
		s := &g.rows[t]
		for range g.count(g.cfg.UpdateFrac * float64(s.live)) {
			i, ok := s.pick(g.rng, g.cfg.HotRows)
			if !ok {
				break
			}
			ops = append(ops, op{kind: opUpdate, t: table(t), n: s.ids[i]})
		}
	}
	g.rng.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	chUpdates := g.count(g.cfg.UpdateFrac * float64(g.channels))
	g.height++
	stmts := []string{"UPDATE vars SET intval = " + itoa(g.height) + " WHERE name = 'last_processed_block'"}
	for range chUpdates {
		stmts = append(stmts, g.updateChannel(g.rng.IntN(g.channels)))
	}
	for _, o := range ops {
		var s string
		switch o.kind {
		case opInsert:
			s = g.insert(o.t)
		case opUpdate:
			s = g.update(o.t, o.n)
		case opDelete:
			s = g.delete(o.t, o.n)
		}
		stmts = append(stmts, s)
		if len(stmts) >= g.stepHookSize() {
			g.tick()
			if err := fn(g.hook(stmts)); err != nil {
				return err
			}
			stmts = nil
		}
	}
	if len(stmts) > 0 {
		g.tick()
		return fn(g.hook(stmts))
	}
	return nil
}

func (g *Generator) stepHookSize() int {
	if g.cfg.StepHookStatements > 0 {
		return g.cfg.StepHookStatements
	}
	return stepStmtsPerHook
}

// Block streams one small hook: a new block height recorded in vars, the
// smallest change lightningd makes. Tests use it as an "unrelated" change
// (it touches only the vars page and page 1).
func (g *Generator) Block(fn func(Hook) error) error {
	if g.version == 0 {
		return errNotPopulated
	}
	g.height++
	g.tick()
	return fn(g.hook([]string{"UPDATE vars SET intval = " + itoa(g.height) + " WHERE name = 'last_processed_block'"}))
}
