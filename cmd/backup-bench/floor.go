package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	ld "github.com/clnbackup/backup/plugin/lightningdtest"
	"github.com/clnbackup/backup/replay"
)

// restoreFloor measures the floor of a restore of the database at path (a
// restored file, so its pages are in the page cache as the restore's packs
// were): copying it to a new file beside it, fsyncing the copy and running
// PRAGMA integrity_check on it (mapped, as the restore's is), the work any
// restore must at least do. It
// runs in the same run as the restore it is compared with, because the
// machine's load changes both (issue 16). The copy is removed.
func restoreFloor(path string) (seconds, cpu float64, err error) {
	start, cpu0 := time.Now(), cpuTime()
	copyPath := path + ".floor"
	defer os.Remove(copyPath)
	if err := copySynced(path, copyPath); err != nil {
		return 0, 0, fmt.Errorf("restore floor: %w", err)
	}
	if err := replay.IntegrityCheckMapped(copyPath); err != nil {
		return 0, 0, fmt.Errorf("restore floor: %w", err)
	}
	return time.Since(start).Seconds(), cpuTime() - cpu0, nil
}

// cpuTime is this process's user and system time in seconds.
func cpuTime() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// copySynced copies src to a new file dst and fsyncs it.
func copySynced(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(out, in, make([]byte, 1<<20)); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("fsync %s: %w", dst, err)
	}
	return out.Close()
}

// floorRun is one restore by one backup-cli binary beside its floor.
type floorRun struct {
	CLI          string  `json:"cli"`
	Run          int     `json:"run"`
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	MBps         float64 `json:"mb_per_s"`
	FloorSeconds float64 `json:"floor_seconds"`
	FloorMBps    float64 `json:"floor_mb_per_s"`
	// Ratio is the restore's time over its floor's.
	Ratio float64 `json:"ratio"`
	// CPU and FloorCPU are the user and system seconds of each: stabler
	// than wall time on a loaded machine.
	CPU      float64 `json:"cpu_seconds"`
	FloorCPU float64 `json:"floor_cpu_seconds"`
	MaxRSS   int64   `json:"max_rss_bytes"`
	// PrivatePeak is the restore's peak private memory (rssWrap): its
	// RSS less the restored file's pages its integrity check maps.
	PrivatePeak int64 `json:"private_peak_bytes"`
	Matched     bool  `json:"matched"`
}

// runRestoreFloor is `backup-bench restore-floor`: it restores one node of
// an existing store with each backup-cli binary given (--cli, repeated:
// e.g. before and after a change), runs times over, alternating the
// binaries so that the machine's load falls on each alike, and measures
// the floor right after each restore. Every restored database is compared
// table by table with the first.
func runRestoreFloor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backup-bench restore-floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var clis multiFlag
	fs.Var(&clis, "cli", "backup-cli binary to restore with (repeat to compare binaries; default: next to this binary)")
	node := fs.String("node", "node1", "node to restore")
	runs := fs.Int("runs", 3, "restores per binary")
	workDir := fs.String("work-dir", "", "where the restored files go (default: a new temporary directory, removed)")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *runs < 1 {
		return errors.New("usage: backup-bench restore-floor [--cli BIN]... [--node NODE] [--runs N] STORE_URL")
	}
	work, cleanup, err := makeWorkDir(*workDir, false)
	if err != nil {
		return err
	}
	defer cleanup()
	c := &config{work: work}
	if c.self, err = os.Executable(); err != nil {
		return err
	}
	if len(clis) == 0 {
		if err := c.findBinaries(ctx); err != nil {
			return err
		}
		clis = multiFlag{c.cli}
	}
	out, err := c.floorRuns(ctx, clis, *node, fs.Arg(0), *runs)
	if err != nil {
		return err
	}
	return emit(stdout, *asJSON, out, func(w io.Writer) { printFloorRuns(w, clis, out) })
}

// floorRuns restores node from url runs times with each binary of clis.
func (c *config) floorRuns(ctx context.Context, clis []string, node, url string, runs int) ([]floorRun, error) {
	ref := filepath.Join(c.work, "reference.sqlite3")
	defer os.Remove(ref)
	var out []floorRun
	for run := 1; run <= runs; run++ {
		for _, cli := range clis {
			dest := filepath.Join(c.work, "restored.sqlite3")
			c.cli = cli
			r, err := c.runCLI(ctx, nil, "restore", "--node", node, url, dest)
			if err != nil {
				return nil, err
			}
			fr := floorRun{CLI: cli, Run: run, Bytes: fileSize(dest), Seconds: r.Seconds, MaxRSS: r.MaxRSS, PrivatePeak: r.PrivatePeak, CPU: r.CPUSeconds}
			if fr.FloorSeconds, fr.FloorCPU, err = restoreFloor(dest); err != nil {
				return nil, err
			}
			fr.MBps, fr.FloorMBps = float64(fr.Bytes)/1e6/fr.Seconds, float64(fr.Bytes)/1e6/fr.FloorSeconds
			fr.Ratio = fr.Seconds / fr.FloorSeconds
			if _, err := os.Stat(ref); err != nil {
				err = os.Rename(dest, ref)
				fr.Matched = err == nil
			} else {
				fr.Matched = ld.SameDB(dest, ref) == nil
			}
			os.Remove(dest)
			out = append(out, fr)
		}
	}
	return out, nil
}

// printFloorRuns prints every run, then each binary's median.
func printFloorRuns(w io.Writer, clis []string, runs []floorRun) {
	fmt.Fprintf(w, "%-32s %3s %8s %7s %6s %7s %6s %7s %7s %9s %9s %s\n", "cli", "run", "MB", "s", "MB/s", "floor", "ratio", "CPU s", "flr CPU", "peak RSS", "private", "matches")
	for _, r := range runs {
		fmt.Fprintf(w, "%-32s %3d %8.1f %7.2f %6.0f %7.0f %6.2f %7.2f %7.2f %9s %9s %v\n", r.CLI, r.Run, float64(r.Bytes)/1e6, r.Seconds, r.MBps, r.FloorMBps, r.Ratio, r.CPU, r.FloorCPU, mb(r.MaxRSS), mb(r.PrivatePeak), r.Matched)
	}
	for _, cli := range clis {
		var rate, floor, ratio, cpu []float64
		for _, r := range runs {
			if r.CLI == cli {
				rate, floor, ratio, cpu = append(rate, r.MBps), append(floor, r.FloorMBps), append(ratio, r.Ratio), append(cpu, r.CPU)
			}
		}
		fmt.Fprintf(w, "median %s: restore %.0f MB/s, floor %.0f MB/s, ratio %.2f, CPU %.2f s\n", cli, median(rate), median(floor), median(ratio), median(cpu))
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// multiFlag is a flag that may be repeated.
type multiFlag []string

func (m *multiFlag) String() string     { return fmt.Sprint([]string(*m)) }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// worstFloorRatio is the largest restore time over floor time of rs (0:
// no floor measured).
func worstFloorRatio(rs []restoreStat) float64 {
	worst := 0.0
	for _, x := range rs {
		if x.FloorSeconds > 0 {
			worst = max(worst, x.Seconds/x.FloorSeconds)
		}
	}
	return worst
}
