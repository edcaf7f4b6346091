// Command backup-cli is the operator's tool for Core Lightning backups kept in
// a content-addressed store: it creates stores and nodes (init), restores a
// node's database (restore), shows what a store holds (list), compacts a
// node's history offline (compact), drops restore points by policy (forget),
// reclaims unreferenced chunks while plugins write (gc), checks the store
// (verify), shows whether each node is being backed up (status), imports a
// Python-plugin backup as a node (import), copies nodes' histories to
// another store (copy), clears a
// dead writer's lease (unlock) and says which build it is (version,
// --version). Every failure exits non-zero and says what failed and what to
// do.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/clnbackup/backup/internal/memlimit"

	"github.com/clnbackup/backup/internal/version"
	"github.com/spf13/cobra"
)

// memoryLimit is backup-cli's soft memory limit (GOMEMLIMIT overrides it):
// without one the heap grows to twice what is live. It is as low as it
// goes before the collector costs time (docs/benchmark.md, "backup-cli
// memory limit"); a larger live set makes the CLI slower, never fail (the
// runtime caps the collector at half the CPU).
const memoryLimit = 32 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		// Raised while an operation holds state that grows with
		// the database (internal/memlimit).
		memlimit.SetBase(memoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "backup-cli: %v\n", err)
		os.Exit(1)
	}
}

// globals are the flags every command has.
type globals struct {
	json      bool
	token     string
	tokenFile string
	// s3Creds is --s3-credentials: an s3:// store's keys file.
	s3Creds string
	// keys are --passphrase-file and --key-file: what opens an encrypted
	// store.
	keys keyFlags
}

// newRootCmd builds the whole command tree with its own flag values and no
// state outside it, so that main and each in-process test get an
// independent one; commands write to its output and error writers.
func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "backup-cli",
		Short: "Back up and restore Core Lightning databases in a deduplicating store",
		Long: `backup-cli manages backups of Core Lightning node databases kept in a
content-addressed store (a local directory or NFS mount: file:///path), or
in a store served by backup-cli server (socket:HOST:PORT[?tls=FINGERPRINT],
with --token-file or $CLNBACKUP_TOKEN).

A store holds the histories of many nodes: snapshots of each node's
lightningd.sqlite3 cut into page chunks shared by every snapshot and node,
plus the db_write changes the backup plugin records between snapshots.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.String(),
	}
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print results as JSON")
	addTokenFlags(root, g)
	addKeyFlags(root, g)
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		if err := g.resolveToken(cmd.ErrOrStderr()); err != nil {
			return err
		}
		return g.keys.resolveUnlock(cmd)
	}
	root.AddCommand(newInitCmd(g), newRestoreCmd(g), newListCmd(g), newCompactCmd(g))
	root.AddCommand(newForgetCmd(g), newGCCmd(g), newVerifyCmd(g), newUnlockCmd(g), newStatusCmd(g))
	root.AddCommand(newServerCmd(g), newVersionCmd(g), newImportCmd(g), newCopyCmd(g), newKeyCmd(g))
	return root
}

// printJSON writes v as indented JSON to w (the command's output, so that
// scripts and in-process callers get it where they asked).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
