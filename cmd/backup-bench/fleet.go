package main

// backup-bench fleet (issue 16, point 4): N simulated nodes send db_writes
// through one `backup-cli server` on loopback, each at a node's rate with
// bursts and compacting (sealing its journal into a change chunk, a
// manifest, a trim) automatically; measured with and without group commit
// in the same run.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// fleetConfig is a fleet run's workload.
type fleetConfig struct {
	Nodes       []int         `json:"nodes"`
	Duration    time.Duration `json:"duration_ns"`
	Rate        float64       `json:"rate_per_node"`   // changes/s per node outside bursts (0: saturate)
	BurstProb   float64       `json:"burst_prob"`      // chance that an event is a burst
	BurstSize   int           `json:"burst_size"`      // changes in a burst, back to back
	ChangeBytes int           `json:"change_bytes"`    // SQL bytes per change
	CompactAt   int           `json:"compact_records"` // journal records that trigger a compaction
	Modes       []bool        `json:"group_commit"`
	cli, work   string
}

// fleetResult is one configuration's figures.
type fleetResult struct {
	Nodes          int     `json:"nodes"`
	GroupCommit    bool    `json:"group_commit"`
	Seconds        float64 `json:"seconds"`
	Changes        int64   `json:"changes"`
	ChangesPerSec  float64 `json:"changes_per_sec"`
	HookP50Ms      float64 `json:"hook_p50_ms"`
	HookP99Ms      float64 `json:"hook_p99_ms"`
	HookMaxMs      float64 `json:"hook_max_ms"`
	Compactions    int64   `json:"compactions"`
	ServerCPUPct   float64 `json:"server_cpu_pct"`
	ServerPeakMiB  float64 `json:"server_peak_rss_mib"`
	Fdatasyncs     float64 `json:"fdatasyncs"`
	FdatasyncsPerS float64 `json:"fdatasyncs_per_sec"`
	Errors         int64   `json:"errors"`
	FirstError     string  `json:"first_error,omitempty"`
}

// runFleet is `backup-bench fleet`.
func runFleet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, asJSON, keep, err := parseFleetFlags(args, stderr)
	if err != nil {
		return err
	}
	work, cleanup, err := makeWorkDir(c.work, keep)
	if err != nil {
		return err
	}
	defer cleanup()
	c.work = work
	if c.cli == "" {
		if c.cli, err = buildCLI(ctx, work); err != nil {
			return err
		}
	}
	var results []fleetResult
	for _, n := range c.Nodes {
		for _, gc := range c.Modes {
			fmt.Fprintf(stderr, "fleet: %d nodes, group commit %v, %s...\n", n, gc, c.Duration)
			r, err := runFleetOnce(ctx, c, n, gc)
			if err != nil {
				return fmt.Errorf("%d nodes, group commit %v: %w", n, gc, err)
			}
			results = append(results, r)
		}
	}
	return emit(stdout, asJSON, struct {
		Config  fleetConfig   `json:"config"`
		Machine machine       `json:"machine"`
		Results []fleetResult `json:"results"`
	}{*c, describeMachine(work), results}, func(w io.Writer) { printFleet(w, c, results) })
}

func parseFleetFlags(args []string, stderr io.Writer) (*fleetConfig, bool, bool, error) {
	fs := flag.NewFlagSet("backup-bench fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &fleetConfig{}
	nodes := fs.String("nodes", "1,10,100", "node counts to run, comma-separated")
	modes := fs.String("group-commit", "both", "server group commit: on, off or both")
	fs.DurationVar(&c.Duration, "duration", 30*time.Second, "measured time per configuration")
	fs.Float64Var(&c.Rate, "rate", 2, "changes per second per node between bursts (0: every node sends as fast as acknowledged)")
	fs.Float64Var(&c.BurstProb, "burst-prob", 0.05, "chance that an event is a burst")
	fs.IntVar(&c.BurstSize, "burst-size", 20, "changes in a burst, sent back to back")
	fs.IntVar(&c.ChangeBytes, "change-bytes", 1500, "SQL bytes per change")
	fs.IntVar(&c.CompactAt, "compact-records", 200, "journal records after which a node compacts")
	fs.StringVar(&c.cli, "cli", "", "backup-cli binary (default: built with go build)")
	fs.StringVar(&c.work, "work-dir", "", "work directory (default: a new temporary directory)")
	keep := fs.Bool("keep", false, "keep the work directory")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	if err := fs.Parse(args); err != nil {
		return nil, false, false, err
	}
	for _, s := range strings.Split(*nodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > 1000 {
			return nil, false, false, fmt.Errorf("--nodes: %q is not a node count (1 to 1000)", s)
		}
		c.Nodes = append(c.Nodes, n)
	}
	switch *modes {
	case "on":
		c.Modes = []bool{true}
	case "off":
		c.Modes = []bool{false}
	case "both":
		c.Modes = []bool{false, true}
	default:
		return nil, false, false, fmt.Errorf("--group-commit: %q: give on, off or both", *modes)
	}
	if c.Duration <= 0 || c.Rate < 0 || c.BurstSize < 1 || c.ChangeBytes < 1 || c.CompactAt < 1 {
		return nil, false, false, fmt.Errorf("--duration, --burst-size, --change-bytes and --compact-records must be positive, --rate not negative")
	}
	return c, *asJSON, *keep, nil
}

// buildCLI builds backup-cli into work/bin.
func buildCLI(ctx context.Context, work string) (string, error) {
	if exe, err := os.Executable(); err == nil && !strings.Contains(exe, "go-build") {
		if p := filepath.Join(filepath.Dir(exe), "backup-cli"); isExecutable(p) {
			return p, nil
		}
	}
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("%v: give the binary with --cli", err)
	}
	out := filepath.Join(work, "bin", "backup-cli")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/backup-cli")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build backup-cli: %v\n%s", err, b)
	}
	return out, nil
}

// fleetServer is a running backup-cli server.
type fleetServer struct {
	cmd      *exec.Cmd
	addr     string
	httpAddr string
	tokens   []string
	stderr   *os.File
}

// startServer starts a server over a new store in dir for n nodes
// (node-1..node-n, one token each).
func startServer(ctx context.Context, c *fleetConfig, dir string, n int, gc bool) (*fleetServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := &fleetServer{}
	var auth strings.Builder
	for i := range n {
		tok := fmt.Sprintf("fleet-token-%04d-%s", i, strings.Repeat("x", 24))
		s.tokens = append(s.tokens, tok)
		fmt.Fprintf(&auth, "%s %s\n", tok, fleetNodeName(i))
	}
	authFile := filepath.Join(dir, "auth")
	if err := os.WriteFile(authFile, []byte(auth.String()), 0o600); err != nil {
		return nil, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	s.addr, s.httpAddr = ports[0], ports[1]
	if s.stderr, err = os.Create(filepath.Join(dir, "server.log")); err != nil {
		return nil, err
	}
	s.cmd = exec.CommandContext(ctx, c.cli, "server", "--auth", authFile, "--http", s.httpAddr,
		"--group-commit="+strconv.FormatBool(gc), "--max-conns", "4096", "--max-conns-per-addr", "0",
		"--max-handshakes", "1024", "--max-handshakes-per-addr", "1024",
		"file://"+filepath.Join(dir, "store"), s.addr)
	s.cmd.Stdout, s.cmd.Stderr = s.stderr, s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		conn, err := net.Dial("tcp", s.addr)
		if err == nil {
			conn.Close()
			return s, nil
		}
		if i > 200 {
			s.stop()
			return nil, fmt.Errorf("server did not listen on %s within 20 s (see %s)", s.addr, s.stderr.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freePorts returns loopback addresses with free ports.
func freePorts(n int) ([]string, error) {
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		out = append(out, l.Addr().String())
		defer l.Close()
	}
	return out, nil
}

func (s *fleetServer) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	s.stderr.Close()
}

// usage returns the server's CPU seconds so far and its peak RSS in MiB.
func (s *fleetServer) usage() (cpu, peakMiB float64) {
	pid := s.cmd.Process.Pid
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name (in parentheses): utime and stime
		// are the 12th and 13th, in clock ticks (100 a second on Linux).
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 13 {
				u, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				cpu = (u + st) / 100
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				peakMiB = kb / 1024
			}
		}
	}
	return cpu, peakMiB
}

// syncs scrapes the server's journal fdatasync counter.
func (s *fleetServer) syncs(ctx context.Context) (float64, error) {
	out, err := httpGet(ctx, "http://"+s.httpAddr+"/metrics")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "clnbackup_journal_fdatasyncs_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no clnbackup_journal_fdatasyncs_total in the server's metrics")
}

func fleetNodeName(i int) string { return fmt.Sprintf("node-%03d", i+1) }

// percentile of sorted durations, in ms.
func percentileMs(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	i := min(len(d)-1, int(p*float64(len(d))))
	return float64(d[i]) / 1e6
}

// collect merges the nodes' figures into r.
func (r *fleetResult) collect(nodes []*fleetNode, secs float64) {
	var all []time.Duration
	for _, n := range nodes {
		all = append(all, n.lat...)
		r.Changes += int64(len(n.lat))
		// A compaction may still run in the background.
		n.cmu.Lock()
		r.Compactions += n.compactions
		n.cmu.Unlock()
		n.errMu.Lock()
		r.Errors += n.errors
		if r.FirstError == "" && n.firstErr != nil {
			r.FirstError = n.firstErr.Error()
		}
		n.errMu.Unlock()
	}
	slices.Sort(all)
	r.Seconds = secs
	r.ChangesPerSec = float64(r.Changes) / secs
	r.HookP50Ms, r.HookP99Ms = percentileMs(all, 0.50), percentileMs(all, 0.99)
	if len(all) > 0 {
		r.HookMaxMs = float64(all[len(all)-1]) / 1e6
	}
}

// runFleetOnce runs one configuration: a server, n nodes connected, then
// the measured duration.
func runFleetOnce(ctx context.Context, c *fleetConfig, n int, gc bool) (fleetResult, error) {
	r := fleetResult{Nodes: n, GroupCommit: gc}
	dir := filepath.Join(c.work, fmt.Sprintf("fleet-%d-gc%v", n, gc))
	srv, err := startServer(ctx, c, dir, n, gc)
	if err != nil {
		return r, err
	}
	defer srv.stop()
	nodes := make([]*fleetNode, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range nodes {
		nodes[i] = &fleetNode{c: c, name: fleetNodeName(i), rng: rand.New(rand.NewPCG(uint64(i), 16))}
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = nodes[i].connect(ctx, srv.addr, srv.tokens[i]) }()
	}
	wg.Wait()
	defer func() {
		for _, nd := range nodes {
			nd.close()
		}
	}()
	for _, err := range errs {
		if err != nil {
			return r, err
		}
	}
	syncs0, err := srv.syncs(ctx)
	if err != nil {
		return r, err
	}
	cpu0, _ := srv.usage()
	start := time.Now()
	deadline := start.Add(c.Duration)
	for _, nd := range nodes {
		wg.Add(1)
		go func() { defer wg.Done(); nd.run(ctx, deadline) }()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	cpu1, peak := srv.usage()
	syncs1, err := srv.syncs(ctx)
	if err != nil {
		return r, err
	}
	r.collect(nodes, secs)
	r.ServerCPUPct = 100 * (cpu1 - cpu0) / secs
	r.ServerPeakMiB = peak
	r.Fdatasyncs = syncs1 - syncs0
	r.FdatasyncsPerS = r.Fdatasyncs / secs
	return r, nil
}

func printFleet(w io.Writer, c *fleetConfig, rs []fleetResult) {
	rate := fmt.Sprintf("%.3g changes/s per node, bursts of %d (p=%.2g)", c.Rate, c.BurstSize, c.BurstProb)
	if c.Rate == 0 {
		rate = "saturated (each node sends as fast as acknowledged)"
	}
	fmt.Fprintf(w, "fleet: %s each, %s, %d B a change, compaction every %d records\n", c.Duration, rate, c.ChangeBytes, c.CompactAt)
	fmt.Fprintf(w, "%6s %6s %10s %9s %9s %9s %8s %8s %9s %11s %6s\n", "nodes", "group", "changes/s", "p50 ms", "p99 ms", "max ms", "compact", "CPU %", "RSS MiB", "fdatasync/s", "errors")
	for _, r := range rs {
		g := "off"
		if r.GroupCommit {
			g = "on"
		}
		fmt.Fprintf(w, "%6d %6s %10.1f %9.2f %9.2f %9.1f %8d %8.1f %9.1f %11.1f %6d\n", r.Nodes, g, r.ChangesPerSec, r.HookP50Ms, r.HookP99Ms, r.HookMaxMs,
			r.Compactions, r.ServerCPUPct, r.ServerPeakMiB, r.FdatasyncsPerS, r.Errors)
		if r.FirstError != "" {
			fmt.Fprintf(w, "       first error: %s\n", r.FirstError)
		}
	}
}
