package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/clnbackup/backup/internal/units"
	"github.com/clnbackup/backup/legacy"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/spf13/cobra"
)

// lockFile is the backup plugin's pointer to its store, in the lightning
// directory. backend_url is the key the Python plugin used.
type lockFile struct {
	BackendURL string `json:"backend_url"`
	Node       string `json:"node"`
	// Token is the store server's token for the node (socket: URLs);
	// the file is written with mode 0600.
	Token string `json:"token,omitempty"`
	// S3Credentials is the keys file of an s3:// store (--s3-credentials),
	// absolute, for the plugin.
	S3Credentials string `json:"s3_credentials,omitempty"`
	// KeyFile is the plugin's unlock key file of an encrypted store
	// (absolute; mode 0600).
	KeyFile string `json:"key_file,omitempty"`
}

// initOpts are init's flags.
type initOpts struct {
	lightningDir, node string
	// importLegacy is the Python plugin's backup to import instead of
	// snapshotting the database (--import-legacy).
	importLegacy, tmpDir string
	// encrypt creates the store encrypted (--encrypt); includeHSM stores
	// the node's hsm_secret in it (--include-hsm-secret).
	encrypt, includeHSM bool
	// storeOnly creates the store and adds no node (--store-only).
	storeOnly bool
}

// newInitCmd declares init's flags and help; runInit does the work.
func newInitCmd(g *globals) *cobra.Command {
	o := &initOpts{}
	cmd := &cobra.Command{
		Use:   "init [--lightning-dir DIR] [--node NAME] [--encrypt [--passphrase-file FILE]] [--include-hsm-secret] [--store-only] URL",
		Short: "Create the store if needed and add a node to it",
		Long: `init creates the store at URL when it does not exist (it refuses a non-empty
directory that is not a store) and adds a node to it.

With --lightning-dir it also writes DIR/backup.lock, which tells the backup
plugin where to write, and, when DIR/lightningd.sqlite3 exists, stores its
first snapshot (a page-identical copy made with SQLite's online backup API).
Stop lightningd before running it. If lightningd died mid-transaction and
left a hot journal (lightningd.sqlite3-journal), init copies the database and
the journal into a private directory and rolls the copy back to the last
commit: the node's own files are never written. A failed init leaves no
node behind, or says to run it again to finish the node it added. Without a database the node starts from
an empty one and the plugin records every change from the first.

The node name defaults to "` + history.DefaultNode + `"; give each node sharing a store its own.

For a store server (socket:HOST:PORT), pass the node's token (--token-file,
a file of mode 0600 from backup-cli server add-token --out on the server, or
$CLNBACKUP_TOKEN; --token shows it to every user in ps); init writes it into
backup.lock, readable only by its owner, with the URL as given: a tls= pin
(socket:HOST:PORT?tls=FINGERPRINT) is kept, so the plugin checks the server's
key too.

With --import-legacy LEGACY_URL (a file:// backup of the Python backup
plugin, or its backup server at socket:HOST:PORT), init imports that backup's history as the node (see backup-cli
import) instead of snapshotting the database, then renames the Python
plugin's DIR/backup.lock to DIR/backup.lock.legacy and writes its own: after
switching the plugin in lightningd's config, lightningd continues from the
imported data_version with no gap. Stop lightningd first. The database's
data_version is checked against the backup's first: a database ahead of the
backup (changes the backup misses) or more than one change behind it is
refused before anything is imported.

With --encrypt a new store is created encrypted: every object is encrypted
and authenticated under a random master key, kept in the store wrapped by
the passphrase (--passphrase-file FILE, its first line; or
$CLNBACKUP_PASSPHRASE_FILE; else asked twice on the terminal). An existing
plain store cannot be encrypted in place (copy it with copy --dst-encrypt);
a store server's store is created encrypted on the server's machine. On an
encrypted store, --lightning-dir also writes the plugin's key file
DIR/backup.key (mode 0600), which backup.lock names, so that the plugin runs
unattended. Keep the passphrase, or the master key of backup-cli key export,
off the node: a key lost with the node loses the backup with it.

--store-only creates the store and adds no node: for a store a store server
will serve, created (encrypted, say) on the server's machine before nodes
are set up through the server.

--include-hsm-secret (encrypted stores only) also stores DIR/hsm_secret and
DIR/emergency.recover (when present) in the store, so that restore
--with-secrets can rebuild the node from the store and the passphrase alone.`,
		Example: `  backup-cli init --lightning-dir ~/.lightning/bitcoin file:///mnt/backup/store
  backup-cli init --lightning-dir ~/.lightning/bitcoin --node alice file:///mnt/backup/store
  backup-cli init --lightning-dir ~/.lightning/bitcoin --import-legacy file:///mnt/backup/backup.dbak file:///mnt/backup/store
  backup-cli init --lightning-dir ~/.lightning/bitcoin --node alice --token-file alice.token 'socket:backup.example.org:9737?tls=FINGERPRINT'
  backup-cli init --lightning-dir ~/.lightning/bitcoin --encrypt --include-hsm-secret file:///mnt/backup/store`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runInit(cmd, g, o, args[0])
		},
	}
	cmd.Flags().StringVar(&o.lightningDir, "lightning-dir", "", "lightning network directory (e.g. ~/.lightning/bitcoin) to set up")
	cmd.Flags().StringVar(&o.node, "node", history.DefaultNode, "name of the node in the store")
	cmd.Flags().StringVar(&o.importLegacy, "import-legacy", "", "import this backup of the Python backup plugin (file:///path/backup.dbak, or socket:HOST:PORT of its backup server) as the node, and replace that plugin's backup.lock")
	cmd.Flags().StringVar(&o.tmpDir, "tmpdir", "", "with --import-legacy: directory for scratch copies of the database (default: the system temp dir)")
	cmd.Flags().BoolVar(&o.encrypt, "encrypt", false, "create the store encrypted, with the passphrase of --passphrase-file (else asked twice on the terminal)")
	cmd.Flags().BoolVar(&o.storeOnly, "store-only", false, "create the store (or check it exists) and add no node, e.g. an encrypted store for backup-cli server")
	cmd.Flags().BoolVar(&o.includeHSM, "include-hsm-secret", false, "also store DIR/hsm_secret and DIR/emergency.recover (encrypted stores only), for restore --with-secrets")
	return cmd
}

// runInit adds the node to the store (created if needed) with its first
// snapshot, then points the lightning directory's plugin at it: the lock
// file is written last, so that the plugin never writes to a node the
// store does not have.
func runInit(cmd *cobra.Command, g *globals, o *initOpts, url string) error {
	node := o.node
	if err := manifest.ValidNodeName(node); err != nil {
		return err
	}
	if o.importLegacy != "" {
		return runInitImport(cmd, g, o, url)
	}
	if o.storeOnly {
		return runInitStoreOnly(cmd, g, o, url)
	}
	lockPath, dbPath, err := initPaths(o.lightningDir)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	st, created, secrets, err := g.initStore(ctx, o, url)
	if err != nil {
		return err
	}
	defer st.Close()
	out := initResult{Store: st.Location(), StoreCreated: created, Node: node, Encrypted: st.Keyring() != nil}
	if !g.json {
		printInitStore(stdout, st, created)
	}
	if dbPath != "" {
		// The node's database is read only through history.Init's private
		// copy: opened here, a hot journal would make SQLite refuse it.
		out.Database = dbPath
		if !g.json {
			fmt.Fprintf(stdout, "Found an existing database at %s\n", dbPath)
		}
	}
	keyPath, undo, err := pluginKey(ctx, st, o.lightningDir, g.keys.unlock.KeyFile)
	if err != nil {
		return err
	}
	bar := newProgress(stderr, "snapshot")
	m, err := history.Init(ctx, st, node, dbPath, bar.fn())
	bar.done()
	if err != nil {
		undo()
		return err
	}
	out.Manifest, out.DataVersion, out.DatabaseBytes, out.AddedBytes = m.Seq, m.Snapshot.Version, m.Snapshot.Size(), m.Stats.AddedBytes
	out.KeyFile = keyPath
	if out.Secrets, err = storeSecrets(ctx, st, node, secrets); err != nil {
		return err
	}
	if lockPath != "" {
		if err := writeNodeLock(g, lockPath, url, node, out.KeyFile); err != nil {
			return err
		}
		out.LockFile = lockPath
	}
	warnKeepKey(stderr, url, out.Encrypted && (created || out.KeyFile != ""), out.KeyFile)
	if g.json {
		return printJSON(stdout, out)
	}
	printInit(stdout, node, m, dbPath, lockPath)
	printInitKeys(stdout, out.KeyFile, out.Secrets)
	return nil
}

// initStore reads the node's secrets (--include-hsm-secret) and opens or
// creates the store (openInitStore), refusing a plain store before
// anything is written when secrets are to be stored.
func (g *globals) initStore(ctx context.Context, o *initOpts, url string) (*store.Store, bool, map[string][]byte, error) {
	var secrets map[string][]byte
	if o.includeHSM {
		var err error
		if secrets, err = readNodeSecrets(o.lightningDir); err != nil {
			return nil, false, nil, err
		}
	}
	np := newPassSource{g.keys.passphraseFile, true, "--passphrase-file"}
	st, created, err := g.openInitStore(ctx, url, g.storeOptions(), o.encrypt, o.includeHSM, np)
	if err != nil {
		return nil, false, nil, err
	}
	if st.Keyring() != nil && o.lightningDir != "" {
		if p := filepath.Join(o.lightningDir, pluginKeyName); fileExists(p) {
			st.Close()
			return nil, false, nil, fmt.Errorf("%s exists (the key file of an earlier setup?): move it away and run init again; nothing was written", p)
		}
	}
	return st, created, secrets, nil
}

// runInitStoreOnly is init --store-only: the store alone, no node.
func runInitStoreOnly(cmd *cobra.Command, g *globals, o *initOpts, url string) error {
	if o.lightningDir != "" || o.includeHSM || cmd.Flags().Changed("node") {
		return fmt.Errorf("--store-only adds no node: drop --lightning-dir, --node and --include-hsm-secret")
	}
	st, created, _, err := g.initStore(cmd.Context(), o, url)
	if err != nil {
		return err
	}
	defer st.Close()
	encrypted := st.Keyring() != nil
	warnKeepKey(cmd.ErrOrStderr(), url, encrypted && created, "")
	if g.json {
		return printJSON(cmd.OutOrStdout(), struct {
			Store        string `json:"store"`
			StoreCreated bool   `json:"store_created"`
			Encrypted    bool   `json:"encrypted"`
		}{st.Location(), created, encrypted})
	}
	printInitStore(cmd.OutOrStdout(), st, created)
	return nil
}

// printInitStore says which store init uses.
func printInitStore(stdout io.Writer, st *store.Store, created bool) {
	what := "store"
	if st.Keyring() != nil {
		what = "encrypted store"
	}
	if created {
		fmt.Fprintf(stdout, "Created %s %s\n", what, st.Location())
	} else {
		fmt.Fprintf(stdout, "Using existing %s %s\n", what, st.Location())
	}
}

// printInitKeys says what init stored and wrote for an encrypted store.
func printInitKeys(stdout io.Writer, keyPath string, secrets []string) {
	if len(secrets) > 0 {
		fmt.Fprintf(stdout, "Stored the node's %s in the store (restore --with-secrets writes them back)\n", strings.Join(secrets, " and "))
	}
	if keyPath != "" {
		fmt.Fprintf(stdout, "Wrote the plugin's key file %s (mode 0600), which backup.lock names\n", keyPath)
	}
}

// warnKeepKey tells the operator, once, on stderr, to keep the store's key
// off the node, when init created an encrypted store or a key file.
func warnKeepKey(stderr io.Writer, url string, warn bool, keyPath string) {
	if !warn {
		return
	}
	fmt.Fprintf(stderr, keepKeyOffNode, url)
	if keyPath != "" {
		fmt.Fprintf(stderr, "The key file %s lets the plugin write unattended, but it is lost\nwith the node.\n", keyPath)
	}
}

// initPaths checks the lightning directory before the store is touched:
// it returns where backup.lock goes (refusing a directory already set up)
// and the database to snapshot, if there is one ("" for both without a
// directory).
func initPaths(lightningDir string) (lockPath, dbPath string, err error) {
	if lightningDir == "" {
		return "", "", nil
	}
	st, err := os.Stat(lightningDir)
	if err != nil || !st.IsDir() {
		return "", "", fmt.Errorf("lightning directory %s does not exist or is not a directory", lightningDir)
	}
	lockPath = filepath.Join(lightningDir, "backup.lock")
	if _, err := os.Stat(lockPath); err == nil {
		if l, err := readLock(lockPath); err == nil && isPythonLock(l) {
			return "", "", fmt.Errorf("%s is the Python backup plugin's: bring its backup over with --import-legacy %s", lockPath, l.BackendURL)
		}
		return "", "", fmt.Errorf("%s already exists: this lightning directory is already set up for backups (remove the file to set it up again)", lockPath)
	}
	if p := filepath.Join(lightningDir, "lightningd.sqlite3"); fileExists(p) {
		dbPath = p
	}
	return lockPath, dbPath, nil
}

// writeNodeLock writes the plugin's lock file, with the token only for a
// store server; its error says how to write the file by hand, since the
// node is already in the store.
func writeNodeLock(g *globals, lockPath, url, node, keyFile string) error {
	var token, s3Creds string
	u, _ := store.ParseURL(url)
	if u.Scheme == "socket" {
		token = g.token
	}
	if u.Scheme == "s3" && g.s3Creds != "" {
		abs, err := filepath.Abs(g.s3Creds)
		if err != nil {
			return err
		}
		s3Creds = abs
	}
	if err := writeLock(lockPath, lockFile{BackendURL: url, Node: node, Token: token, S3Credentials: s3Creds, KeyFile: keyFile}); err != nil {
		return fmt.Errorf("node %q was added to the store, but writing %s failed: %w; fix the cause and write the file by hand ({\"backend_url\": %q, \"node\": %q, \"token\" for a store server, \"key_file\" for an encrypted store}, mode 0600)", node, lockPath, err, url, node)
	}
	return nil
}

// printInit tells the operator what init stored and wrote (the JSON
// output says the same in initResult).
func printInit(stdout io.Writer, node string, m *manifest.Manifest, dbPath, lockPath string) {
	if dbPath != "" {
		fmt.Fprintf(stdout, "Successfully written initial snapshot of node %q: data_version %d, %s in %d pages, %s new to the store (manifest %d)\n",
			node, m.Snapshot.Version, units.Bytes(m.Snapshot.Size()), m.Snapshot.Pages, units.Bytes(m.Stats.AddedBytes), m.Seq)
	} else {
		fmt.Fprintf(stdout, "Added node %q with an empty database (manifest %d): the plugin will record every change from the first\n", node, m.Seq)
	}
	if lockPath != "" {
		fmt.Fprintf(stdout, "Wrote %s\n", lockPath)
	}
}

type initResult struct {
	Store         string `json:"store"`
	StoreCreated  bool   `json:"store_created"`
	Node          string `json:"node"`
	Database      string `json:"database,omitempty"`
	Manifest      uint64 `json:"manifest"`
	DataVersion   uint32 `json:"data_version"`
	DatabaseBytes int64  `json:"database_bytes"`
	AddedBytes    int64  `json:"added_bytes"`
	LockFile      string `json:"lock_file,omitempty"`
	Encrypted     bool   `json:"encrypted"`
	// KeyFile is the plugin's key file written (encrypted stores).
	KeyFile string `json:"key_file,omitempty"`
	// Secrets are the node secrets stored (--include-hsm-secret).
	Secrets []string `json:"secrets,omitempty"`
}

// writeLock writes backup.lock durably (temp file, fsync, rename, fsync of
// the directory), readable only by its owner.
func writeLock(path string, l lockFile) error {
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".backup.lock-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// readLock reads a backup.lock, ours or the Python plugin's (which has
// only backend_url).
func readLock(path string) (lockFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return lockFile{}, err
	}
	var l lockFile
	if err := json.Unmarshal(data, &l); err != nil {
		return lockFile{}, fmt.Errorf("%s is not a backup lock file: %w", path, err)
	}
	return l, nil
}

// isPythonLock reports whether a backup.lock is the Python plugin's: only
// backend_url, naming a v1 backup file or a socket: backup server (ours
// always names the node).
func isPythonLock(l lockFile) bool {
	if l.Node != "" || l.Token != "" {
		return false
	}
	u, err := store.ParseURL(l.BackendURL)
	if err != nil {
		return false
	}
	return u.Scheme == "socket" || (fileExists(u.Path) && legacy.Detect(u.Path))
}

// runInitImport is init --import-legacy: the node's history comes from the
// Python plugin's backup, and that plugin's lock file is kept as
// backup.lock.legacy (renaming it back undoes the switch).
func runInitImport(cmd *cobra.Command, g *globals, o *initOpts, url string) error {
	if o.lightningDir == "" {
		return fmt.Errorf("--import-legacy needs --lightning-dir (to import a backup without one, use backup-cli import)")
	}
	lockPath, hasOld, err := legacyLockOf(o.lightningDir)
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	path, done, err := legacySource(ctx, o.importLegacy, o.tmpDir, stderr)
	if err != nil {
		return err
	}
	defer done()
	if err := checkLiveVersion(cmd, o.lightningDir, o.importLegacy, path); err != nil {
		return err
	}
	st, created, secrets, err := g.initStore(ctx, o, url)
	if err != nil {
		return err
	}
	defer st.Close()
	keyPath, undo, err := pluginKey(ctx, st, o.lightningDir, g.keys.unlock.KeyFile)
	if err != nil {
		return err
	}
	out, err := importLegacyFile(ctx, st, o.node, o.importLegacy, path, o.tmpDir, stderr)
	if err != nil {
		undo()
		return err
	}
	out.Store, out.StoreCreated = st.Location(), created
	res := initImportResult{importResult: out, LockFile: lockPath, Encrypted: st.Keyring() != nil, KeyFile: keyPath}
	if hasOld {
		res.LegacyLockFile = lockPath + ".legacy"
	}
	if res.Secrets, err = storeSecrets(ctx, st, o.node, secrets); err != nil {
		return err
	}
	if err := switchLocks(g, res, url, o.node); err != nil {
		return err
	}
	warnKeepKey(stderr, url, res.Encrypted, res.KeyFile)
	if g.json {
		return printJSON(stdout, res)
	}
	printImport(stdout, out)
	printInitKeys(stdout, res.KeyFile, res.Secrets)
	if hasOld {
		fmt.Fprintf(stdout, "Renamed the Python plugin's lock file to %s\n", res.LegacyLockFile)
	}
	fmt.Fprintf(stdout, "Wrote %s; now point lightningd's important-plugin= at this project's backup plugin and start it\n", lockPath)
	return nil
}

// legacyLockOf checks the lightning directory before an import: its
// backup.lock, if any, must be the Python plugin's (hasOld), and no earlier
// switch may have left backup.lock.legacy.
func legacyLockOf(lightningDir string) (lockPath string, hasOld bool, err error) {
	if fi, err := os.Stat(lightningDir); err != nil || !fi.IsDir() {
		return "", false, fmt.Errorf("lightning directory %s does not exist or is not a directory", lightningDir)
	}
	lockPath = filepath.Join(lightningDir, "backup.lock")
	if l, err := readLock(lockPath); err == nil {
		if !isPythonLock(l) {
			return "", false, fmt.Errorf("%s is not the Python backup plugin's lock file (it names node %q of %s): the directory is set up for this backup already", lockPath, l.Node, l.BackendURL)
		}
		hasOld = true
	} else if !isNotExist(err) {
		return "", false, fmt.Errorf("read %s: %w (move it away if it is not the Python backup plugin's)", lockPath, err)
	}
	if hasOld {
		if _, err := os.Lstat(lockPath + ".legacy"); err == nil {
			return "", false, fmt.Errorf("%s.legacy exists: a switch from the Python plugin was started before; move it away to switch again", lockPath)
		}
	}
	return lockPath, hasOld, nil
}

// checkLiveVersion compares the data_version of the lightning directory's
// database (if it has one) with the newest version of the legacy backup at
// path (read from url): the plugin continues from the backup, so a database ahead of it
// (changes the backup misses) is refused, as is one more than a change
// behind it (the database is older than its backup). One behind is the
// Python plugin's "last change not applied": lightningd re-sends it and the
// plugin replaces it.
func checkLiveVersion(cmd *cobra.Command, lightningDir, url, path string) error {
	dbPath := filepath.Join(lightningDir, "lightningd.sqlite3")
	if !fileExists(dbPath) {
		return nil
	}
	f, err := legacy.OpenFile(path)
	if err != nil {
		return err
	}
	backup := f.Header().Version
	f.Close()
	live, _, err := history.LiveDataVersion(cmd.Context(), dbPath)
	if err != nil {
		return fmt.Errorf("%w (stop lightningd and run init again; nothing was imported)", err)
	}
	switch {
	case live > backup:
		return fmt.Errorf("%s is at data_version %d but the legacy backup %s ends at %d: the backup misses %d changes, so the node cannot continue from it (nothing was imported). Set the node up from its database instead: backup-cli init --lightning-dir %s STORE_URL after moving the Python plugin's backup.lock away; keep the old backup's history with backup-cli import --node old-history %s STORE_URL",
			dbPath, live, url, backup, live-backup, lightningDir, url)
	case live+1 < backup:
		return fmt.Errorf("%s is at data_version %d but the legacy backup %s is at %d: the database is older than its backup (restored from an old copy?) and lightningd would run on old state (nothing was imported). Restore the newest state from the backup (backup-cli restore of a copy of its .dbak file) and compare before switching",
			dbPath, live, url, backup)
	}
	return nil
}

// switchLocks renames the Python plugin's lock file to
// backup.lock.legacy (if there is one) and writes this plugin's.
func switchLocks(g *globals, res initImportResult, url, node string) error {
	if res.LegacyLockFile != "" {
		if err := os.Rename(res.LockFile, res.LegacyLockFile); err != nil {
			return fmt.Errorf("node %q was imported, but renaming the Python plugin's %s to %s failed: %w; rename it by hand, then write %s as {\"backend_url\": %q, \"node\": %q} (mode 0600)",
				node, res.LockFile, res.LegacyLockFile, err, res.LockFile, url, node)
		}
	}
	return writeNodeLock(g, res.LockFile, url, node, res.KeyFile)
}

// initImportResult is what init --import-legacy prints with --json.
type initImportResult struct {
	importResult
	LockFile       string   `json:"lock_file"`
	LegacyLockFile string   `json:"legacy_lock_file,omitempty"`
	Encrypted      bool     `json:"encrypted"`
	KeyFile        string   `json:"key_file,omitempty"`
	Secrets        []string `json:"secrets,omitempty"`
}
