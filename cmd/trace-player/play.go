package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/clnbackup/backup/plugin/lightningdtest"
	"github.com/clnbackup/backup/replay"
	"github.com/spf13/cobra"
)

func newPlayCmd() *cobra.Command {
	var pluginPath, lightningDir string
	var seed uint64
	var compactEvery int
	var verbose bool
	cmd := &cobra.Command{
		Use:   "play --plugin PATH --lightning-dir DIR [--compact-every N] [--seed N] TRACE.jsonl",
		Short: "Run the real plugin executable fed by a recorded trace, as lightningd ran it",
		Long: `play starts the plugin executable at PATH the way lightningd does (working
directory DIR, which must hold backup.lock; LIGHTNINGD_PLUGIN=1) and plays
lightningd's side of the plugin protocol from a recorded trace: getmanifest,
the hooks lightningd sent before init, init, the rest of the hooks; a new
lightningd pid in the trace restarts the plugin. Request ids alternate
between strings and numbers, and a seeded share of the hooks is split
across two writes or sent in one write together with a backup-status call.
It stops at the first hook the plugin refuses (lightningd would exit), and
prints a one-line summary.`,
		Example: `  backup-cli init --lightning-dir /tmp/demo/lightning file:///tmp/demo/store
  trace-player play --plugin bin/backup-plugin --lightning-dir /tmp/demo/lightning testdata/trace1.jsonl`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pluginPath == "" || lightningDir == "" {
				return fmt.Errorf("--plugin and --lightning-dir are required")
			}
			abs, err := filepath.Abs(pluginPath)
			if err != nil {
				return err
			}
			if st, err := os.Stat(abs); err != nil || st.IsDir() {
				return fmt.Errorf("plugin %s: not an executable file (build it with make build)", pluginPath)
			}
			if st, err := os.Stat(lightningDir); err != nil || !st.IsDir() {
				return fmt.Errorf("lightning directory %s does not exist or is not a directory", lightningDir)
			}
			entries, err := replay.ReadTrace(args[0])
			if err != nil {
				return err
			}
			logf := func(string, ...any) {}
			if verbose {
				logf = func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
			}
			res, err := lightningdtest.Play(cmd.Context(), abs, lightningDir, entries, lightningdtest.PlayOptions{
				Start: lightningdtest.Options{Logf: logf}, Seed: seed, CompactEvery: compactEvery,
			})
			if err != nil && !lightningdtest.IsRefused(err) {
				// The plugin's own explanation is in its log: show the end.
				// (A refusal's answer carries it already.)
				logs := res.Logs
				if len(logs) > 8 {
					logs = logs[len(logs)-8:]
				}
				for _, l := range logs {
					fmt.Fprintf(os.Stderr, "plugin %s\n", l)
				}
			}
			if err != nil {
				return fmt.Errorf("play %s after %d hooks: %w", args[0], res.Hooks, err)
			}
			fmt.Printf("Played %d hooks of %s through %s in %s (%d plugin starts, %d before init, %d rewinds, %d split, %d joined with %s, %d compactions): data_version %d, hook round trip p50 %s p99 %s max %s\n",
				res.Hooks, args[0], pluginPath, res.Duration.Round(time.Millisecond), res.Runs, res.BeforeInit, res.Rewinds,
				res.Split, res.Joined, lightningdtest.DefaultJoin, res.Compactions, res.LastVersion,
				us(res.P50), us(res.P99), us(res.Max))
			return nil
		},
	}
	cmd.Flags().StringVar(&pluginPath, "plugin", "", "the plugin executable (e.g. bin/backup-plugin)")
	cmd.Flags().StringVar(&lightningDir, "lightning-dir", "", "lightning network directory holding backup.lock (the plugin's working directory)")
	cmd.Flags().IntVar(&compactEvery, "compact-every", 0, "call backup-compact after every N hooks (0: never)")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "seed for the choice of split and joined writes")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the plugin's log and stderr on stderr")
	return cmd
}

// us formats a round trip in microseconds.
func us(d time.Duration) string { return fmt.Sprintf("%dµs", d.Microseconds()) }
