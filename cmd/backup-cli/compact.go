package main

import (
	"errors"
	"fmt"

	"github.com/clnbackup/backup/internal/units"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
	"github.com/spf13/cobra"
)

type compactResult struct {
	Node           string  `json:"node"`
	SealedChanges  int     `json:"sealed_changes"`
	SealManifest   uint64  `json:"seal_manifest,omitempty"`
	Manifest       uint64  `json:"manifest,omitempty"`
	DataVersion    uint32  `json:"data_version,omitempty"`
	DatabaseBytes  int64   `json:"database_bytes,omitempty"`
	AddedBytes     int64   `json:"added_bytes"`
	FetchedBytes   int64   `json:"fetched_bytes"`
	CacheUsed      bool    `json:"cache_used"`
	DurationSecond float64 `json:"duration_seconds"`
	Compacted      bool    `json:"compacted"`
	// Phases is where the time went.
	Phases []history.Phase `json:"phases,omitempty"`
}

func newCompactCmd(g *globals) *cobra.Command {
	var node string
	var tmpDir, cacheDir string
	cmd := &cobra.Command{
		Use:   "compact [--node NAME] URL",
		Short: "Write a new snapshot of a node from its previous one plus its changes",
		Long: `compact seals the node's recorded changes into the store and writes a new
snapshot at the newest sealed data_version. The database is rebuilt from the
store (previous snapshot plus changes), checked, and stored reusing every page
the store already has, so only changed pages are added. It is offline: while
the plugin runs, use "lightning-cli backup-compact" instead. The newest change
stays in the journal (lightningd may still re-send it after a crash).

With --cache-dir, the rebuilt database is kept there (DIR/NODE.snapshot) and
the next compaction with the same --cache-dir starts from it: each of its
pages is checked against the store's page ids, and only the pages it lacks or
holds wrong are read from the store.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			st, err := store.Open(ctx, args[0], g.storeOptions())
			if err != nil {
				return err
			}
			defer st.Close()
			if node, err = pickNode(ctx, st, node); err != nil {
				return err
			}
			n, err := history.OpenNode(ctx, st, node)
			if err != nil {
				if errors.Is(err, journal.ErrLocked) {
					return fmt.Errorf("%w: the backup plugin is running for node %q; compact through it with \"lightning-cli backup-compact\"", err, node)
				}
				return err
			}
			defer n.Close()
			n.TempDir, n.CacheDir = tmpDir, cacheDir
			bar := newProgress(stderr, "compact")
			r, err := n.Compact(ctx, bar.fn())
			bar.done()
			if err != nil {
				return err
			}
			out := compactResult{Node: node, SealedChanges: r.Sealed.Records, AddedBytes: r.Added, FetchedBytes: r.Fetched, CacheUsed: r.CacheUsed,
				DurationSecond: r.Duration.Seconds(), Compacted: r.Manifest != nil, Phases: r.Phases}
			if r.Sealed.Manifest != nil {
				out.SealManifest = r.Sealed.Manifest.Seq
			}
			if r.Manifest != nil {
				out.Manifest, out.DataVersion, out.DatabaseBytes = r.Manifest.Seq, r.Manifest.Snapshot.Version, r.Manifest.Snapshot.Size()
			}
			if g.json {
				return printJSON(stdout, out)
			}
			if r.Manifest == nil {
				fmt.Fprintf(stdout, "Nothing to compact for node %q: its newest restore point is a snapshot and the journal holds no sealable change\n", node)
				return nil
			}
			if r.Sealed.Manifest != nil {
				fmt.Fprintf(stdout, "Sealed %d changes of node %q (manifest %d)\n", r.Sealed.Records, node, r.Sealed.Manifest.Seq)
			}
			fmt.Fprintf(stdout, "Compacted node %q: snapshot at data_version %d (%s) in manifest %d; %s added to the store, %s of pages read from it, in %.2fs (%s)\n",
				node, out.DataVersion, units.Bytes(out.DatabaseBytes), out.Manifest, units.Bytes(out.AddedBytes), units.Bytes(out.FetchedBytes), out.DurationSecond, history.PhaseSummary(r.Phases))
			if r.CacheErr != nil {
				fmt.Fprintf(stderr, "warning: %v\n", r.CacheErr)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node to compact (may be left out when the store holds one node)")
	cmd.Flags().StringVar(&tmpDir, "tmpdir", "", "directory for the rebuilt database (default: the system temp dir, or --cache-dir)")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "keep the new snapshot's database in this directory, and start the next compaction from it (default: no cache)")
	return cmd
}
