package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	ld "github.com/clnbackup/backup/plugin/lightningdtest"
)

// config is one pipeline run.
type config struct {
	Nodes      int     `json:"nodes"`
	Size       int64   `json:"db_bytes_target"`
	Steps      int     `json:"steps"`
	Seed       uint64  `json:"seed"`
	Update     float64 `json:"update_frac"`
	Delete     float64 `json:"delete_frac"`
	Insert     float64 `json:"insert_frac"`
	Hot        bool    `json:"hot_rows"`
	VacuumStep int     `json:"vacuum_step,omitempty"`
	// HookStatements caps a step hook's statements (plus the bump).
	HookStatements int `json:"hook_statements"`
	// GCAge is how far back the packs and indexes are dated before gc, so
	// that gc treats them as older than its grace period (0: not at all).
	GCAge time.Duration `json:"gc_age_ns"`
	// Encrypted: the store was created encrypted (--encrypt's second run).
	Encrypted bool `json:"encrypted,omitempty"`

	work, storeDir         string
	passFile               string // the encrypted store's passphrase file
	keyFile                string // its master key, exported after the first init
	plugin, cli, noop      string
	self                   string // this binary, for rssWrap
	logf                   func(string, ...any)
	cliCompactLast, noNoop bool
	restoreFloor           bool // measure each restore's floor (restoreFloor)
}

// node is one simulated lightningd with its plugin.
type node struct {
	name, dir, db string
	gen           *workload.Generator
	log           *changeLog
	l             *ld.Lightningd
	idle          ld.Memory
}

// cliRun is one backup-cli invocation.
type cliRun struct {
	Seconds float64 `json:"seconds"`
	// CPUSeconds is the user and system time of the run.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	MaxRSS     int64   `json:"max_rss_bytes"`
	// PrivatePeak is the peak of its private memory (see rssWrap).
	PrivatePeak int64 `json:"private_peak_bytes,omitempty"`
	stdout      []byte
	exitError   error
}

// runCLI runs backup-cli with --json and returns its output, wall time and
// peak RSS (see rssWrap).
func (c *config) runCLI(ctx context.Context, out any, args ...string) (cliRun, error) {
	rssFile := filepath.Join(c.work, "rss")
	os.Remove(rssFile)
	pre := []string{rssWrapArg, rssFile, c.cli, "--json"}
	switch {
	case c.keyFile != "":
		pre = append(pre, "--key-file", c.keyFile)
	case c.passFile != "":
		pre = append(pre, "--passphrase-file", c.passFile)
	}
	cmd := exec.CommandContext(ctx, c.self, append(pre, args...)...)
	errBuf := &limitedBuffer{}
	cmd.Stderr = errBuf
	start := time.Now()
	stdout, err := cmd.Output()
	r := cliRun{Seconds: time.Since(start).Seconds(), stdout: stdout}
	if ps := cmd.ProcessState; ps != nil {
		r.CPUSeconds = (ps.UserTime() + ps.SystemTime()).Seconds() // the wrapper's waited children included
	}
	if err != nil {
		return r, fmt.Errorf("backup-cli %v: %v\n%s", args, err, errBuf.b)
	}
	if r.MaxRSS, r.PrivatePeak, err = readRSS(rssFile); err != nil {
		return r, fmt.Errorf("backup-cli %v: peak RSS: %v", args, err)
	}
	if out != nil {
		if err := json.Unmarshal(stdout, out); err != nil {
			return r, fmt.Errorf("backup-cli %v: parse output: %v\n%s", args, err, stdout)
		}
	}
	return r, nil
}

// runCLIFloor measures /bin/true through rssWrap.
func (c *config) runCLIFloor(ctx context.Context) (int64, error) {
	rssFile := filepath.Join(c.work, "rss")
	if err := exec.CommandContext(ctx, c.self, rssWrapArg, rssFile, "true").Run(); err != nil {
		return 0, err
	}
	rss, _, err := readRSS(rssFile)
	return rss, err
}

// rssWrapArg as the first argument makes this binary rssWrap.
const rssWrapArg = "__rss-wrap"

// rssWrap runs a command (args[1:]) with this process's standard streams,
// writes its peak RSS and its peak private memory in bytes to the file
// args[0] ("RSS PRIVATE") and exits with its exit code. Why a wrapper: on
// Linux a child's ru_maxrss includes the RSS of the process that forked it
// (exec records the old address space's high-water mark), so the
// benchmark, which holds hundreds of MB, would be counted in every
// backup-cli run. Forked from this small process, the command's ru_maxrss
// is max(its own peak, this wrapper's: a few MB; reported as the floor).
//
// RSS counts the pages of files a process maps: a restore's integrity
// check maps the restored file, whose pages are in the page cache anyway,
// so its RSS follows the database's size. Private memory (RssAnon +
// RssShmem of /proc/PID/status, sampled every 5 ms) is what the process
// holds of its own.
func rssWrap(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: backup-bench "+rssWrapArg+" RSSFILE COMMAND [ARGS...]")
		return 2
	}
	cmd := exec.Command(args[1], args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan struct{})
	peak := make(chan int64, 1)
	go func() { peak <- samplePrivate(cmd.Process.Pid, done) }()
	err := cmd.Wait()
	close(done)
	private := <-peak
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		os.WriteFile(args[0], []byte(fmt.Sprintf("%d %d", ru.Maxrss<<10, private)), 0o600) // kilobytes on Linux
	}
	return cmd.ProcessState.ExitCode()
}

// samplePrivate returns the largest private memory (RssAnon + RssShmem)
// of process pid seen every 5 ms until done is closed.
func samplePrivate(pid int, done <-chan struct{}) int64 {
	path := fmt.Sprintf("/proc/%d/status", pid)
	var peak int64
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			peak = max(peak, privateOf(string(b)))
		}
		select {
		case <-done:
			return peak
		case <-t.C:
		}
	}
}

// privateOf sums the RssAnon and RssShmem lines (in kB) of a
// /proc/PID/status text, in bytes.
func privateOf(status string) int64 {
	var n int64
	for _, line := range strings.Split(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "RssAnon" && k != "RssShmem") {
			continue
		}
		if kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			n += kb << 10
		}
	}
	return n
}

// readRSS parses what rssWrap wrote: peak RSS and peak private memory.
func readRSS(path string) (rss, private int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("peak RSS file %q", b)
	}
	if rss, err = strconv.ParseInt(f[0], 10, 64); err == nil {
		private, err = strconv.ParseInt(f[1], 10, 64)
	}
	return rss, private, err
}

type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if len(l.b) < 64<<10 {
		l.b = append(l.b, p...)
	}
	return len(p), nil
}

// pluginOptions turn the plugin's automatic compactions off: the benchmark
// compacts once per step.
var pluginOptions = map[string]any{
	"backup-compact-changes":       0,
	"backup-compact-journal-bytes": 0,
	"backup-compact-interval":      "0",
}

// run runs the whole pipeline and returns its measurements.
func (c *config) run(ctx context.Context) (*result, error) {
	res := &result{Config: *c}
	if c.storeDir == "" {
		c.storeDir = filepath.Join(c.work, "store")
	}
	p := &pipeline{c: c, res: res, url: "file://" + c.storeDir, bound: newPageBound(), py: &res.Storage.Python}
	defer p.kill()
	if err := p.setUpNodes(ctx); err != nil {
		return nil, err
	}
	if err := p.startNoop(ctx); err != nil {
		return nil, err
	}
	if err := p.startPlugins(ctx); err != nil {
		return nil, err
	}
	for step := 1; step <= c.Steps; step++ {
		if err := p.step(step); err != nil {
			return nil, err
		}
	}
	if err := p.stopPlugins(); err != nil {
		return nil, err
	}
	if c.cliCompactLast {
		if err := p.compactByCLI(ctx); err != nil {
			return nil, err
		}
	}
	res.Hooks.Latency = latencies(p.hooks)
	res.Hooks.DuringCompaction = latencies(p.during)
	res.Hooks.Noop = latencies(p.noopRTTs)
	res.Hooks.NoopDuringCompaction = latencies(p.noopDuring)
	if err := p.gc(ctx); err != nil {
		return nil, err
	}
	if err := p.restoreAll(ctx); err != nil {
		return nil, err
	}
	res.Storage.Bound = *p.bound
	return res, nil
}

// pipeline is one config.run in progress: the state its phases share, so
// that each phase is a method instead of a closure over run's variables.
type pipeline struct {
	c     *config
	res   *result
	url   string // the store, as backup-cli takes it
	bound *pageBound
	py    *pythonCost // &res.Storage.Python
	nodes []*node
	// noop is the plugin that stores nothing (the floor); nil with noNoop.
	noop *ld.Lightningd
	// Round trips: hooks outside compactions, hooks during them, and the
	// no-op plugin's for the same hooks.
	hooks, during, noopRTTs []time.Duration
	// noopDuring: the no-op's round trips while compacting is set.
	noopDuring []time.Duration
	compacting bool
}

// kill stops every plugin still running when run returns (in the reverse
// order of their start, the floor's last), so that a failed run leaves no
// process behind; plugins already closed are not hurt.
func (p *pipeline) kill() {
	for i := len(p.nodes) - 1; i >= 0; i-- {
		if n := p.nodes[i]; n != nil && n.l != nil {
			n.l.Kill()
		}
	}
	if p.noop != nil {
		p.noop.Kill()
	}
}

// setUpNodes populates each node's database and inits the node from it,
// as an operator installing the backup on an existing node does.
func (p *pipeline) setUpNodes(ctx context.Context) error {
	c, res := p.c, p.res
	p.nodes = make([]*node, c.Nodes)
	for i := range p.nodes {
		n := &node{name: fmt.Sprintf("node%d", i+1), log: newChangeLog()}
		n.dir = filepath.Join(c.work, n.name, "lightning")
		n.db = filepath.Join(n.dir, "lightningd.sqlite3")
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return err
		}
		n.gen = workload.New(workload.Config{Seed: c.Seed + uint64(i), TargetBytes: c.Size,
			UpdateFrac: c.Update, DeleteFrac: c.Delete, InsertFrac: c.Insert, HotRows: c.Hot, StepHookStatements: c.HookStatements})
		start := time.Now()
		if err := workload.Build(n.db, n.gen.Populate); err != nil {
			return err
		}
		c.logf("%s: database of %s built in %v", n.name, mb(fileSize(n.db)), time.Since(start).Round(time.Millisecond))
		var out struct {
			AddedBytes int64 `json:"added_bytes"`
		}
		args := []string{"init", "--lightning-dir", n.dir, "--node", n.name, p.url}
		if c.Encrypted {
			args = append(args, "--encrypt")
		}
		r, err := c.runCLI(ctx, &out, args...)
		if err != nil {
			return err
		}
		res.CLI.Init = append(res.CLI.Init, r)
		if c.Encrypted && c.keyFile == "" {
			// The commands after the store's creation open it with its
			// master key, so that their times and memory are the work's,
			// not the passphrase KDF's (about 0.5 s and 64 MiB a command).
			keyFile := filepath.Join(c.work, "master.key")
			if _, err := c.runCLI(ctx, nil, "key", "export", "--output", keyFile, p.url); err != nil {
				return err
			}
			c.keyFile = keyFile
		}
		if err := c.snapshot(n, p.bound, p.py, res); err != nil {
			return err
		}
		p.nodes[i] = n
	}
	return nil
}

// startNoop starts the plugin that stores nothing, whose round trips for
// the same hooks are the floor the backup plugin's are measured against.
func (p *pipeline) startNoop(ctx context.Context) error {
	if p.c.noNoop {
		return nil
	}
	dir := filepath.Join(p.c.work, "noop")
	os.MkdirAll(dir, 0o700)
	var err error
	p.noop, err = startPlugin(ctx, p.c.noop, dir, nil)
	return err
}

// startPlugins starts each node's backup plugin and warms it up with 20
// blocks' hooks before its idle memory is read.
func (p *pipeline) startPlugins(ctx context.Context) error {
	for _, n := range p.nodes {
		var err error
		if n.l, err = startPlugin(ctx, p.c.plugin, n.dir, pluginOptions); err != nil {
			return err
		}
		for range 20 {
			if err := p.feed(n, n.gen.Block, &p.hooks); err != nil {
				return err
			}
		}
		if n.idle, err = n.l.Memory(); err != nil {
			return err
		}
		p.res.Memory.PluginIdleRSS = max(p.res.Memory.PluginIdleRSS, n.idle.RSS)
	}
	return nil
}

// send sends a hook to the node's plugin (and the same to the floor).
func (p *pipeline) send(n *node, h workload.Hook, lat *[]time.Duration) error {
	res := p.res
	ok, rtt, err := n.l.DBWriteTimed(h.Version, h.Statements)
	if err != nil || !ok {
		return fmt.Errorf("%s: db_write %d: continue=%v %v (plugin stderr: %q)", n.name, h.Version, ok, err, n.l.Stderr())
	}
	*lat = append(*lat, rtt)
	n.log.add(h)
	p.py.LogBytes += zlibSize(legacyChange(h.Statements))
	for _, s := range h.Statements {
		res.Storage.StatementBytes += int64(len(s))
	}
	res.Hooks.Count++
	if p.noop != nil {
		ok, rtt, err := p.noop.DBWriteTimed(h.Version, h.Statements)
		if err != nil || !ok {
			return fmt.Errorf("noop plugin: db_write %d: %v %v", h.Version, ok, err)
		}
		p.noopRTTs = append(p.noopRTTs, rtt)
		if p.compacting {
			p.noopDuring = append(p.noopDuring, rtt)
		}
	}
	return nil
}

// feed sends a generator's hooks and commits them to lightningd's
// database.
func (p *pipeline) feed(n *node, gen func(func(workload.Hook) error) error, lat *[]time.Duration) error {
	var hs []workload.Hook
	if err := gen(func(h workload.Hook) error {
		hs = append(hs, h)
		return p.send(n, h, lat)
	}); err != nil {
		return err
	}
	return workload.Build(n.db, workload.Hooks(hs...))
}

// step runs one evolution step (step counts from 1) on every node: its
// hooks, its snapshot counted in the bounds, and a compaction through the
// plugin, but for the last step's when backup-cli compacts it.
func (p *pipeline) step(step int) error {
	c := p.c
	st := stepStat{Step: step}
	var during []time.Duration
	for _, n := range p.nodes {
		gen := n.gen.Step
		if step == c.VacuumStep {
			gen = n.gen.Rebuild
			st.Vacuum = true
		}
		if err := p.feed(n, gen, &p.hooks); err != nil {
			return err
		}
		newPages, err := c.snapshotCount(n, p.bound, p.py, p.res)
		if err != nil {
			return err
		}
		st.NewPages += newPages
		// The newest change is never sealed (lightningd may re-send
		// it): one more, so the snapshot holds the whole step.
		if err := p.feed(n, n.gen.Block, &p.hooks); err != nil {
			return err
		}
		if step == c.Steps && c.cliCompactLast {
			continue // compacted by backup-cli once the plugins stop
		}
		n.log.seal()
		secs, added, err := p.compact(n, &during)
		if err != nil {
			return err
		}
		st.Seconds += secs
		st.MaxSeconds = max(st.MaxSeconds, secs)
		st.AddedBytes += added
	}
	if len(during) > 0 {
		h := latencies(during)
		st.Hooks = &h
		p.during = append(p.during, during...)
	}
	if step < c.Steps || !c.cliCompactLast {
		c.finishStep(&st, len(p.nodes))
	}
	p.res.Steps = append(p.res.Steps, st)
	return nil
}

// stopPlugins reads each plugin's peak memory and closes it as lightningd's
// exit does: a plugin that fails to exit cleanly or broke the protocol
// fails the run.
func (p *pipeline) stopPlugins() error {
	for _, n := range p.nodes {
		m, err := n.l.Memory()
		if err != nil {
			return err
		}
		p.res.Memory.PluginPeakRSS = max(p.res.Memory.PluginPeakRSS, m.Peak)
		if err := n.l.Close(); err != nil {
			return fmt.Errorf("%s: plugin exit: %w", n.name, err)
		}
		if v := n.l.Violations(); len(v) > 0 {
			return fmt.Errorf("%s: plugin broke the protocol: %q", n.name, v)
		}
	}
	return nil
}

// compactByCLI compacts the last step with backup-cli compact (offline,
// the plugins stopped), so that the CLI's memory is measured too.
func (p *pipeline) compactByCLI(ctx context.Context) error {
	st := &p.res.Steps[len(p.res.Steps)-1]
	for _, n := range p.nodes {
		var out struct {
			AddedBytes int64   `json:"added_bytes"`
			Seconds    float64 `json:"duration_seconds"`
			Compacted  bool    `json:"compacted"`
		}
		n.log.seal()
		r, err := p.c.runCLI(ctx, &out, "compact", "--node", n.name, p.url)
		if err != nil {
			return err
		}
		if !out.Compacted {
			return fmt.Errorf("%s: backup-cli compact found nothing to compact", n.name)
		}
		p.res.CLI.Compact = append(p.res.CLI.Compact, r)
		st.Seconds += out.Seconds
		st.MaxSeconds = max(st.MaxSeconds, out.Seconds)
		st.AddedBytes += out.AddedBytes
	}
	st.CLI = true
	p.c.finishStep(st, len(p.nodes))
	return nil
}

// gc measures the store, dates its packs back (GCAge) so that gc may
// repack them, runs backup-cli gc twice (the second finds what the first
// left), and measures the store again, by kind and by content.
func (p *pipeline) gc(ctx context.Context) error {
	c, res := p.c, p.res
	var err error
	if res.Storage.BeforeGC, res.Storage.BeforeGCBy, err = storeUsage(c.storeDir); err != nil {
		return err
	}
	if c.GCAge > 0 {
		if err := age(c.storeDir, c.GCAge); err != nil {
			return err
		}
	}
	for range 2 {
		var rep map[string]any
		r, err := c.runCLI(ctx, &rep, "gc", p.url)
		if err != nil {
			return err
		}
		res.CLI.GC = append(res.CLI.GC, r)
		res.GC = append(res.GC, rep)
	}
	if res.Storage.Stored, res.Storage.By, err = storeUsage(c.storeDir); err != nil {
		return err
	}
	if res.Storage.Content, err = storeContent(ctx, c.storeDir, res.Storage.By, c.keyFile); err != nil {
		if !c.Encrypted {
			return fmt.Errorf("stored bytes by content: %w", err)
		}
		c.logf("stored bytes by content of the encrypted store: %v (left out)", err)
	}
	for _, n := range p.nodes {
		n.log.addTo(&res.Storage.ChangeBound)
	}
	return nil
}

// restoreAll restores every node with backup-cli and checks each against
// lightningd's database table by table: a mismatch is recorded, not an
// error, so that the report shows it.
func (p *pipeline) restoreAll(ctx context.Context) error {
	for _, n := range p.nodes {
		dest := filepath.Join(p.c.work, n.name, "restored.sqlite3")
		r, err := p.c.runCLI(ctx, nil, "restore", "--node", n.name, p.url, dest)
		if err != nil {
			return err
		}
		p.res.CLI.Restore = append(p.res.CLI.Restore, r)
		rr := restoreStat{Node: n.name, Bytes: fileSize(dest), Seconds: r.Seconds, MaxRSS: r.MaxRSS, PrivatePeak: r.PrivatePeak, CPUSeconds: r.CPUSeconds}
		rr.MBps = float64(rr.Bytes) / 1e6 / r.Seconds
		if p.c.restoreFloor {
			if rr.FloorSeconds, _, err = restoreFloor(dest); err != nil {
				return err
			}
			rr.FloorMBps = float64(rr.Bytes) / 1e6 / rr.FloorSeconds
		}
		if err := ld.SameDB(dest, n.db); err != nil {
			rr.Mismatch = err.Error()
		} else {
			rr.Matched = true
		}
		p.res.Restores = append(p.res.Restores, rr)
		os.Remove(dest)
	}
	return nil
}

// startPlugin starts a plugin as lightningd does and initializes it.
func startPlugin(ctx context.Context, bin, dir string, opts map[string]any) (*ld.Lightningd, error) {
	l, err := ld.Start(ctx, bin, dir, ld.Options{Timeout: 5 * time.Minute})
	if err != nil {
		return nil, err
	}
	if _, err := l.GetManifest(); err != nil {
		l.Kill()
		return nil, err
	}
	if err := l.Init(opts); err != nil {
		l.Kill()
		return nil, fmt.Errorf("init %s: %w (stderr %q)", bin, err, l.Stderr())
	}
	return l, nil
}

// statusPoll is how often compact asks whether the compaction ended: each
// backup-status reads the node's manifests and journal, work lightningd
// does not ask of the plugin between hooks, so asking after every block
// of hooks measured the status calls as much as the compaction.
const statusPoll = 250 * time.Millisecond

// compact asks the node's plugin to compact and, while it does, goes on
// sending small hooks as lightningd would (their round trips are kept
// apart). It returns the compaction's duration and bytes added.
func (p *pipeline) compact(n *node, during *[]time.Duration) (float64, int64, error) {
	a, err := n.l.Compact()
	if err != nil {
		return 0, 0, fmt.Errorf("%s: backup-compact: %w", n.name, err)
	}
	if a != ld.CompactStarted {
		return 0, 0, fmt.Errorf("%s: backup-compact answered %q", n.name, a)
	}
	p.compacting = true
	defer func() { p.compacting = false }()
	start, first := time.Now(), len(*during)
	var polled time.Time
	var sent []time.Duration // when each hook of during[first:] was sent
	for {
		at := time.Since(start)
		if err := p.feed(n, n.gen.Block, during); err != nil {
			return 0, 0, err
		}
		for len(sent) < len(*during)-first {
			sent = append(sent, at)
		}
		if time.Since(polled) < statusPoll {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		polled = time.Now()
		running, last, err := n.l.CompactionState()
		if err != nil {
			return 0, 0, err
		}
		if !running {
			if e, _ := last["error"].(string); e != "" {
				return 0, 0, fmt.Errorf("%s: compaction failed: %s", n.name, e)
			}
			secs, _ := last["duration_seconds"].(float64)
			added, _ := last["added_bytes"].(float64)
			if ph, ok := last["phases"]; ok {
				p.c.logf("%s: compaction phases %v", n.name, ph)
				p.c.logf("%s: hooks by compaction phase: %s", n.name, hooksByPhase(ph, sent, (*during)[first:]))
			}
			return secs, int64(added), nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hooksByPhase sorts hooks (sent at the offsets given from the start of a
// compaction) into the compaction's phases (its "phases" report, in order)
// and describes each phase's latencies: to see which phase slows db_writes.
func hooksByPhase(phases any, sent, lat []time.Duration) string {
	list, _ := phases.([]any)
	var b strings.Builder
	var end time.Duration
	i := 0
	for k, ph := range list {
		m, _ := ph.(map[string]any)
		name, _ := m["name"].(string)
		secs, _ := m["seconds"].(float64)
		end += time.Duration(secs * float64(time.Second))
		j := i
		for j < len(sent) && (sent[j] < end || k == len(list)-1) {
			j++
		}
		if j > i {
			h := latencies(lat[i:j])
			fmt.Fprintf(&b, "%s %d hooks p50 %.2f p99 %.2f max %.2f ms; ", name, h.Count, h.P50, h.P99, h.Max)
		}
		i = j
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// snapshot counts the node's database as a restore point: in the page
// bound, the raw bytes and the Python plugin's cost.
func (c *config) snapshot(n *node, b *pageBound, py *pythonCost, res *result) error {
	_, err := c.snapshotCount(n, b, py, res)
	return err
}

// snapshotCount counts the node's database as snapshot does and returns
// the pages new to the bound. The file is read in blocks, never whole.
func (c *config) snapshotCount(n *node, b *pageBound, py *pythonCost, res *result) (int64, error) {
	s, err := b.scanSnapshot(n.db)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", n.name, err)
	}
	res.Storage.Snapshots++
	py.SnapshotBytes += s.ZlibBytes
	py.Uncompressed += s.Bytes
	return s.NewPages, nil
}

func (c *config) finishStep(st *stepStat, nodes int) {
	st.Seconds /= float64(nodes)
	u, _, err := storeUsage(c.storeDir)
	if err == nil {
		st.StoreBytes, st.StoreFiles = u.Allocated, u.Files
	}
	c.logf("step %d: compaction %.2fs (max %.2fs), %s added, %d new distinct pages; store %s in %d files",
		st.Step, st.Seconds, st.MaxSeconds, mb(st.AddedBytes), st.NewPages, mb(st.StoreBytes), st.StoreFiles)
	if h := st.Hooks; h != nil {
		c.logf("step %d: %d hooks while compacting: p50 %.2f ms, p99 %.2f ms, max %.2f ms", st.Step, h.Count, h.P50, h.P99, h.Max)
	}
}

// age dates every pack and index back by d: gc then takes them for older
// than its grace period, as a gc run d after the writes would.
func age(dir string, d time.Duration) error {
	t := time.Now().Add(-d)
	for _, sub := range []string{"packs", "index"} {
		err := filepath.Walk(filepath.Join(dir, sub), func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if fi.Mode().IsRegular() {
				return os.Chtimes(p, t, t)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}
