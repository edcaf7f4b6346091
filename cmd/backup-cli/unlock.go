package main

import (
	"errors"
	"fmt"

	"github.com/clnbackup/backup/store"
	"github.com/spf13/cobra"
)

type unlockResult struct {
	Node string `json:"node"`
	// Cleared is the lease removed (nil when the node had none).
	Cleared *store.Lease `json:"cleared"`
	// Forced is set when the lease was live and --force removed it.
	Forced bool `json:"forced"`
}

func newUnlockCmd(g *globals) *cobra.Command {
	var (
		node  string
		force bool
	)
	cmd := &cobra.Command{
		Use:   "unlock --node NAME [--force] URL",
		Short: "Clear a dead writer's lease on a node",
		Long: `unlock removes the lease that lets one writer (the backup plugin, or
backup-cli compact) write a node's history.

A lease normally needs no manual step: it expires when its owner stops
refreshing it, and a lease whose owner process is gone on the same host is
taken over at once. unlock is for a dead owner on another host, before its
lease expires. It refuses a live lease (not expired, or held by a running
process on this host) and says who holds it until when; --force removes it
anyway. Only force a lease when you are certain its owner has stopped: two
writers for one node corrupt its history.`,
		Example: `  backup-cli unlock --node alice file:///mnt/backup/store
  backup-cli unlock --node alice --force file:///mnt/backup/store`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if node == "" {
				return errors.New("--node is required: name the node whose lease to clear")
			}
			ctx := cmd.Context()
			stdout := cmd.OutOrStdout()
			st, err := store.Open(ctx, args[0], g.storeOptions())
			if err != nil {
				return err
			}
			defer st.Close()
			if _, err := st.Node(ctx, node); err != nil {
				return err
			}
			out := unlockResult{Node: node}
			out.Cleared, err = st.BreakLease(ctx, node, false)
			if errors.Is(err, store.ErrLeaseHeld) && force {
				out.Forced = true
				out.Cleared, err = st.BreakLease(ctx, node, true)
			}
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(stdout, out)
			}
			switch {
			case out.Cleared == nil:
				fmt.Fprintf(stdout, "Node %q holds no lease: nothing to clear\n", node)
			case out.Forced:
				fmt.Fprintf(stdout, "Forced: cleared the live lease of node %q held by %s\n", node, out.Cleared)
			default:
				fmt.Fprintf(stdout, "Cleared the lease of node %q held by %s (not live: expired, or its process is gone)\n", node, out.Cleared)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node whose lease to clear (required)")
	cmd.Flags().BoolVar(&force, "force", false, "clear the lease even if its owner looks alive")
	return cmd
}
