package lightningdtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store/journal"
)

// DefaultJoin is the RPC method Play sends in the same write as some hooks.
const DefaultJoin = "backup-status"

// PlayOptions tune Play.
type PlayOptions struct {
	// Start is passed to Start for every plugin process.
	Start Options
	// Seed drives the choice of hooks that are split across two writes or
	// joined with an RPC call in one write (the same seed, the same writes).
	Seed uint64
	// InitOptions are the plugin options sent with init.
	InitOptions map[string]any
	// Join is the RPC method sent in the same write as about one hook in ten
	// after init ("": DefaultJoin; "-": never join).
	Join string
	// CompactEvery calls backup-compact after every CompactEvery hooks sent
	// after init (0: never).
	CompactEvery int
	// SplitPause is the pause between the two writes of a split request
	// (0: 1ms).
	SplitPause time.Duration
}

// PlayResult summarizes a replay.
type PlayResult struct {
	// Hooks is the number of db_write calls answered "continue".
	Hooks int
	// BeforeInit is how many of them were sent before init.
	BeforeInit int
	// Runs is the number of plugin processes started (lightningd restarts + 1).
	Runs int
	// Rewinds counts hooks that re-sent the previous hook's data_version
	// with statements that are not all PRAGMAs (lightningd died between the
	// hook and its commit).
	Rewinds int
	// Split and Joined count hooks sent in two writes, or in one write
	// together with an RPC call.
	Split, Joined int
	// Compactions counts backup-compact calls.
	Compactions int
	// LastVersion is the data_version of the last hook.
	LastVersion uint32
	// P50, P99 and Max are the round trips of hooks sent in one write.
	P50, P99, Max time.Duration
	// Logs are the log notifications of every plugin process, in order.
	Logs []LogLine
	// Duration is the wall time of the replay.
	Duration time.Duration
}

// RefusedError is returned by Play when the plugin refused a hook: lightningd
// would have exited without committing it.
type RefusedError struct {
	// Index is the entry's position in the trace.
	Index   int
	Version uint32
	// Answer is the plugin's answer.
	Answer string
}

// Error says which hook was refused and how.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("plugin refused db_write data_version %d (trace entry %d): %s", e.Version, e.Index, e.Answer)
}

// Play replays a recorded trace (replay.ReadTrace) through the plugin at
// path, with dir as the lightning directory, the way lightningd sent it: a
// "getmanifest" marker or the first entry of a new lightningd pid starts a
// plugin process (after closing the previous one's stdin, as lightningd's
// exit does); hooks recorded before init are sent before init; "eof" closes
// the plugin's stdin. Request ids alternate between strings and numbers
// (when the manifest allows it); a seeded tenth of the hooks is split across
// two writes and, after init, another tenth is joined with an RPC call in
// one write. It stops at the first refused hook (*RefusedError), at the
// first protocol violation and at the first failure.
func Play(ctx context.Context, path, dir string, entries []replay.TraceEntry, opts PlayOptions) (PlayResult, error) {
	start := time.Now()
	if opts.Join == "" {
		opts.Join = DefaultJoin
	}
	if opts.SplitPause == 0 {
		opts.SplitPause = time.Millisecond
	}
	logf := opts.Start.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	p := &player{ctx: ctx, path: path, dir: dir, opts: opts, logf: logf,
		rng: rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))}
	for i, e := range entries {
		if err := p.entry(i, e); err != nil {
			return p.fail(start, err)
		}
	}
	if err := p.stop(); err != nil {
		return p.fail(start, err)
	}
	p.res.P50, p.res.P99, p.res.Max = Percentiles(p.rtts)
	p.res.Duration = time.Since(start)
	return p.res, nil
}

// player is one Play in progress: the plugin process of the lightningd run
// being replayed and what the replay counted so far, shared by its steps.
type player struct {
	ctx       context.Context
	path, dir string
	opts      PlayOptions
	logf      func(string, ...any)
	rng       *rand.Rand
	res       PlayResult
	l         *Lightningd // nil between two lightningd runs
	inited    bool
	pid       int             // lightningd's pid of the entries being played
	rtts      []time.Duration // round trips of hooks sent in one write
	prev      journal.Record  // the previous hook, to count rewinds
	havePrev  bool
	sinceComp int // hooks since the last backup-compact
}

// entry plays trace entry i as lightningd would: a new lightningd pid
// restarts the plugin first, and any entry but "eof" needs a plugin.
func (p *player) entry(i int, e replay.TraceEntry) error {
	if p.l != nil && e.PID != p.pid {
		p.logf("lightningdtest: lightningd pid %d -> %d: restarting the plugin", p.pid, e.PID)
		if err := p.stop(); err != nil {
			return err
		}
	}
	p.pid = e.PID
	if p.l == nil && e.Event != "eof" {
		if err := p.run(); err != nil {
			return err
		}
	}
	switch e.Event {
	case "getmanifest":
	case "init":
		return p.init()
	case "eof":
		return p.stop()
	case "":
		return p.hook(i, e)
	}
	return nil
}

// stop closes the plugin as lightningd's exit does and keeps its logs;
// protocol violations fail the replay as a failed exit does.
func (p *player) stop() error {
	if p.l == nil {
		return nil
	}
	err := p.l.Close()
	p.res.Logs = append(p.res.Logs, p.l.Logs()...)
	v := p.l.Violations()
	p.l, p.inited = nil, false
	if len(v) > 0 {
		return fmt.Errorf("protocol violations: %s", strings.Join(v, "; "))
	}
	return err
}

// run starts a plugin process and checks that its manifest registers the
// db_write hook, without which nothing could be replayed.
func (p *player) run() error {
	var err error
	if p.l, err = Start(p.ctx, p.path, p.dir, p.opts.Start); err != nil {
		return err
	}
	p.res.Runs++
	m, err := p.l.GetManifest()
	if err != nil {
		return err
	}
	if !m.HasHook("db_write") {
		return fmt.Errorf("the plugin's manifest does not register the db_write hook: %s", m.Raw)
	}
	return nil
}

// init sends init once per plugin process, as lightningd does.
func (p *player) init() error {
	if !p.inited {
		if err := p.l.Init(p.opts.InitOptions); err != nil {
			return err
		}
		p.inited = true
	}
	return nil
}

// fail ends the replay with err, closing the plugin still running so that
// its logs are in the result too.
func (p *player) fail(start time.Time, err error) (PlayResult, error) {
	if p.l != nil {
		p.l.Close()
		p.res.Logs = append(p.res.Logs, p.l.Logs()...)
	}
	p.res.Duration = time.Since(start)
	return p.res, err
}

// hook sends trace entry i's db_write (sending init first if it was
// recorded after init) and counts it; a refused hook ends the replay as it
// ends lightningd.
func (p *player) hook(i int, e replay.TraceEntry) error {
	if !e.BeforeInit {
		if err := p.init(); err != nil {
			return err
		}
	}
	res := &p.res
	rec := journal.Record{Version: e.Version, Statements: e.Writes}
	if p.havePrev && rec.Version == p.prev.Version && !rec.PragmaOnly() && !p.prev.PragmaOnly() {
		res.Rewinds++
	}
	ok, answer, rtt, mode, err := sendHook(p.l, p.rng, p.inited, p.opts, e)
	if err != nil {
		return fmt.Errorf("trace entry %d (data_version %d): %w", i, e.Version, err)
	}
	if !ok {
		return &RefusedError{Index: i, Version: e.Version, Answer: answer}
	}
	switch mode {
	case "split":
		res.Split++
	case "joined":
		res.Joined++
	default:
		p.rtts = append(p.rtts, rtt)
	}
	res.Hooks++
	if !p.inited {
		res.BeforeInit++
	}
	res.LastVersion = e.Version
	p.prev, p.havePrev = rec, true
	return p.maybeCompact(e)
}

// maybeCompact calls backup-compact after every CompactEvery hooks sent
// after init (e: the hook just sent), as an operator or a timer would.
func (p *player) maybeCompact(e replay.TraceEntry) error {
	if !p.inited || p.opts.CompactEvery <= 0 {
		return nil
	}
	if p.sinceComp++; p.sinceComp >= p.opts.CompactEvery {
		p.sinceComp = 0
		if _, err := p.l.Call("backup-compact", nil); err != nil {
			return fmt.Errorf("backup-compact after data_version %d: %w", e.Version, err)
		}
		p.res.Compactions++
	}
	return nil
}

// sendHook sends one hook, in one write, split in two, or joined with an RPC
// call, and returns the plugin's verdict and answer.
func sendHook(l *Lightningd, rng *rand.Rand, inited bool, opts PlayOptions, e replay.TraceEntry) (ok bool, answer string, rtt time.Duration, mode string, err error) {
	params := DBWriteParams{DataVersion: e.Version, Writes: e.Writes}
	var p *Pending
	switch r := rng.IntN(10); {
	case r == 0:
		mode = "split"
		p, err = l.SendSplit("db_write", params, 1+rng.IntN(64), opts.SplitPause)
	case r == 1 && inited && opts.Join != "-":
		mode = "joined"
		var ps []*Pending
		ps, err = l.SendJoined(Request{Method: opts.Join}, Request{Method: "db_write", Params: params})
		if err == nil {
			resp, werr := ps[0].Wait()
			if werr != nil {
				return false, "", 0, mode, werr
			}
			if resp.Error != nil {
				return false, "", 0, mode, fmt.Errorf("%s sent with the hook: %w", opts.Join, resp.Error)
			}
			p = ps[1]
		}
	default:
		p, err = l.Send("db_write", params)
	}
	if err != nil {
		return false, "", 0, mode, err
	}
	resp, err := p.Wait()
	if err != nil {
		return false, "", 0, mode, err
	}
	if resp.Error != nil {
		b, _ := json.Marshal(resp.Error)
		return false, "error " + string(b), resp.RTT, mode, nil
	}
	var r struct {
		Result string `json:"result"`
	}
	if json.Unmarshal(resp.Result, &r) == nil && r.Result == "continue" {
		return true, "", resp.RTT, mode, nil
	}
	return false, "result " + string(resp.Result), resp.RTT, mode, nil
}

// Percentiles returns the median, the 99th percentile and the maximum of
// ds (nearest rank; zeros when ds is empty). ds is not modified.
func Percentiles(ds []time.Duration) (p50, p99, worst time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return rank(0.50), rank(0.99), s[len(s)-1]
}

// IsRefused reports whether err is (or wraps) a *RefusedError.
func IsRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}
