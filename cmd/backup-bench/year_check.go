package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	ld "github.com/clnbackup/backup/plugin/lightningdtest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
)

// keptDays are the days of node i whose restore points the policy keeps,
// worked out from the days themselves (not by forget's code): the newest
// restore point of each of the last KeepDaily dates and of each of the
// last KeepWeekly ISO weeks, and the newest one.
func (y *yearConfig) keptDays(i, days int) map[int]bool {
	keep := map[int]bool{days - 1: true}
	for _, r := range []struct {
		n   int
		key func(time.Time) string
	}{
		{y.KeepDaily, func(t time.Time) string { return t.Format("2006-01-02") }},
		{y.KeepWeekly, func(t time.Time) string { yr, w := t.ISOWeek(); return fmt.Sprint(yr, w) }},
	} {
		seen := map[string]bool{}
		for d := days - 1; d >= 0 && len(seen) < r.n; d-- {
			if k := r.key(dayTime(i, d)); !seen[k] {
				seen[k] = true
				keep[d] = true
			}
		}
	}
	return keep
}

// countDays reads how many days each node of the generated store has
// (init, then a seal and a snapshot a day): all of them after a whole
// generation; after an interrupted one (--measure-only), each node's own.
func (y *yearConfig) countDays(ctx context.Context, dir string) error {
	st, err := store.Open(ctx, "file://"+dir, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	y.nodeDays = make([]int, y.Nodes)
	for i := range y.Nodes {
		seqs, err := st.ManifestSeqs(ctx, nodeName(i))
		if err != nil {
			return err
		}
		if len(seqs) == 0 || seqs[len(seqs)-1] != uint64(len(seqs)) || len(seqs)%2 == 0 {
			return fmt.Errorf("node %s of the generated store has manifests %v: not a day-by-day history", nodeName(i), seqs)
		}
		y.nodeDays[i] = (len(seqs) + 1) / 2
	}
	return nil
}

// daySeq is the manifest of day d's snapshot: init wrote 1, and each
// later day's compaction a seal and a snapshot.
func daySeq(d int) uint64 { return uint64(2*d + 1) }

// commands runs forget, gc and verify with backup-cli, measuring each (and
// the read-only ones with the baseline CLI too, when given).
func (y *yearConfig) commands(ctx context.Context, c *config, url string, res *yearResult) error {
	keepArgs := []string{"--keep-daily", strconv.Itoa(y.KeepDaily), "--keep-weekly", strconv.Itoa(y.KeepWeekly)}
	steps := []struct {
		name     string
		args     []string
		readOnly bool
		before   func() error
	}{
		{"verify (a year)", []string{"verify", url}, true, nil},
		{"forget --dry-run", append(append([]string{"forget", "--dry-run"}, keepArgs...), url), true, nil},
		{"forget", append(append([]string{"forget"}, keepArgs...), url), false, nil},
		// Packs dated back past gc's grace period, as a gc a few days
		// after the writes sees them.
		{"gc --dry-run", []string{"gc", "--dry-run", url}, true, func() error { return age(c.storeDir, 48*time.Hour) }},
		{"gc", []string{"gc", url}, false, nil},
		{"gc --exclusive", []string{"gc", "--exclusive", url}, false, nil},
		{"verify (after gc)", []string{"verify", url}, true, nil},
	}
	for _, s := range steps {
		if s.before != nil {
			if err := s.before(); err != nil {
				return err
			}
		}
		clis := []string{c.cli}
		if s.readOnly && y.Baseline != "" {
			clis = []string{y.Baseline, c.cli}
		}
		for _, cli := range clis {
			cc := *c
			cc.cli = cli
			var out map[string]any
			r, err := cc.runCLI(ctx, &out, s.args...)
			if err != nil {
				return err
			}
			cmd := yearCommand{Name: s.name, Baseline: cli != c.cli, Seconds: r.Seconds, MaxRSS: r.MaxRSS, Summary: summarize(out)}
			c.logf("%s%s: %.2fs, peak RSS %s; %s", cmd.Name, map[bool]string{true: " (baseline)"}[cmd.Baseline], cmd.Seconds, mb(cmd.MaxRSS), cmd.Summary)
			res.Commands = append(res.Commands, cmd)
		}
	}
	return nil
}

// summarize picks the counts of a verify, forget or gc JSON report.
func summarize(out map[string]any) string {
	n := func(k string) any {
		if v, ok := out[k].(float64); ok {
			return int64(v)
		}
		if v, ok := out[k].([]any); ok {
			return len(v)
		}
		return "?"
	}
	switch {
	case out["decisions"] != nil:
		return fmt.Sprintf("kept %v, dropped %v, deleted %v", n("kept"), n("dropped"), n("deleted"))
	case out["problems"] != nil:
		return fmt.Sprintf("%v manifests, %v packs, %v chunks, %v problems", n("manifests"), n("packs"), n("chunks"), n("problems"))
	case out["live_chunks"] != nil:
		return fmt.Sprintf("%v manifests, %v live chunks, %v packs; deleted %v packs and %v chunks, repacked %v, condemned %v, %v MB reclaimed",
			n("manifests"), n("live_chunks"), n("packs"), n("deleted_packs"), n("deleted_chunks"), n("repacked_packs"), n("newly_condemned_chunks"), mbOf(out["reclaimed_bytes"]))
	}
	return ""
}

func mbOf(v any) string {
	f, _ := v.(float64)
	return fmt.Sprintf("%.1f", f/(1<<20))
}

// check compares every node's remaining manifests with the policy's
// restore points, restores every node's newest state and every kept
// restore point of the checked nodes, and compares each, table by table,
// with the node's database at that point.
func (y *yearConfig) check(ctx context.Context, c *config, url string, res *yearResult) error {

	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	res.RetentionOK = true
	tmp := filepath.Join(c.work, "restored")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	compare := func(name string, seq uint64, want string) error {
		dest := filepath.Join(tmp, "db.sqlite3")
		os.Remove(dest)
		if _, err := history.Restore(ctx, st, history.RestoreOptions{Node: name, Manifest: seq, Dest: dest}); err != nil {
			return fmt.Errorf("restore node %s manifest %d: %w", name, seq, err)
		}
		res.Restores++
		if err := ld.SameDB(dest, want); err != nil {
			res.Mismatches = append(res.Mismatches, fmt.Sprintf("node %s manifest %d: %v", name, seq, err))
		}
		return nil
	}
	for i := range y.Nodes {
		name := nodeName(i)
		days := y.keptDays(i, y.nodeDays[i])
		var want []uint64
		for d := range days {
			want = append(want, daySeq(d))
		}
		slices.Sort(want)
		got, err := st.ManifestSeqs(ctx, name)
		if err != nil {
			return err
		}
		res.KeptManifests += len(got)
		if !slices.Equal(got, want) {
			res.RetentionOK = false
			res.Mismatches = append(res.Mismatches, fmt.Sprintf("node %s keeps manifests %v, the policy names %v", name, got, want))
		}
		dir := filepath.Join(c.work, "nodes", name)
		if err := compare(name, 0, filepath.Join(dir, "node.sqlite3")); err != nil {
			return err
		}
		if i >= y.CheckNodes {
			continue
		}
		for d := range days {
			want := filepath.Join(dir, fmt.Sprintf("day%03d.sqlite3", d))
			if _, err := os.Stat(want); err != nil && y.nodeDays[i] < y.Days {
				res.NotCompared++ // a partial history: that day was not foreseen as kept
				continue
			}
			if err := compare(name, daySeq(d), want); err != nil {
				return err
			}
		}
	}
	return nil
}

// print writes the result as a table.
func (r *yearResult) print(w io.Writer) {
	cf := r.Config
	fmt.Fprintf(w, "A year of history: %d nodes x %d days (%s databases at day 0), forget --keep-daily %d --keep-weekly %d\n",
		cf.Nodes, cf.Days, mb(cf.Size), cf.KeepDaily, cf.KeepWeekly)
	fmt.Fprintf(w, "machine: %d CPUs %s, %s, %s\n", r.Machine.CPUs, r.Machine.CPU, r.Machine.Disk, r.Machine.Go)
	g := r.Generate
	fmt.Fprintf(w, "generated: %d compactions, %d manifests in %.0fs; store %s in %d files\n", g.Compactions, g.Manifests, g.Seconds, mb(g.StoreBytes), g.StoreFiles)
	fmt.Fprintf(w, "\n%-20s %-9s %9s %12s  %s\n", "command", "cli", "seconds", "peak RSS", "result")
	for _, c := range r.Commands {
		who := "this"
		if c.Baseline {
			who = "baseline"
		}
		fmt.Fprintf(w, "%-20s %-9s %9.2f %12s  %s\n", c.Name, who, c.Seconds, mb(c.MaxRSS), c.Summary)
	}
	fmt.Fprintf(w, "\nafter gc: %d manifests, store %s in %d files; RSS floor %s\n", r.KeptManifests, mb(r.StoreBytes), r.StoreFiles, mb(r.RSSFloor))
	fmt.Fprintf(w, "retention as the policy says: %v; %d restores compared, %d mismatches", r.RetentionOK, r.Restores, len(r.Mismatches))
	if r.NotCompared > 0 {
		fmt.Fprintf(w, "; %d kept restore points of a partial history not compared (no copy of that day)", r.NotCompared)
	}
	fmt.Fprintln(w)
	for _, m := range r.Mismatches {
		fmt.Fprintf(w, "  MISMATCH %s\n", m)
	}
	fmt.Fprintf(w, "total %.0fs\n", r.Seconds)
}
