package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/spf13/cobra"
)

func newForgetCmd(g *globals) *cobra.Command {
	var (
		node   string
		policy history.ForgetPolicy
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "forget [--node NAME] [--keep-last N] [--keep-hourly N] [--keep-daily N] [--keep-weekly N] [--keep-within DURATION] [--dry-run] URL",
		Short: "Drop restore points by a retention policy",
		Long: `forget deletes the manifests (restore points) that no keep rule keeps, for
every node of the store or only --node. The rules add up: a manifest is kept
when any rule keeps it.

  --keep-last N      the N newest manifests
  --keep-hourly N    the newest manifest of each of the last N hours that have one
  --keep-daily N     the same for days
  --keep-weekly N    the same for ISO weeks (hours, days and weeks are in UTC)
  --keep-within D    manifests created within D of the node's newest one
                     (D like 36h, 7d, 2w, 1w3d)

A node's newest manifest is never dropped: the changes recorded since (the
journal) build on it. With no --keep flag nothing is dropped. A manifest that
cannot be read is kept (run backup-cli verify).

forget only deletes manifest objects; run backup-cli gc afterwards to reclaim
the chunks that no remaining restore point names. It may run while the backup
plugins write. Use --dry-run first to see what it would drop and why.`,
		Example: `  backup-cli forget --dry-run --keep-last 10 --keep-daily 7 --keep-weekly 8 file:///mnt/backup/store
  backup-cli forget --node alice --keep-within 2w file:///mnt/backup/store`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			st, err := store.Open(ctx, args[0], g.storeOptions())
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.NeedFullAccess("forget"); err != nil {
				return err
			}
			bar := newProgress(stderr, "forget")
			rep, err := history.Forget(ctx, st, history.ForgetOptions{Node: node, Policy: policy, DryRun: dryRun, Progress: bar.stage("manifests", false)})
			bar.done()
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(stdout, rep)
			}
			printForget(stdout, st.Location(), rep)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "apply the policy to this node only (default: every node)")
	f.IntVar(&policy.Last, "keep-last", 0, "keep the `N` newest manifests")
	f.IntVar(&policy.Hourly, "keep-hourly", 0, "keep the newest manifest of each of the last `N` hours that have one")
	f.IntVar(&policy.Daily, "keep-daily", 0, "keep the newest manifest of each of the last `N` days that have one")
	f.IntVar(&policy.Weekly, "keep-weekly", 0, "keep the newest manifest of each of the last `N` weeks that have one")
	f.Var(durationFlag{&policy.Within}, "keep-within", "keep manifests created within `DURATION` of the node's newest one (e.g. 36h, 7d, 2w)")
	f.BoolVar(&dryRun, "dry-run", false, "show what would be kept and dropped; delete nothing")
	return cmd
}

// printForget writes forget's report for people: per node, every restore
// point with what happened to it and why, so that a policy can be checked
// with --dry-run before it deletes anything.
func printForget(stdout io.Writer, location string, r history.ForgetReport) {
	verb := "Dropped"
	if r.DryRun {
		verb = "Would drop"
		fmt.Fprintf(stdout, "Dry run of forget on store %s (nothing was deleted), policy: %s\n", location, r.Policy)
	} else {
		fmt.Fprintf(stdout, "forget on store %s, policy: %s\n", location, r.Policy)
	}
	if r.Policy.IsZero() {
		fmt.Fprintln(stdout, "No --keep rule given: every restore point is kept.")
	}
	for i := 0; i < len(r.Decisions); {
		node := r.Decisions[i].Node
		fmt.Fprintf(stdout, "\nNode %s:\n", node)
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  MANIFEST\tCREATED (UTC)\tAGE\tDATA_VERSION\tACTION\tWHY")
		for ; i < len(r.Decisions) && r.Decisions[i].Node == node; i++ {
			d := r.Decisions[i]
			action := "keep"
			if !d.Keep {
				action = "drop"
			}
			created, age := "?", "?"
			if !d.Created.IsZero() {
				created = d.Created.UTC().Format("2006-01-02 15:04:05")
				age = formatAge(r.Time.Sub(d.Created))
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%d\t%s\t%s\n", d.Manifest, created, age, d.Version, action, strings.Join(d.Reasons, ", "))
		}
		tw.Flush()
	}
	fmt.Fprintf(stdout, "\nKept %d restore points. %s %d.", r.Kept, verb, r.Dropped)
	if r.Dropped > 0 && !r.DryRun {
		fmt.Fprint(stdout, " Run backup-cli gc to reclaim the space they alone used.")
	}
	fmt.Fprintln(stdout)
}

// formatAge writes a duration for people: "45s", "3h12m", "4d2h".
func formatAge(d time.Duration) string {
	switch {
	case d < 0:
		return "future"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}
