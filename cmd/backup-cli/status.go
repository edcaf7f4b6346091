package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clnbackup/backup/internal/units"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/spf13/cobra"
)

// statusOutput is status's --json: history.StoreStatus with each node's
// ages in seconds beside its times, and what --max-stale found.
type statusOutput struct {
	history.StoreStatus
	Nodes []statusNode `json:"nodes"`
	// MaxStaleSeconds is --max-stale (absent without it), StaleNodes the
	// nodes it found (the command then exits non-zero).
	MaxStaleSeconds *float64 `json:"max_stale_seconds,omitempty"`
	StaleNodes      []string `json:"stale_nodes,omitempty"`
}

// statusNode is one node's status with its ages relative to the status's
// time, for scripts that alert on them without parsing times.
type statusNode struct {
	history.NodeStatus
	LastRefreshAgeSeconds *int64 `json:"last_refresh_age_seconds,omitempty"`
	StaleSeconds          *int64 `json:"stale_seconds,omitempty"`
	LastChangeAgeSeconds  *int64 `json:"last_change_age_seconds,omitempty"`
	SnapshotAgeSeconds    *int64 `json:"snapshot_age_seconds,omitempty"`
}

// newStatusCmd declares status's flags and help: the command an operator
// of many nodes runs from cron to learn which nodes stopped backing up.
func newStatusCmd(g *globals) *cobra.Command {
	var (
		node     string
		maxStale time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [--node NAME] [--json] [--max-stale DURATION] URL",
		Short: "Show whether each node of a store is being backed up",
		Long: `status shows every node of the store (or one, with --node): the state of
its writer (the backup plugin's lease: live and when last refreshed, expired
since when, its process gone, or none), when its data last changed (newest
journal change, else newest sealed change, else the newest snapshot), the age
of its newest snapshot, the journal backlog not sealed into a restore point
yet, and the bytes list reports; then the store's size and the free space of
its file system (file:// stores; unknown through a store server).

With --max-stale D it exits non-zero, naming them, when nodes have had no live
writer for longer than D (lease expired, or its process on this host gone):
their lightningd or backup plugin stopped, or cannot reach the store. A node
with no lease at all counts as stale too: it never had a writer, or its
writer stopped cleanly. Run it from cron to be told.`,
		Example: `  backup-cli status file:///mnt/backup/store
  backup-cli status --max-stale 10m --token-file admin.token socket:backup.example:9735
  backup-cli status --json file:///mnt/backup/store`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			check := cmd.Flags().Changed("max-stale")
			return runStatus(cmd, g, node, args[0], check, maxStale)
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "show only this node")
	cmd.Flags().Var(durationFlag{&maxStale}, "max-stale", "exit non-zero naming the nodes with no live writer for longer than `DURATION` (e.g. 10m, 2h, 1d)")
	return cmd
}

// runStatus takes the status (history.Status), prints it as a table or as
// JSON, and then fails if --max-stale found stale or unreadable nodes.
func runStatus(cmd *cobra.Command, g *globals, node, url string, check bool, maxStale time.Duration) error {
	ctx := cmd.Context()
	st, err := store.Open(ctx, url, g.storeOptions())
	if err != nil {
		return err
	}
	defer st.Close()
	s, err := history.Status(ctx, st, node)
	if err != nil {
		return fmt.Errorf("status of store %s: %w", st.Location(), err)
	}
	var stale []history.NodeStatus
	out := statusOutput{StoreStatus: s, Nodes: make([]statusNode, 0, len(s.Nodes))}
	if check {
		stale = s.Stale(maxStale)
		secs := maxStale.Seconds()
		out.MaxStaleSeconds = &secs
		for _, n := range stale {
			out.StaleNodes = append(out.StaleNodes, n.Name)
		}
	}
	for _, n := range s.Nodes {
		out.Nodes = append(out.Nodes, statusNode{NodeStatus: n, LastRefreshAgeSeconds: ageSeconds(s.At, n.Writer.LastRefresh),
			StaleSeconds: ageSeconds(s.At, n.Writer.StaleSince), LastChangeAgeSeconds: ageSeconds(s.At, n.LastChange),
			SnapshotAgeSeconds: ageSeconds(s.At, n.Snapshot)})
	}
	if g.json {
		if err := printJSON(cmd.OutOrStdout(), out); err != nil {
			return err
		}
	} else {
		printStatus(cmd.OutOrStdout(), s)
	}
	var problems []string
	if len(stale) > 0 {
		var names []string
		for _, n := range stale {
			names = append(names, fmt.Sprintf("%s (%s)", n.Name, staleReason(s.At, n)))
		}
		problems = append(problems, fmt.Sprintf("%d node(s) not backed up (no live writer for more than --max-stale %s, or no writer at all): %s; check that their lightningd and backup plugin run and reach the store",
			len(stale), maxStale, strings.Join(names, ", ")))
	}
	if len(s.Unreadable) > 0 {
		problems = append(problems, fmt.Sprintf("node(s) %s have objects that cannot be read (shown above; the other nodes are complete): run backup-cli verify", strings.Join(s.Unreadable, ", ")))
	}
	if len(problems) > 0 {
		return fmt.Errorf("status of store %s: %s", s.Store, strings.Join(problems, "; "))
	}
	return nil
}

// staleReason says why a node counts as stale, for the error message.
func staleReason(at time.Time, n history.NodeStatus) string {
	switch n.Writer.State {
	case history.WriterNone:
		return "no writer lease: it never had a writer, or its writer stopped cleanly"
	case history.WriterDead:
		return fmt.Sprintf("its writer's process on this host is gone, last refresh %s ago", formatAge(at.Sub(n.Writer.StaleSince)))
	}
	return fmt.Sprintf("writer lease expired %s ago", formatAge(at.Sub(n.Writer.StaleSince)))
}

// ageSeconds is at-t in whole seconds, nil for a zero t (unknown).
func ageSeconds(at, t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	s := int64(at.Sub(t).Seconds())
	return &s
}

// printStatus writes one aligned row per node, then the store's size and
// free space.
func printStatus(w io.Writer, s history.StoreStatus) {
	fmt.Fprintf(w, "Store %s at %s\n\n", s.Store, s.At.Format("2006-01-02 15:04:05 UTC"))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tWRITER\tLAST CHANGE\tDATA_VERSION\tSNAPSHOT\tBACKLOG\tLOGICAL\tADDED\t")
	for _, n := range s.Nodes {
		lastChange := "never"
		if !n.LastChange.IsZero() {
			lastChange = fmt.Sprintf("%s ago (%s)", formatAge(s.At.Sub(n.LastChange)), n.LastChangeFrom)
		}
		snapshot := "none"
		if !n.Snapshot.IsZero() {
			snapshot = formatAge(s.At.Sub(n.Snapshot)) + " ago"
		}
		backlog := "0"
		if n.Backlog.Records > 0 {
			backlog = fmt.Sprintf("%d change%s, %s", n.Backlog.Records, plural(n.Backlog.Records), units.Bytes(n.Backlog.Bytes))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", n.Name, writerText(s.At, n.Writer), lastChange, n.NewestVersion,
			snapshot, backlog, units.Bytes(n.LogicalBytes), units.Bytes(n.AddedBytes))
	}
	tw.Flush()
	for _, n := range s.Nodes {
		for _, e := range n.Errors {
			fmt.Fprintf(w, "  %s UNREADABLE: %s\n", n.Name, e)
		}
	}
	size := "size known to the server and admin tokens"
	if s.SizeKnown {
		size = fmt.Sprintf("%s stored in %d objects, plus %s of journal files", units.Bytes(s.StoredBytes), s.Objects, units.Bytes(s.JournalFileBytes))
	}
	free := "free space unknown (a store server's disk, or a bucket)"
	if s.FreeKnown {
		free = fmt.Sprintf("%s free", units.Bytes(int64(s.FreeBytes)))
	}
	fmt.Fprintf(w, "\n%d nodes; %s; %s\n", len(s.Nodes), size, free)
}

// writerText is the WRITER column.
func writerText(at time.Time, w history.WriterStatus) string {
	switch w.State {
	case history.WriterLive:
		return fmt.Sprintf("live, refreshed %s ago (%s pid %d)", formatAge(at.Sub(w.LastRefresh)), w.Lease.Host, w.Lease.PID)
	case history.WriterExpired:
		return fmt.Sprintf("EXPIRED %s ago (%s pid %d)", formatAge(at.Sub(w.StaleSince)), w.Lease.Host, w.Lease.PID)
	case history.WriterDead:
		return fmt.Sprintf("DEAD: process gone, refreshed %s ago (%s pid %d)", formatAge(at.Sub(w.StaleSince)), w.Lease.Host, w.Lease.PID)
	}
	return "none"
}

// plural is "s" unless n is 1.
func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
