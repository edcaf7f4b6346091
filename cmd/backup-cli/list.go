package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/clnbackup/backup/internal/units"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/spf13/cobra"
)

// listResult is what list prints: history.StoreSummary, and for an
// encrypted store which nodes carry secrets (init --include-hsm-secret).
type listResult struct {
	history.StoreSummary
	Encrypted bool `json:"encrypted"`
	// NodeSecrets are the names of the secrets each node carries (nodes
	// without any are left out).
	NodeSecrets map[string][]string `json:"node_secrets,omitempty"`
}

// newListCmd declares list's flags and help; runList does the work.
func newListCmd(g *globals) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "list [--node NAME] [--json] URL",
		Short: "Show the nodes, restore points and journal of a store",
		Long: `list shows every node in the store (or one, with --node): its restore points
(manifest sequence, time, data_version, database size, bytes it added to the
store), the data_version range of the changes recorded since the newest one,
and the totals: the logical size of all restore points against the bytes the
store really uses. For an encrypted store it says which nodes carry secrets
(hsm_secret stored by init --include-hsm-secret).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runList(cmd, g, node, args[0])
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "show only this node")
	return cmd
}

// runList gathers the summary of every node asked for (node "": all) and
// prints it as a table or as JSON.
func runList(cmd *cobra.Command, g *globals, node, url string) error {
	ctx := cmd.Context()
	stdout := cmd.OutOrStdout()
	st, err := store.Open(ctx, url, g.storeOptions())
	if err != nil {
		return err
	}
	defer st.Close()
	sum, err := history.SummarizeStore(ctx, st, node)
	if err != nil {
		return err
	}
	res := listResult{StoreSummary: sum, Encrypted: st.Keyring() != nil}
	if res.NodeSecrets, err = secretNames(ctx, st, sum.Nodes); err != nil {
		return err
	}
	if g.json {
		err = printJSON(stdout, res)
	} else {
		printList(stdout, res, st.FullAccess())
	}
	if err == nil && len(res.Unreadable) > 0 {
		err = fmt.Errorf("list of store %s: node(s) %s have objects that cannot be read (shown above; the other nodes are complete): run backup-cli verify", st.Location(), strings.Join(res.Unreadable, ", "))
	}
	return err
}

// printList writes the table of each node's restore points and journal,
// then the totals; fullAccess says whether the store's size is known to
// this client.
func printList(stdout io.Writer, res listResult, fullAccess bool) {
	if res.Encrypted {
		fmt.Fprintf(stdout, "Store %s (encrypted)\n", res.Store)
	} else {
		fmt.Fprintf(stdout, "Store %s\n", res.Store)
	}
	for _, n := range res.Nodes {
		fmt.Fprintf(stdout, "\nNode %s: newest data_version %d\n", n.Name, n.NewestVersion)
		if s := res.NodeSecrets[n.Name]; len(s) > 0 {
			fmt.Fprintf(stdout, "  carries secrets: %s (restore --with-secrets)\n", strings.Join(s, ", "))
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "MANIFEST\tCREATED (UTC)\tDATA_VERSION\tSNAPSHOT_AT\tCHANGES\tDB SIZE\tNEW TO STORE\t")
		for _, m := range n.Manifests {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%s\t%s\t\n", m.Seq, m.Created.UTC().Format("2006-01-02 15:04:05"),
				m.Version, m.SnapshotVersion, m.ChangeRecords, units.Bytes(m.DatabaseBytes), units.Bytes(m.AddedBytes))
		}
		tw.Flush()
		for _, e := range n.Errors {
			fmt.Fprintf(stdout, "  UNREADABLE: %s\n", e)
		}
		if n.Journal.Records > 0 {
			fmt.Fprintf(stdout, "  journal: %d changes, data_version %d..%d (%s of statements)\n", n.Journal.Records, n.Journal.FirstVersion, n.Journal.LastVersion, units.Bytes(n.Journal.Bytes))
		} else {
			fmt.Fprintf(stdout, "  journal: no changes after the newest manifest\n")
		}
	}
	if q := res.Quota; q != nil {
		counted := fmt.Sprintf("counted at %s", q.CountedAt.UTC().Format("2006-01-02 15:04:05"))
		if !q.Counted {
			counted = "the server is still counting what the nodes reference"
		}
		fmt.Fprintf(stdout, "\nQuota: %s of %s used (%.0f%%): %s referenced by this token's nodes, %s stored since (%s)\n",
			units.Bytes(q.Used), units.Bytes(q.Limit), 100*float64(q.Used)/float64(q.Limit), units.Bytes(q.Referenced), units.Bytes(q.Added), counted)
	}
	if !fullAccess {
		fmt.Fprintf(stdout, "\nTotal: %d restore points of %d nodes, %s logical (the store's size is known to the server and admin tokens)\n",
			countManifests(res.Nodes), len(res.Nodes), units.Bytes(res.LogicalBytes))
		return
	}
	ratio := 0.0
	if res.StoredBytes > 0 {
		ratio = float64(res.LogicalBytes) / float64(res.StoredBytes)
	}
	fmt.Fprintf(stdout, "\nTotal: %d restore points of %d nodes, %s logical; %s stored in %d objects (%.1fx smaller), plus %s of journal files\n",
		countManifests(res.Nodes), len(res.Nodes), units.Bytes(res.LogicalBytes), units.Bytes(res.StoredBytes), res.Objects, ratio, units.Bytes(res.JournalFileBytes))
	c := res.ObjectCounts
	fmt.Fprintf(stdout, "Objects: %d packs, %d index, %d manifests, %d journal, %d other\n", c.Packs, c.Index, c.Manifests, c.Journal, c.Other)
}

func countManifests(nodes []history.NodeSummary) int {
	n := 0
	for _, s := range nodes {
		n += len(s.Manifests)
	}
	return n
}

// secretNames are the names of the secrets each node carries, in an
// encrypted store (nil for a plain one).
func secretNames(ctx context.Context, st *store.Store, nodes []history.NodeSummary) (map[string][]string, error) {
	if !st.Config().Encrypted() {
		return nil, nil
	}
	out := map[string][]string{}
	for _, n := range nodes {
		names, err := store.SecretNames(ctx, st, n.Name)
		if err != nil {
			return nil, fmt.Errorf("list of store %s: the secrets of node %q: %w", st.Location(), n.Name, err)
		}
		if len(names) > 0 {
			out[n.Name] = names
		}
	}
	return out, nil
}
