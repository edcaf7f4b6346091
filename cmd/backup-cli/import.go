package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/clnbackup/backup/internal/units"
	"github.com/clnbackup/backup/legacy"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/remote"
	"github.com/spf13/cobra"
)

// importResult is what import prints with --json.
type importResult struct {
	Legacy       string `json:"legacy"`
	Store        string `json:"store"`
	StoreCreated bool   `json:"store_created"`
	history.ImportResult
}

// newImportCmd declares import: the way users of the Python backup plugin
// bring their backup's history into a store.
func newImportCmd(g *globals) *cobra.Command {
	var node, tmpDir string
	cmd := &cobra.Command{
		Use:   "import [--node NAME] LEGACY_URL STORE_URL",
		Short: "Turn a backup of the Python backup plugin into a node of the store",
		Long: `import reads a backup file written by the Python backup plugin (file format
v1, file:///path/backup.dbak), or reads it back from that plugin's backup
server (socket:HOST:PORT, with its RESTORE request; stop lightningd first,
since that server serves one client at a time), and adds it to the store
(created if needed) as a new node whose restore points are the backup's:
its snapshot becomes the node's first snapshot, and every change it logged becomes a sealed change, so
that "backup-cli restore --version N" works for every data_version the file
holds. The records of the newest data_version go to the node's journal, which
numbers on from there, so the plugin continues from the backup with no gap.

The backup file is only read. It is first restored whole into a scratch file
(--tmpdir, room for about twice the database) and checked, so a damaged or
hostile file fails before the node is added. A node name in use is refused.
STORE_URL may be a store server (socket:HOST:PORT, with the node's token or
an admin token): the server starts the node's journal where the import
leaves off.

To switch a lightning directory over in one step, use
"backup-cli init --lightning-dir DIR --import-legacy LEGACY_URL STORE_URL".`,
		Example: `  backup-cli import --node alice file:///mnt/backup/backup.dbak file:///mnt/backup/store
  backup-cli import --node alice socket:backup.example.org:1234 file:///mnt/backup/store`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			st, created, err := store.Create(ctx, args[1], g.storeOptions())
			if err != nil {
				return err
			}
			defer st.Close()
			out, err := importLegacy(ctx, st, node, args[0], tmpDir, stderr)
			if err != nil {
				return err
			}
			out.Store, out.StoreCreated = st.Location(), created
			if g.json {
				return printJSON(stdout, out)
			}
			printImport(stdout, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", history.DefaultNode, "name of the new node in the store")
	cmd.Flags().StringVar(&tmpDir, "tmpdir", "", "directory for the scratch copies of the database (default: the system temp dir)")
	return cmd
}

// legacyPath checks that url names a backup file of the Python plugin and
// returns its path.
func legacyPath(url string) (string, error) {
	u, err := store.ParseURL(url)
	if err != nil {
		return "", fmt.Errorf("legacy backup URL: %w", err)
	}
	if u.Scheme != "file" {
		return "", fmt.Errorf("legacy backup %s: only file:// backups and the Python plugin's backup servers (socket:) can be imported", url)
	}
	if !fileExists(u.Path) || !legacy.Detect(u.Path) {
		return "", fmt.Errorf("legacy backup %s: %s is not a backup file of the Python backup plugin (format v1)", url, u.Path)
	}
	return u.Path, nil
}

// legacySource resolves a legacy backup URL to a v1 file to read: a
// file:// backup as it is, or the file a Python backup server (socket:)
// keeps, fetched into a scratch directory under tmpDir that done removes.
func legacySource(ctx context.Context, url, tmpDir string, stderr io.Writer) (path string, done func(), err error) {
	u, err := store.ParseURL(url)
	if err != nil {
		return "", nil, fmt.Errorf("legacy backup URL: %w", err)
	}
	if u.Scheme != "socket" {
		path, err := legacyPath(url)
		return path, func() {}, err
	}
	if u.TLS != "" {
		return "", nil, fmt.Errorf("legacy backup %s: the Python plugin's backup server speaks no TLS: drop tls= (reach it over SSH, WireGuard or Tor, as its plugin did)", url)
	}
	dir, err := os.MkdirTemp(tmpDir, ".backup-legacy-*")
	if err != nil {
		return "", nil, fmt.Errorf("legacy backup %s: scratch directory: %w", url, err)
	}
	done = func() { os.RemoveAll(dir) }
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	conn, err := remote.DialPlain(dctx, u.Addr, u.Proxy)
	cancel()
	if err != nil {
		done()
		return "", nil, fmt.Errorf("legacy backup %s: connect: %w (is the Python plugin's backup-cli server running there?)", url, err)
	}
	path = filepath.Join(dir, "backup.dbak")
	bar := newProgress(stderr, "fetch")
	var progress func(int64)
	if fn := bar.fn(); fn != nil {
		progress = func(n int64) { fn(n, n) }
	}
	_, err = legacy.Fetch(ctx, conn, path, legacy.FetchOptions{Progress: progress})
	bar.done()
	if err != nil {
		done()
		return "", nil, fmt.Errorf("legacy backup %s: %w (or copy its .dbak file off the server and import that)", url, err)
	}
	return path, done, nil
}

// importLegacy imports the legacy backup at url into st as node, with
// progress on stderr when it is a terminal.
func importLegacy(ctx context.Context, st *store.Store, node, url, tmpDir string, stderr io.Writer) (importResult, error) {
	path, done, err := legacySource(ctx, url, tmpDir, stderr)
	if err != nil {
		return importResult{}, err
	}
	defer done()
	return importLegacyFile(ctx, st, node, url, path, tmpDir, stderr)
}

// importLegacyFile imports the v1 file at path (read from url) into st as
// node.
func importLegacyFile(ctx context.Context, st *store.Store, node, url, path, tmpDir string, stderr io.Writer) (importResult, error) {
	bar := newProgress(stderr, "import")
	res, err := history.ImportLegacy(ctx, st, node, path, history.ImportOptions{TempDir: tmpDir, Progress: bar.fn()})
	bar.done()
	if err != nil {
		return importResult{}, err
	}
	legacyName := path
	if u, _ := store.ParseURL(url); u.Scheme == "socket" {
		legacyName = url
	}
	return importResult{Legacy: legacyName, ImportResult: res}, nil
}

func printImport(w io.Writer, r importResult) {
	fmt.Fprintf(w, "Imported %s into store %s as node %q: data_versions %d to %d (%d snapshots, %d changes",
		r.Legacy, r.Store, r.Node, r.FirstVersion, r.Version, r.Snapshots, r.Records)
	if r.Dropped > 0 {
		fmt.Fprintf(w, ", %d rewound changes left out", r.Dropped)
	}
	fmt.Fprintf(w, ") in %d restore points, %s added to the store, in %.2fs\n", r.Manifests, units.Bytes(r.Added), r.Duration.Seconds())
	fmt.Fprintf(w, "The node's journal continues at record %d; every data_version from %d on can be restored with backup-cli restore --node %s --version N\n",
		r.NextSeq, r.FirstVersion, r.Node)
}
