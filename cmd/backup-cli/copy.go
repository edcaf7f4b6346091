package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/clnbackup/backup/internal/secretfile"
	"github.com/clnbackup/backup/internal/units"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/spf13/cobra"
)

// copyResult is what copy prints with --json.
type copyResult struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Created     bool   `json:"destination_created"`
	history.CopyResult
}

// newCopyCmd declares copy: moving a store (to a server, later a bucket)
// and keeping a second copy of the backups elsewhere.
func newCopyCmd(g *globals) *cobra.Command {
	var nodes []string
	var dstTokenFile string
	var dk dstKeys
	cmd := &cobra.Command{
		Use:   "copy [--node N]... [--dst-encrypt] [--dst-passphrase-file F | --dst-key-file F] SRC_URL DST_URL",
		Short: "Copy nodes' histories to another store, uploading only the chunks it lacks",
		Long: `copy copies the histories of nodes (every node of SRC_URL, or each --node)
into the store at DST_URL, created if it is a missing or empty directory:
the node record, every restore point the destination lacks with the chunks
it names that the destination does not hold yet (looked up in batches), and
the changes recorded after the newest restore point, with their record
numbers. Every chunk written is read back from the destination and checked
against its id before a restore point names it.

It is resumable: run it again after an interruption (or on a schedule, to
keep a second copy) and it skips every restore point and chunk the
destination holds. An interrupted copy leaves the destination consistent:
it restores to an older state of the node, never a broken one.

The source may be in use (the plugin writing): copy takes what is durable
there and says up to which change it copied. The destination node must not
be: copy holds its lease and refuses, naming the holder, while a writer is
live there.

Stores whose chunk ids or list chunks differ are re-encoded (every chunk
read, verified and named again; restore points rewritten); otherwise chunks
are copied as they are stored. A store server keeps journals it cannot
start at a chosen record: copying into one leaves out the changes after the
newest restore point, and says so.

Give the token of a store server with --token-file (both URLs) or
--dst-token-file (the destination, when it has a token of its own).

Encrypted stores: --passphrase-file or --key-file opens the source, and the
destination too unless --dst-passphrase-file or --dst-key-file is given.
--dst-encrypt creates a missing destination encrypted, under the passphrase
of --dst-passphrase-file (else asked twice on the terminal): with it a plain
store's nodes move into an encrypted store. Copying between stores of
different keys, or from an encrypted store into a plain one, re-encodes
every chunk.`,
		Example: `  backup-cli copy file:///mnt/backup/store socket:backup.example:9737?tls=FINGERPRINT --dst-token-file admin.token
  backup-cli copy --node alice --json file:///mnt/backup/store file:///mnt/offsite/store
  backup-cli copy --dst-encrypt --dst-passphrase-file offsite.pass file:///mnt/backup/store file:///mnt/offsite/store`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCopy(cmd, g, nodes, dstTokenFile, dk, args[0], args[1])
		},
	}
	cmd.Flags().StringArrayVar(&nodes, "node", nil, "node to copy; repeat for several (default: every node of the source)")
	cmd.Flags().StringVar(&dstTokenFile, "dst-token-file", "", "file (mode 0600) holding the destination store server's token, when it differs from --token-file")
	cmd.Flags().BoolVar(&dk.encrypt, "dst-encrypt", false, "create the destination encrypted (with --dst-passphrase-file, else asked twice on the terminal)")
	cmd.Flags().StringVar(&dk.passphraseFile, "dst-passphrase-file", "", "file (mode 0600) whose first line is the destination's passphrase (default: that of the source)")
	cmd.Flags().StringVar(&dk.keyFile, "dst-key-file", "", "key file (mode 0600) opening the destination (default: that of the source)")
	return cmd
}

// runCopy opens both stores (the destination created if missing, encrypted
// with --dst-encrypt) and copies the nodes' histories.
func runCopy(cmd *cobra.Command, g *globals, nodes []string, dstTokenFile string, dk dstKeys, srcURL, dstURL string) error {
	ctx := cmd.Context()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	src, err := store.Open(ctx, srcURL, g.storeOptions())
	if err != nil {
		return fmt.Errorf("copy: source: %w", err)
	}
	defer src.Close()
	dopts := g.storeOptions()
	if dstTokenFile != "" {
		if dopts.Token, err = readTokenFile(dstTokenFile); err != nil {
			return fmt.Errorf("--dst-token-file: %w", err)
		}
	}
	dst, created, err := g.openCopyDst(ctx, dstURL, dopts, dk)
	if err != nil {
		return fmt.Errorf("copy: destination: %w", err)
	}
	defer dst.Close()
	if src.Keyring() != nil && dst.Keyring() == nil {
		fmt.Fprintf(stderr, "warning: the destination %s is not encrypted: the nodes' histories are written there in plain text (copy into a store made with --dst-encrypt to keep them encrypted)\n", dst.Location())
	}
	bar := newProgress(stderr, "copy")
	res, err := history.Copy(ctx, src, dst, history.CopyOptions{Nodes: nodes, Progress: bar.fn()})
	bar.done()
	out := copyResult{Source: src.Location(), Destination: dst.Location(), Created: created, CopyResult: res}
	if err != nil {
		if len(res.Nodes) > 0 && !g.json {
			printCopy(stdout, out)
		}
		return fmt.Errorf("%w (what was copied is consistent: run the same copy again to resume)", err)
	}
	for _, n := range res.Nodes {
		if n.JournalNote != "" {
			fmt.Fprintf(stderr, "warning: node %q: %s\n", n.Node, n.JournalNote)
		}
	}
	if g.json {
		return printJSON(stdout, out)
	}
	printCopy(stdout, out)
	return nil
}

// readTokenFile reads a token file, refused when other users may read it.
func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if err := secretfile.CheckMode(path, "a store server token", fi.Mode()); err != nil {
		return "", err
	}
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", err
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return token, nil
}

func printCopy(w io.Writer, r copyResult) {
	how := "as stored"
	if r.Mode == history.CopyReencode {
		how = "re-encoded"
	}
	fmt.Fprintf(w, "Copied from %s to %s (%s", r.Source, r.Destination, how)
	if r.Reason != "" {
		fmt.Fprintf(w, ": %s", r.Reason)
	}
	fmt.Fprintln(w, ")")
	for _, n := range r.Nodes {
		fmt.Fprintf(w, "  node %s: %d restore points copied (%d already there), %d chunks copied (%d already there), %s added, %d chunks read back and verified\n",
			n.Node, n.Manifests, n.ManifestsSkipped, n.Chunks, n.ChunksSkipped, units.Bytes(n.Bytes), n.ReadBack)
		fmt.Fprintf(w, "    up to data_version %d (journal record %d): manifest %d and %d journal records after it (%d copied now)\n",
			n.Version, n.LastSeq, n.Newest, n.JournalHeld, n.JournalRecords)
	}
	fmt.Fprintf(w, "Total: %d restore points and %d chunks copied, %d and %d already there, %s added, in %.2fs\n",
		r.Manifests, r.Chunks, r.ManifestsSkipped, r.ChunksSkipped, units.Bytes(r.Bytes), r.Duration.Seconds())
}

// dstKeys are copy's flags for an encrypted destination.
type dstKeys struct {
	encrypt                 bool
	passphraseFile, keyFile string
}

// openCopyDst opens or creates copy's destination. Its key is that of
// --dst-passphrase-file or --dst-key-file, else the source's flags; with
// --dst-encrypt a missing destination is created encrypted and a plain one
// is refused (openInitStore).
func (g *globals) openCopyDst(ctx context.Context, url string, opts store.Options, dk dstKeys) (*store.Store, bool, error) {
	switch {
	case dk.passphraseFile != "" && dk.keyFile != "":
		return nil, false, fmt.Errorf("give --dst-passphrase-file or --dst-key-file, not both")
	case dk.passphraseFile != "":
		p, err := readPassphraseFile(dk.passphraseFile)
		if err != nil {
			return nil, false, fmt.Errorf("--dst-passphrase-file: %w", err)
		}
		opts.Unlock = store.Unlock{Passphrase: p}
	case dk.keyFile != "":
		kf, err := readKeyFile(dk.keyFile)
		if err != nil {
			return nil, false, fmt.Errorf("--dst-key-file: %w", err)
		}
		opts.Unlock = store.Unlock{KeyFile: kf}
	}
	if !dk.encrypt {
		return store.Create(ctx, url, opts)
	}
	return g.openInitStore(ctx, url, opts, true, false, newPassSource{dk.passphraseFile, false, "--dst-passphrase-file"})
}
