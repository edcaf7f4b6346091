// Command backup-bench runs the whole backup pipeline on generated
// Lightning-like databases and measures it against the lower bound and the
// Python plugin (issue 5, docs/benchmark.md): K nodes sharing one store,
// backup-cli init per node, every db_write hook through the real plugin
// binary over pipes as lightningd sends them (and the same hooks to a
// plugin that stores nothing: the floor), a compaction per step per node,
// backup-cli gc, and a restore of every node checked table by table against
// lightningd's database. It prints a table, or with --json the same as JSON.
//
//	go run ./cmd/backup-bench                      # 3 nodes x 40 MB x 12 steps
//	go run ./cmd/backup-bench --nodes 2 --size 2MB --steps 2 --json
//	go run ./cmd/backup-bench --encrypt            # and again on an encrypted store
//	go run ./cmd/backup-bench year --nodes 100 --days 365   # gc/verify at a year of history
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
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == rssWrapArg {
		os.Exit(rssWrap(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "backup-bench: %v\n", err)
		os.Exit(1)
	}
}

// run runs the benchmark as the command line asks, writing the results to
// stdout and usage, errors and progress to stderr: main passes the
// process's, a test its own buffers (no global to swap).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "year":
			return runYear(ctx, args[1:], stdout, stderr)
		case "fleet":
			return runFleet(ctx, args[1:], stdout, stderr)
		case "restore-floor":
			return runRestoreFloor(ctx, args[1:], stdout, stderr)
		}
	}
	c, f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.tableFrom != "" {
		return printSaved(stdout, f.tableFrom)
	}
	memCheck, err := c.checkFlags(f)
	if err != nil {
		return err
	}
	workDir, cleanup, err := makeWorkDir(f.workDir, f.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	if err := c.prepare(ctx, workDir, f.verbose, stderr); err != nil {
		return err
	}
	res, err := c.runAll(ctx, f.noSmall, memCheck)
	if err != nil {
		return err
	}
	if f.encrypt {
		if res.Encrypted, err = c.runEncrypted(ctx); err != nil {
			return err
		}
		res.evaluateEncrypted()
	}
	return emit(stdout, f.asJSON, res, res.print)
}

// emit writes a command's results: indented JSON, or the table print makes.
func emit(stdout io.Writer, asJSON bool, v any, print func(io.Writer)) error {
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	print(stdout)
	return nil
}

// flags are the command line's values that shape the invocation rather
// than a pipeline run (those go to config).
type flags struct {
	size, memSize, workDir, tableFrom string
	asJSON, keep, verbose, noSmall    bool
	// encrypt runs the pipeline a second time on an encrypted store.
	encrypt bool
}

// parseFlags reads the command line into a run's config and the
// invocation's flags; usage and flag errors go to stderr.
func parseFlags(args []string, stderr io.Writer) (*config, *flags, error) {
	fs := flag.NewFlagSet("backup-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c, f := &config{}, &flags{}
	fs.IntVar(&c.Nodes, "nodes", 3, "nodes sharing the store")
	fs.StringVar(&f.size, "size", "40MB", "database size of each node (MB = 2^20 bytes; KB, GB or plain bytes also)")
	fs.IntVar(&c.Steps, "steps", 12, "evolution steps, each followed by a compaction of every node")
	fs.Uint64Var(&c.Seed, "seed", 1, "workload seed (node i uses seed+i-1)")
	fs.Float64Var(&c.Update, "update", 0.01, "fraction of each table's rows updated per step")
	fs.Float64Var(&c.Delete, "delete", 0.002, "fraction of each table's rows deleted per step")
	fs.Float64Var(&c.Insert, "insert", 0.01, "rows inserted per step, as a fraction of all rows")
	fs.IntVar(&c.HookStatements, "hook-statements", 3, "statements per step hook before the data_version bump (lightningd averages 2.3)")
	fs.BoolVar(&c.Hot, "hot", true, "concentrate updates and deletes on the newest 5% of rows")
	fs.IntVar(&c.VacuumStep, "vacuum-step", 0, "make this step a VACUUM-like rebuild of every bulk table (0: none)")
	fs.DurationVar(&c.GCAge, "gc-age", 48*time.Hour, "date packs and indexes back this much before gc, so that gc (grace 24h) may repack them; 0: gc sees them as new")
	fs.StringVar(&c.storeDir, "store-dir", "", "store directory (default: in the work directory)")
	fs.StringVar(&f.workDir, "work-dir", "", "work directory (default: a new temporary directory)")
	fs.BoolVar(&f.keep, "keep", false, "keep the work directory")
	fs.StringVar(&c.plugin, "plugin", "", "backup-plugin binary (default: next to this binary, else built with go build)")
	fs.StringVar(&c.cli, "cli", "", "backup-cli binary (default: next to this binary, else built with go build)")
	fs.StringVar(&c.noop, "noop", "", "no-op plugin binary (default: next to this binary, else built with go build)")
	fs.BoolVar(&f.noSmall, "no-small", false, "skip the second run (same nodes, another database size) that checks the CLI's memory against the database size")
	fs.StringVar(&f.memSize, "memory-check-size", "", "database size of the second run (default: 4x --size; at most 3 steps)")
	fs.BoolVar(&f.encrypt, "encrypt", false, "run the pipeline again on a store created encrypted (init --encrypt with a passphrase file) and report both")
	fs.BoolVar(&c.restoreFloor, "restore-floor", true, "measure each restore's floor (copy the restored file, fsync, integrity_check) right after it")
	fs.BoolVar(&f.asJSON, "json", false, "print the results as JSON")
	fs.BoolVar(&f.verbose, "v", false, "log progress to stderr")
	fs.StringVar(&f.tableFrom, "table-from", "", "print the table of a run saved with --json (FILE) and exit")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	return c, f, nil
}

// printSaved prints the table of a run saved with --json, so that a table
// can be made again without running the benchmark.
func printSaved(stdout io.Writer, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var res result
	if err := json.Unmarshal(data, &res); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	res.print(stdout)
	return nil
}

// checkFlags sets the database size and rejects sizes, counts and steps the
// pipeline cannot run, before any work starts; it returns the memory-check
// run's database size.
func (c *config) checkFlags(f *flags) (memCheck int64, err error) {
	if c.Size, err = parseSize(f.size); err != nil {
		return 0, err
	}
	if c.Nodes < 1 || c.Steps < 1 || c.Size < 64<<10 {
		return 0, errors.New("need at least 1 node, 1 step and 64 KB")
	}
	memCheck = c.Size * 4
	if f.memSize != "" {
		if memCheck, err = parseSize(f.memSize); err != nil {
			return 0, err
		}
	}
	if !f.noSmall && (memCheck < 64<<10 || memCheck == c.Size) {
		return 0, fmt.Errorf("--memory-check-size %s: want at least 64 KB and not --size", mb(memCheck))
	}
	if c.VacuumStep > c.Steps {
		return 0, fmt.Errorf("--vacuum-step %d is after the last step %d", c.VacuumStep, c.Steps)
	}
	return memCheck, nil
}

// makeWorkDir creates the work directory (a new temporary one when dir is
// ""); cleanup removes a temporary one unless keep, and never a directory
// the user named.
func makeWorkDir(dir string, keep bool) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, os.MkdirAll(dir, 0o700)
	}
	dir, err := os.MkdirTemp("", "backup-bench-")
	if err != nil || keep {
		return dir, func() {}, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}

// prepare sets what every pipeline run needs beyond the flags: the work
// directory, the progress log, the binaries it runs and this binary for
// rssWrap.
func (c *config) prepare(ctx context.Context, workDir string, verbose bool, stderr io.Writer) error {
	c.work = workDir
	c.logf = func(string, ...any) {}
	if verbose {
		c.logf = func(f string, a ...any) { fmt.Fprintf(stderr, "backup-bench: "+f+"\n", a...) }
	}
	if err := c.findBinaries(ctx); err != nil {
		return err
	}
	var err error
	if c.self, err = os.Executable(); err != nil {
		return err
	}
	// The last step's compaction is backup-cli's (offline), so that its
	// memory is measured too.
	c.cliCompactLast = true
	return nil
}

// runAll runs the pipeline, then (unless noSmall) the memory-check run at
// memCheck bytes, and adds what only the whole invocation knows: its
// duration, the RSS floor, the machine and the targets.
func (c *config) runAll(ctx context.Context, noSmall bool, memCheck int64) (*result, error) {
	start := time.Now()
	res, err := c.run(ctx)
	if err != nil {
		return nil, err
	}
	if !noSmall {
		if res.Small, err = c.runMemoryCheck(ctx, memCheck); err != nil {
			return nil, err
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if floor, err := c.runCLIFloor(ctx); err == nil {
		res.CLI.RSSFloor = floor
	}
	res.Machine = describeMachine(c.storeDir)
	res.evaluate()
	return res, nil
}

// runMemoryCheck runs the same nodes and workload at another size (4x by
// default), with at most 3 steps to keep the run short: the CLI's memory
// compared at two database sizes.
func (c *config) runMemoryCheck(ctx context.Context, size int64) (*result, error) {
	sc := *c
	sc.Size, sc.noNoop = size, true
	if sc.Steps > 3 {
		sc.Steps = 3
	}
	if sc.VacuumStep > sc.Steps {
		sc.VacuumStep = 0
	}
	sc.work, sc.storeDir = filepath.Join(c.work, "small"), ""
	c.logf("second run at %s for the CLI's memory", mb(sc.Size))
	res, err := sc.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("second run at %s: %w", mb(sc.Size), err)
	}
	return res, nil
}

// runEncrypted runs the same nodes and workload on a store created
// encrypted (init --encrypt --passphrase-file; the plugins open it with the
// key files init writes), without the no-op floor and the memory-check run:
// the figures set against the plain run's.
func (c *config) runEncrypted(ctx context.Context) (*result, error) {
	ec := *c
	ec.Encrypted, ec.noNoop = true, true
	ec.work = filepath.Join(c.work, "encrypted")
	if c.storeDir != "" && c.storeDir != filepath.Join(c.work, "store") {
		ec.storeDir = c.storeDir + "-encrypted"
	} else {
		ec.storeDir = ""
	}
	if err := os.MkdirAll(ec.work, 0o700); err != nil {
		return nil, err
	}
	ec.passFile = filepath.Join(ec.work, "passphrase")
	if err := os.WriteFile(ec.passFile, []byte("backup-bench passphrase\n"), 0o600); err != nil {
		return nil, err
	}
	c.logf("the same run on an encrypted store")
	start := time.Now()
	res, err := ec.run(ctx)
	if err != nil {
		return nil, fmt.Errorf("encrypted run: %w", err)
	}
	res.Seconds = time.Since(start).Seconds()
	res.Machine = describeMachine(ec.storeDir)
	return res, nil
}

// parseSize reads 40MB, 512KB, 1GB (powers of 1024) or bytes.
func parseSize(s string) (int64, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, x := range []struct {
		suffix string
		m      int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(u, x.suffix) {
			u, mult = strings.TrimSpace(strings.TrimSuffix(u, x.suffix)), x.m
			break
		}
	}
	f, err := strconv.ParseFloat(u, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("size %q: want e.g. 40MB", s)
	}
	return int64(f * float64(mult)), nil
}

// findBinaries picks the plugin, CLI and no-op plugin: the flags, else
// binaries next to this one (make build puts them in bin/), else go build
// of this module into the work directory (go run, go test).
func (c *config) findBinaries(ctx context.Context) error {
	want := []struct {
		path *string
		name string
		pkg  string
	}{
		{&c.plugin, "backup-plugin", "./cmd/backup-plugin"},
		{&c.cli, "backup-cli", "./cmd/backup-cli"},
		{&c.noop, "noop-plugin", "./plugin/lightningdtest/noop"},
	}
	exe, _ := os.Executable()
	var build []string
	for _, w := range want {
		if *w.path != "" {
			continue
		}
		if exe != "" && !strings.Contains(exe, "go-build") {
			if p := filepath.Join(filepath.Dir(exe), w.name); isExecutable(p) {
				*w.path = p
				continue
			}
		}
		build = append(build, w.pkg)
	}
	if len(build) == 0 {
		return nil
	}
	root, err := moduleRoot()
	if err != nil {
		return fmt.Errorf("%v: give the binaries with --plugin, --cli and --noop", err)
	}
	bin := filepath.Join(c.work, "bin")
	for _, w := range want {
		if *w.path != "" {
			continue
		}
		out := filepath.Join(bin, w.name)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, w.pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", w.pkg, err, b)
		}
		*w.path = out
	}
	return nil
}

// moduleRoot finds the directory of this module's go.mod from the working
// directory up.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Path}}").Output()
	if err != nil {
		return "", fmt.Errorf("not inside the module (go list -m: %v)", err)
	}
	dir, path, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if path != "github.com/clnbackup/backup" {
		return "", fmt.Errorf("not inside the module github.com/clnbackup/backup (in %s)", path)
	}
	return dir, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// describeMachine names the CPU, kernel and the disk under dir (a guess
// from /sys: rotational or not, virtual or not).
func describeMachine(dir string) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.Disk = "unknown"
	var st syscall.Stat_t
	if syscall.Stat(dir, &st) == nil {
		major, minor := (st.Dev>>8)&0xfff, (st.Dev&0xff)|((st.Dev>>12)&0xfff00)
		link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", major, minor))
		if err == nil {
			name := filepath.Base(link)
			rot, _ := os.ReadFile(fmt.Sprintf("/sys/block/%s/queue/rotational", name))
			kind := "SSD"
			if strings.TrimSpace(string(rot)) == "1" {
				kind = "rotational flag set"
			}
			if strings.HasPrefix(name, "vd") || strings.HasPrefix(name, "xvd") {
				kind = "virtio disk (" + kind + "; the host's medium is unknown)"
			}
			m.Disk = name + ": " + kind
		}
	}
	return m
}
