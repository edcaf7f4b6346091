package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/packs"
	"github.com/spf13/cobra"
)

type gcResult struct {
	Store string `json:"store"`
	packs.GCReport
	DurationSeconds float64 `json:"duration_seconds"`
}

// gcRefusal is what gc --exclusive --json prints when live writers hold
// leases, so that a script can name them.
type gcRefusal struct {
	Store   string        `json:"store"`
	Refused bool          `json:"refused"`
	Reason  string        `json:"reason"`
	Held    []store.Lease `json:"held"`
}

func newGCCmd(g *globals) *cobra.Command {
	o := &gcOpts{grace: 24 * time.Hour}
	cmd := &cobra.Command{
		Use:   "gc [--exclusive] [--dry-run] [--grace DURATION] [--repack-below FRACTION] URL",
		Short: "Reclaim the chunks and packs no restore point of any node uses",
		Long: `gc deletes the chunks, list chunks and packs that no manifest of any node
names, while the backup plugins keep writing: nothing has to be stopped.

It works in two phases. A run marks everything the manifests of every node
name, then condemns the unreferenced chunks in packs older than the grace
period; a later run, at least a grace period afterwards, deletes what is still
unreferenced (a writer that meanwhile reused a condemned chunk rescues it). So
space comes back after the second run. A pack whose chunks are all dead is
deleted; a pack whose live share fell below --repack-below is rewritten (its
live chunks go to a new pack, durably, before the old one is deleted); dead
chunks in packs that are mostly live wait.

The grace period must be longer than any writer runs between looking chunks
up and committing its manifest (at least twice that limit, one hour by
default). gc reports what it deleted and what it kept and why. Drop restore
points first with backup-cli forget; without it, gc only reclaims what crashed
writers and repacks left behind.

With --exclusive, gc does it all in one run when no node is being written
(lightningd stopped, or before a migration): it takes every node's lease, so
no writer can commit a restore point meanwhile, deletes every unreferenced
chunk and repacks at once, with no grace period, and gives the leases back
at the end (on failure and on Ctrl-C too). It refuses, naming each node,
its holder and when its lease was last refreshed, if any node's writer is
live; it never breaks a lease (backup-cli unlock is for dead writers). A
plugin that starts meanwhile is refused its lease and does not start (start
lightningd after gc); a node created meanwhile stops the run before anything
is deleted. Packs without
an index (a crashed writer's) still wait a grace period.`,
		Example: `  backup-cli gc file:///mnt/backup/store
  backup-cli gc --dry-run --json file:///mnt/backup/store
  backup-cli gc --grace 3d --repack-below 0.3 file:///mnt/backup/store
  backup-cli gc --exclusive file:///mnt/backup/store
  backup-cli gc --exclusive --dry-run --json socket:backup.example:9737`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGC(cmd, g, o, args[0])
		},
	}
	cmd.Flags().BoolVar(&o.exclusive, "exclusive", false, "take every node's lease (refused if a writer is live) and reclaim everything in one run, with no grace period")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "report what would be condemned, deleted and repacked; change nothing")
	cmd.Flags().Var(durationFlag{&o.grace}, "grace", "how long an unreferenced chunk stays condemned before deletion, and how old a pack must be before gc touches it (e.g. 24h, 3d, 1w)")
	cmd.Flags().Float64Var(&o.repackBelow, "repack-below", 0.5, "rewrite a pack whose live share of bytes fell below this fraction")
	return cmd
}

// gcOpts are gc's flags.
type gcOpts struct {
	dryRun, exclusive bool
	grace             time.Duration
	repackBelow       float64
}

// runGC runs gc (or gc --exclusive) on the store at url and reports it.
func runGC(cmd *cobra.Command, g *globals, o *gcOpts, url string) error {
	if o.repackBelow < 0 || o.repackBelow > 1 {
		return fmt.Errorf("--repack-below %v: give a fraction between 0 and 1 (e.g. 0.5)", o.repackBelow)
	}
	ctx := cmd.Context()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	st, err := store.Open(ctx, url, g.storeOptions())
	if err != nil {
		return err
	}
	defer st.Close()
	bar := newProgress(stderr, "gc")
	start := time.Now()
	opts := packs.GCOptions{Grace: o.grace, RepackBelow: o.repackBelow, DryRun: o.dryRun, Progress: bar.stage("packs", false)}
	run := history.GC
	if o.exclusive {
		run = history.GCExclusive
	}
	rep, err := run(ctx, st, opts)
	bar.done()
	var held *history.LeasesHeldError
	if g.json && errors.As(err, &held) {
		// Scripts learn who holds what; the exit status is still 1.
		printJSON(stdout, gcRefusal{Store: st.Location(), Refused: true, Reason: "nodes are being written", Held: held.Held})
	}
	if err != nil {
		return err
	}
	out := gcResult{Store: st.Location(), GCReport: rep, DurationSeconds: time.Since(start).Seconds()}
	if g.json {
		return printJSON(stdout, out)
	}
	kind := "gc"
	if o.exclusive {
		kind = "gc --exclusive (every node's lease held, no grace period)"
	}
	if o.dryRun {
		fmt.Fprintf(stdout, "Dry run of %s on store %s (nothing was changed):\n", kind, out.Store)
	} else {
		fmt.Fprintf(stdout, "%s of store %s (%.1fs):\n", kind, out.Store, out.DurationSeconds)
	}
	for _, l := range rep.Lines() {
		fmt.Fprintln(stdout, "  "+l)
	}
	return nil
}

// durationFlag is a flag value that takes Go durations plus days and weeks
// (history.ParseDuration).
type durationFlag struct{ d *time.Duration }

func (f durationFlag) String() string {
	if f.d == nil {
		return ""
	}
	return history.FormatDuration(*f.d)
}

func (f durationFlag) Set(s string) error {
	d, err := history.ParseDuration(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

func (f durationFlag) Type() string { return "duration" }
