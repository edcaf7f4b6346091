package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/clnbackup/backup/internal/units"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/spf13/cobra"
)

func newVerifyCmd(g *globals) *cobra.Command {
	var (
		node     string
		readData float64
	)
	cmd := &cobra.Command{
		Use:   "verify [--node NAME] [--read-data[=PERCENT]] URL",
		Short: "Check that every restore point of the store can be restored",
		Long: `verify checks the store without changing it, and lists everything broken
together with the restore points (node and manifest, or a node's newest
state) each problem breaks. It exits non-zero when anything is broken.

The structural check reads every index object and checks it against its name
and its pack (the pack exists and has exactly the size the index describes);
decodes every manifest (a truncated or damaged one is reported, not fatal);
checks that every chunk a manifest names (list, patch and change chunks, and
every page of its snapshot) is in the index; reads the list, patch and change
chunks (which re-hashes them); and reads each node's journal.

--read-data also reads the packs back: each pack's BLAKE3 must equal its name,
and every chunk in it is decompressed and re-hashed. --read-data=PERCENT reads
a sample of that share of the packs, chosen by pack id (the same sample every
run while the packs stay the same; read everything now and then). With --node
only that node's restore points and journal are checked, and --read-data reads
only the packs that hold its chunks.

It may run while the backup plugins write.`,
		Example: `  backup-cli verify file:///mnt/backup/store
  backup-cli verify --read-data file:///mnt/backup/store
  backup-cli verify --node alice --read-data=10 --json file:///mnt/backup/store`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := history.VerifyOptions{Node: node}
			if cmd.Flags().Changed("read-data") {
				if readData <= 0 || readData > 100 {
					return fmt.Errorf("--read-data=%v: give a percentage of packs above 0 and at most 100 (e.g. --read-data=10)", readData)
				}
				opts.ReadData, opts.Percent = true, readData
			}
			ctx := cmd.Context()
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			st, err := store.Open(ctx, args[0], g.storeOptions())
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.NeedFullAccess("verify"); err != nil {
				return err
			}
			bar := newProgress(stderr, "verify")
			if bar != nil {
				opts.Progress = func(stage string, done, total int64) { bar.update(stage, done, total, stage == "read") }
			}
			rep, err := history.Verify(ctx, st, opts)
			bar.done()
			if err != nil {
				return err
			}
			if g.json {
				if err := printJSON(stdout, rep); err != nil {
					return err
				}
			} else {
				printVerify(stdout, rep)
			}
			if !rep.OK() {
				return fmt.Errorf("store %s: %d problems found (see the report); restore points not named there are intact", rep.Store, len(rep.Problems))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "check only this node's restore points and journal")
	cmd.Flags().Float64Var(&readData, "read-data", 0, "also read back `PERCENT` of the packs (100 without a value; write --read-data=10)")
	cmd.Flags().Lookup("read-data").NoOptDefVal = "100"
	return cmd
}

// printVerify writes verify's report for people: the counts checked, then
// every problem with the restore points it breaks, so that an operator
// knows which restores still work.
func printVerify(stdout io.Writer, r history.VerifyReport) {
	fmt.Fprintf(stdout, "Verified store %s: %d nodes, %d manifests, %d indexes, %d packs, %d chunks; journals: %d (%d records after the newest manifests)\n",
		r.Store, r.Nodes, r.Manifests, r.Indexes, r.Packs, r.Chunks, r.Journals, r.JournalRecords)
	if r.UnindexedPacks > 0 {
		fmt.Fprintf(stdout, "  %d packs without an index (left by interrupted writers; gc removes them)\n", r.UnindexedPacks)
	}
	if d := r.ReadData; d != nil {
		fmt.Fprintf(stdout, "Read back %d of %d packs: %s, %d chunks decompressed and re-hashed in %.2fs (%.1f MB/s)\n",
			d.Packs, d.Packs+d.SampledOut, units.Bytes(d.Bytes), d.Chunks, d.Duration.Seconds(), d.MBPerSecond())
	}
	if r.OK() {
		fmt.Fprintln(stdout, "No problems found.")
		return
	}
	fmt.Fprintf(stdout, "\n%d problems found:\n", len(r.Problems))
	for _, p := range r.Problems {
		fmt.Fprintf(stdout, "\n%s: %s\n", p.Object, p.Problem)
		if len(p.Chunks) > 0 && !strings.HasPrefix(p.Object, "chunk ") {
			ids := make([]string, len(p.Chunks))
			for i, c := range p.Chunks {
				ids[i] = c.Short()
			}
			more := ""
			if p.ChunkCount > len(p.Chunks) {
				more = fmt.Sprintf(" and %d more", p.ChunkCount-len(p.Chunks))
			}
			fmt.Fprintf(stdout, "  unreadable chunks: %s%s\n", strings.Join(ids, " "), more)
		}
		fmt.Fprintf(stdout, "  breaks: %s\n", describeAffects(p.Affects))
	}
}

// describeAffects writes restore points grouped by node, manifests as
// ranges: "alice manifests 1-3, 7 and the newest state; bob manifest 2".
func describeAffects(rs []history.RestorePoint) string {
	if len(rs) == 0 {
		return "no restore point"
	}
	var parts []string
	for i := 0; i < len(rs); {
		node := rs[i].Node
		var seqs []uint64
		newest := false
		for ; i < len(rs) && rs[i].Node == node; i++ {
			if rs[i].Newest {
				newest = true
			} else {
				seqs = append(seqs, rs[i].Manifest)
			}
		}
		var s []string
		switch {
		case len(seqs) == 1:
			s = append(s, "manifest "+ranges(seqs))
		case len(seqs) > 1:
			s = append(s, "manifests "+ranges(seqs))
		}
		if newest {
			s = append(s, "the newest state")
		}
		parts = append(parts, node+" "+strings.Join(s, " and "))
	}
	return strings.Join(parts, "; ")
}

// ranges writes sorted numbers as "1-3, 7".
func ranges(n []uint64) string {
	var s []string
	for i := 0; i < len(n); {
		j := i
		for j+1 < len(n) && n[j+1] == n[j]+1 {
			j++
		}
		if j > i {
			s = append(s, fmt.Sprintf("%d-%d", n[i], n[j]))
		} else {
			s = append(s, fmt.Sprint(n[i]))
		}
		i = j + 1
	}
	return strings.Join(s, ", ")
}
