package lightningdtest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store/journal"
)

// Crash modes: how CrashReplay kills the plugin.
const (
	CrashIdle          = "idle"                    // between two writes
	CrashInFlight      = "in flight"               // just after sending a write
	CrashDelayed       = "in flight, delayed"      // 0-400µs after sending a write
	CrashCompacting    = "during compaction"       // just after backup-compact, with a write in flight
	CrashNotCommitted  = "answered, not committed" // lightningd died between the answer and its commit
	CrashAnswerStuck   = "durable, answer stuck"   // the write is durable, its answer stuck in a full pipe
	crashAgain         = "crashed again while re-sending"
	crashDurable       = "in-flight write durable, unanswered"
	crashResentOther   = "re-sent with other statements"
	crashAnsweredFirst = "in-flight write answered before the kill"
)

var crashModes = []string{CrashIdle, CrashInFlight, CrashDelayed, CrashCompacting, CrashNotCommitted, CrashAnswerStuck}

// crashRun is the state of one CrashReplay.
type crashRun struct {
	t      testing.TB
	path   string
	n      *Node
	m      *Model
	rng    *rand.Rand
	l      *Lightningd
	inited bool
	last   journal.Record // the newest change answered
	stats  map[string]int
}

// CrashReplay sends hooks (in order, with data_versions as recorded)
// through the plugin at path for node n, and kills the plugin with SIGKILL
// kills times at seeded random points, in one of the Crash* modes. After
// each kill, the node's restore must hold exactly what lightningd committed
// (plus the write in flight, if it was durable: always so in
// CrashAnswerStuck). Then lightningd "restarts": a new plugin, and the
// change lightningd never committed is re-sent (the same statements or, at
// random, others: Resent), before or after init; sometimes lightningd dies
// again during that re-send. Once the re-sent change is answered, the
// restore must hold it. At the end the restore must hold every change. It
// returns how often each case happened; failures end the test.
func CrashReplay(t testing.TB, path string, n *Node, m *Model, hooks []replay.TraceEntry, kills int, seed uint64) map[string]int {
	t.Helper()
	c := &crashRun{t: t, path: path, n: n, m: m, rng: rand.New(rand.NewPCG(seed, 0x6b696c6c)), stats: map[string]int{}}
	c.boot()
	i := 0
	for k := range kills {
		span := max((len(hooks)-i)/(kills-k), 4)
		for end := min(i+span/2+c.rng.IntN(span), len(hooks)-2*(kills-k)); i < end; i++ {
			if !hooks[i].BeforeInit {
				c.init()
			}
			c.send(Record(hooks[i]))
		}
		if c.crash(k, Record(hooks[i])) {
			i++
		}
	}
	for ; i < len(hooks); i++ {
		c.send(Record(hooks[i]))
	}
	if err := c.l.Close(); err != nil {
		t.Fatal(err)
	}
	c.check("at the end")
	return c.stats
}

func (c *crashRun) boot() { c.l, c.inited = StartT(c.t, c.path, c.n.Dir, false), false }

func (c *crashRun) init() {
	if !c.inited {
		if err := c.l.Init(nil); err != nil {
			c.t.Fatal(err)
		}
		c.inited = true
	}
}

func (c *crashRun) send(r journal.Record) {
	c.t.Helper()
	if ok, err := c.l.DBWrite(r.Version, r.Statements); err != nil || !ok {
		c.t.Fatalf("db_write data_version %d: continued=%v err=%v; plugin log: %v", r.Version, ok, err, c.l.Logs())
	}
	c.commit(r)
}

func (c *crashRun) commit(r journal.Record) {
	if err := c.m.Commit(r); err != nil {
		c.t.Fatal(err)
	}
	c.last = r
}

func (c *crashRun) check(what string) {
	c.t.Helper()
	if err := c.n.Matches(c.m, 0); err != nil {
		c.t.Fatalf("%s: the restore does not hold what lightningd committed (data_version %d): %v", what, c.m.Version(), err)
	}
}

// crash kills the plugin in a random mode (next is the next hook), restarts
// it and re-sends what lightningd never committed; it reports whether next
// was sent.
func (c *crashRun) crash(k int, next journal.Record) (sentNext bool) {
	mode := c.pickMode()
	what := fmt.Sprintf("kill %d (%s) at data_version %d", k, mode, c.m.Version())
	c.stats[mode]++
	var inflight *journal.Record
	var p *Pending
	c.prepareCrash(mode)
	if mode != CrashIdle && mode != CrashNotCommitted {
		p = c.sendInFlight(mode, next)
		inflight, sentNext = &next, true
	}
	c.l.Kill()
	if p != nil && c.answeredFirst(what, p) { // answered just before the kill: committed
		c.commit(*inflight)
		inflight = nil
		c.stats[crashAnsweredFirst+" ("+mode+")"]++
	}
	durable := c.checkKilled(what, mode, inflight)
	c.restart(what, mode, inflight, durable)
	return sentNext
}

// pickMode draws the crash mode; without a change to re-send with other
// statements (none yet, or PRAGMAs only) CrashNotCommitted becomes
// CrashIdle.
func (c *crashRun) pickMode() string {
	mode := crashModes[c.rng.IntN(len(crashModes))]
	if mode == CrashNotCommitted && (c.last.PragmaOnly() || c.last.Version == 0) {
		mode = CrashIdle
	}
	return mode
}

// prepareCrash brings the plugin into the state mode kills it in: a
// compaction running, or (CrashAnswerStuck) its output pipe full.
func (c *crashRun) prepareCrash(mode string) {
	t := c.t
	switch mode {
	case CrashCompacting:
		c.init()
		if _, err := c.l.Compact(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(c.rng.IntN(3000)) * time.Microsecond)
	case CrashAnswerStuck:
		// backup-status is answered from goroutines: with lightningd not
		// reading, their answers fill the pipe and the answer to the write
		// below cannot be written, but the read loop goes on to the write.
		c.init()
		if _, err := c.l.Compact(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.l.CompactionIdle(time.Minute); err != nil { // a short journal: cheap status calls
			t.Fatal(err)
		}
		c.l.HoldOutput(true)
		for range 400 {
			if _, err := c.l.Send("backup-status", nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.l.WaitOutputStuck(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
}

// sendInFlight sends next as the write the kill catches in flight, then
// waits as mode asks: a random pause, or until the write is durable.
func (c *crashRun) sendInFlight(mode string, next journal.Record) *Pending {
	p, err := c.l.Send("db_write", DBWriteParams{DataVersion: next.Version, Writes: next.Statements})
	if err != nil {
		c.t.Fatal(err)
	}
	if mode == CrashDelayed {
		time.Sleep(time.Duration(c.rng.IntN(400)) * time.Microsecond)
	}
	if mode == CrashAnswerStuck {
		c.waitJournal(next.Version)
	}
	return p
}

// answeredFirst reports whether the write in flight was answered before
// the kill (lightningd then committed it); a refusal, or any failure but
// the plugin's exit, fails the test.
func (c *crashRun) answeredFirst(what string, p *Pending) bool {
	t := c.t
	switch ok, err := p.Continued(); {
	case err == nil && ok:
		return true
	case err == nil:
		t.Fatalf("%s: the write in flight was refused; log: %v", what, c.l.Logs())
	case !errors.Is(err, ErrExited):
		t.Fatalf("%s: %v", what, err)
	}
	return false
}

// checkKilled checks the restore after the kill: it holds what lightningd
// committed, or that plus the write in flight if it became durable (which
// CrashAnswerStuck waited for). It returns what the journal may hold beyond
// the model.
func (c *crashRun) checkKilled(what, mode string, inflight *journal.Record) (durable []journal.Record) {
	if err := c.n.Matches(c.m, 0); err != nil || (mode == CrashAnswerStuck && inflight != nil) {
		if inflight == nil || c.n.Matches(c.m, 0, *inflight) != nil {
			c.t.Fatalf("%s: the restore does not hold what lightningd committed (data_version %d, or the write in flight): %v", what, c.m.Version(), err)
		}
		durable = []journal.Record{*inflight}
		c.stats[crashDurable]++
	}
	return durable
}

// restart is lightningd's restart: a new plugin, init before or after the
// re-send of what lightningd never committed (the write in flight, or the
// last change with CrashNotCommitted), at random with other statements or
// crashing again; the restore must then hold the re-sent change.
func (c *crashRun) restart(what, mode string, inflight *journal.Record, durable []journal.Record) {
	c.boot()
	if c.rng.IntN(2) == 0 {
		c.init()
	}
	var resend *journal.Record
	switch {
	case inflight != nil:
		r := *inflight
		if c.rng.IntN(2) == 0 {
			r = Resent(r, what)
			c.stats[crashResentOther]++
		}
		resend = &r
	case mode == CrashNotCommitted:
		r := Resent(c.last, what)
		resend = &r
	}
	if resend != nil && c.rng.IntN(4) == 0 {
		resend = c.crashAgain(what, *resend, durable)
	}
	if resend != nil {
		c.send(*resend)
		c.init()
		c.check(what + ", after the re-sent change")
	}
	c.init()
}

// crashAgain kills the plugin while it takes the re-sent change r (a crash
// loop), checks the restore, restarts the plugin, and returns what
// lightningd re-sends next (nil if r was answered).
func (c *crashRun) crashAgain(what string, r journal.Record, durable []journal.Record) *journal.Record {
	t := c.t
	c.stats[crashAgain]++
	p, err := c.l.Send("db_write", DBWriteParams{DataVersion: r.Version, Writes: r.Statements})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Duration(c.rng.IntN(400)) * time.Microsecond)
	c.l.Kill()
	ok, err := p.Continued()
	switch {
	case err == nil && ok:
		c.commit(r)
		c.boot()
		return nil
	case err == nil || !errors.Is(err, ErrExited):
		t.Fatalf("%s, crashing again: the re-sent write: %v %v", what, ok, err)
	case c.n.Matches(c.m, 0, durable...) != nil && c.n.Matches(c.m, 0, r) != nil:
		t.Fatalf("%s, crashing again: the restore holds neither the state before nor the re-sent change", what)
	}
	c.boot()
	again := Resent(r, what+", again")
	return &again
}

// waitJournal waits until the node's journal holds data_version v.
func (c *crashRun) waitJournal(v uint32) {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		sum, err := c.n.Summary(c.t.Context())
		if err != nil {
			c.t.Fatal(err)
		}
		if sum.Journal.LastVersion == v {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("data_version %d is not in the journal 10s after it was sent", v)
		}
	}
}
