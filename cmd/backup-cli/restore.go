package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/clnbackup/backup/internal/units"
	"github.com/clnbackup/backup/legacy"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/spf13/cobra"
)

// restoreOpts are restore's flags.
type restoreOpts struct {
	node     string
	seq      uint64 // --manifest
	version  uint32
	allowOld bool
	// versionSet: --version was given (data_version 0 is a state too).
	versionSet bool
	// timeArg is --time as given; at is the time it means (zero: not
	// chosen).
	timeArg string
	at      time.Time
	// withSecrets writes the node's stored secrets (hsm_secret) beside
	// the database (--with-secrets).
	withSecrets bool
}

// newRestoreCmd declares restore's flags and help; runRestore does the work.
func newRestoreCmd(g *globals) *cobra.Command {
	o := &restoreOpts{}
	cmd := &cobra.Command{
		Use:   "restore [--node NAME] [--manifest SEQ | --version N | --time T] URL DEST",
		Short: "Restore a node's database from the store",
		Long: `restore rebuilds a node's lightningd.sqlite3 from the store at URL into DEST.
DEST is a file, or a directory (then DEST/lightningd.sqlite3); an existing
file is never replaced.

By default it restores the newest state the store holds: the newest manifest
plus every change recorded after it. --manifest restores exactly one restore
point (see backup-cli list); --version restores the state at that
data_version; --time restores the newest state whose last change the plugin
received at or before T (RFC 3339, e.g. 2026-12-01T14:00:00Z, or a duration
meaning that long ago: 90m, 2h, 3d, 1d12h); a T before the oldest state the
store holds is refused, naming it. A Lightning node started on an old state can lose its channel
funds to penalty transactions: restoring an older state prints a warning, and
restoring it into a lightning directory needs --allow-old-state.

The database is written to a temporary file, checked with PRAGMA
integrity_check and fsynced before it takes the name DEST.

URL may also name a backup file of the Python backup plugin
(file:///path/backup.dbak, format v1): it restores the node's committed state.
--node may be left out when the store holds one node.

An encrypted store is opened with --passphrase-file, --key-file (a key file,
or the master key of key export, which opens the store even with every key
object lost), $CLNBACKUP_PASSPHRASE_FILE, or a passphrase asked on the
terminal. --with-secrets also writes the node's hsm_secret (and
emergency.recover) that init --include-hsm-secret stored, beside the
database, mode 0400; an existing one is never replaced.`,
		Example: `  backup-cli restore file:///mnt/backup/store ~/.lightning/bitcoin
  backup-cli restore --node alice --manifest 3 file:///mnt/backup/store /tmp/alice-3.sqlite3
  backup-cli restore --node alice --time 2h file:///mnt/backup/store /tmp/alice-2h-ago.sqlite3
  backup-cli restore file:///mnt/old/backup.dbak /tmp/restored.sqlite3
  backup-cli restore --key-file /media/usb/store.master.key --with-secrets file:///mnt/backup/store ~/.lightning/bitcoin`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.versionSet = cmd.Flags().Changed("version")
			if cmd.Flags().Changed("time") {
				at, err := parseRestoreTime(o.timeArg, time.Now())
				if err != nil {
					return err
				}
				o.at = at
			}
			return runRestore(cmd, g, o, args[0], args[1])
		},
	}
	cmd.Flags().StringVar(&o.node, "node", "", "node to restore (may be left out when the store holds one node)")
	cmd.Flags().Uint64Var(&o.seq, "manifest", 0, "restore exactly this restore point (manifest sequence number)")
	cmd.Flags().Uint32Var(&o.version, "version", 0, "restore the state at this data_version")
	cmd.Flags().StringVar(&o.timeArg, "time", "", "restore the newest state received at or before T (RFC 3339, or a duration ago: 90m, 2h, 3d)")
	cmd.Flags().BoolVar(&o.allowOld, "allow-old-state", false, "allow restoring an older state into a lightning directory")
	cmd.Flags().BoolVar(&o.withSecrets, "with-secrets", false, "also write the node's hsm_secret (and emergency.recover) stored by init --include-hsm-secret beside the database (encrypted stores)")
	return cmd
}

// runRestore checks the restore point asked for and the target, then
// restores from a legacy backup file or from a store, as URL names.
func runRestore(cmd *cobra.Command, g *globals, o *restoreOpts, url, destArg string) error {
	chosen := 0
	for _, set := range []bool{o.versionSet, o.seq != 0, !o.at.IsZero()} {
		if set {
			chosen++
		}
	}
	if chosen > 1 {
		return fmt.Errorf("--manifest, --version and --time are exclusive: choose one restore point")
	}
	dest, inLightningDir, err := restoreTarget(destArg)
	if err != nil {
		return err
	}
	u, err := store.ParseURL(url)
	if err != nil {
		return err
	}
	if fileExists(u.Path) {
		return restoreLegacy(cmd, g, o, u.Path, dest)
	}
	return restoreStore(cmd, g, o, url, dest, inLightningDir)
}

// restoreLegacy restores the committed state of a Python-plugin backup
// file, which holds one node and no restore points to choose from.
func restoreLegacy(cmd *cobra.Command, g *globals, o *restoreOpts, path, dest string) error {
	ctx := cmd.Context()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	if !legacy.Detect(path) {
		return fmt.Errorf("%s is a file but not a backup file of the Python backup plugin (format v1), nor a store", path)
	}
	if o.node != "" || o.seq != 0 || o.versionSet || !o.at.IsZero() || o.withSecrets {
		return fmt.Errorf("--node, --manifest, --version, --time and --with-secrets do not apply to a legacy backup file (it holds only its committed state): drop them")
	}
	bar := newProgress(stderr, "restore")
	res, err := history.RestoreLegacy(ctx, path, dest, bar.fn())
	bar.done()
	if err != nil {
		return err
	}
	if g.json {
		return printJSON(stdout, res)
	}
	fmt.Fprintf(stdout, "Restored legacy backup %s (%d entries) to %s: data_version %d, %s\n", path, res.Entries, dest, res.Version, units.Bytes(res.Bytes))
	return nil
}

// restoreStore restores a node from the store at url, refusing an old
// state where a node would start from it, and warns when the state
// restored is older than the newest.
func restoreStore(cmd *cobra.Command, g *globals, o *restoreOpts, url, dest string, inLightningDir bool) error {
	ctx := cmd.Context()
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	st, err := store.Open(ctx, url, g.storeOptions())
	if err != nil {
		return err
	}
	defer st.Close()
	if o.node, err = pickNode(ctx, st, o.node); err != nil {
		return err
	}
	var secrets map[string][]byte
	if o.withSecrets {
		if secrets, err = nodeSecrets(ctx, st, o.node, filepath.Dir(dest)); err != nil {
			return err
		}
	}
	opts := history.RestoreOptions{Node: o.node, Manifest: o.seq, Dest: dest}
	if o.versionSet {
		opts.Version = &o.version
	}
	var point history.TimePoint
	if !o.at.IsZero() {
		// --time is --version of the state it maps to: the same checks
		// and the same old-state guard.
		if point, err = history.StateAt(ctx, st, o.node, o.at); err != nil {
			return err
		}
		opts.Version = &point.Version
	}
	if opts.Manifest != 0 || opts.Version != nil {
		if err := checkOldState(ctx, st, opts, inLightningDir, o.allowOld); err != nil {
			return err
		}
	}
	bar := newProgress(stderr, "restore")
	opts.Progress = bar.fn()
	res, err := history.Restore(ctx, st, opts)
	bar.done()
	if err != nil {
		return err
	}
	written, err := writeNodeSecrets(filepath.Dir(dest), secrets)
	if err != nil {
		return fmt.Errorf("the database was restored to %s, but %w", dest, err)
	}
	if g.json {
		out := restoreJSON{RestoreResult: res, Secrets: written}
		if !o.at.IsZero() {
			at, received := o.at.UTC(), point.Received.UTC()
			out.Time, out.Received, out.From = &at, &received, point.From
		}
		return printJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "Restored node %q manifest %d at data_version %d to %s (%s, %d changes applied after the snapshot)\n",
		res.Node, res.Manifest, res.Version, res.Dest, units.Bytes(res.Bytes), res.Changes)
	if !o.at.IsZero() {
		fmt.Fprintf(stdout, "This is the newest state received at or before %s: its last change was received at %s (%s)\n",
			o.at.UTC().Format(time.RFC3339Nano), point.Received.UTC().Format(time.RFC3339Nano), point.From)
	}
	for _, p := range written {
		fmt.Fprintf(stdout, "Wrote %s (mode 0400)\n", p)
	}
	if res.Version < res.NewestVersion {
		fmt.Fprintf(stderr, "WARNING: this is an OLD state (data_version %d; the store holds %d). Starting a node on it can broadcast revoked channel states and lose funds.\n", res.Version, res.NewestVersion)
	}
	return nil
}

// restoreTarget resolves DEST: a directory means DEST/lightningd.sqlite3.
// inLightningDir reports a target that a node would start from.
func restoreTarget(arg string) (dest string, inLightningDir bool, err error) {
	dest = arg
	if st, err := os.Stat(arg); err == nil && st.IsDir() {
		dest = filepath.Join(arg, "lightningd.sqlite3")
		inLightningDir = true
	}
	if _, err := os.Lstat(dest); err == nil {
		return "", false, fmt.Errorf("restore target %s exists: refusing to overwrite it (move it away or choose another target)", dest)
	}
	dir := filepath.Dir(dest)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return "", false, fmt.Errorf("restore target directory %s does not exist", dir)
	}
	if fileExists(filepath.Join(dir, "backup.lock")) || fileExists(filepath.Join(dir, "hsm_secret")) {
		inLightningDir = true
	}
	return dest, inLightningDir, nil
}

// checkOldState refuses to put an old state where a node would start from it.
func checkOldState(ctx context.Context, st *store.Store, opts history.RestoreOptions, inLightningDir, allow bool) error {
	newest, err := history.NewestVersion(ctx, st, opts.Node)
	if err != nil {
		return err
	}
	target := newest
	if opts.Version != nil {
		target = *opts.Version
	} else if opts.Manifest != 0 {
		m, err := st.Manifest(ctx, opts.Node, opts.Manifest)
		if err != nil {
			return err
		}
		target = m.LastVersion()
	}
	if target < newest && inLightningDir && !allow {
		return fmt.Errorf("refusing to restore the old state at data_version %d (the store holds %d) into a lightning directory: a node started on it can lose its channel funds; restore elsewhere to inspect it, or add --allow-old-state if you are sure", target, newest)
	}
	return nil
}

// pickNode returns the node to act on: the flag, or the store's only node.
func pickNode(ctx context.Context, st *store.Store, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	nodes, err := st.Nodes(ctx)
	if err != nil {
		return "", err
	}
	switch len(nodes) {
	case 0:
		return "", fmt.Errorf("store %s holds no node: add one with backup-cli init", st.Location())
	case 1:
		return nodes[0], nil
	}
	return "", fmt.Errorf("store %s holds %d nodes (%s): choose one with --node", st.Location(), len(nodes), strings.Join(nodes, ", "))
}

// restoreJSON is restore --json: the restore's result, plus, with --time,
// the time asked for and when the state restored was received, so that a
// script can check what it got, and the secrets written (--with-secrets).
type restoreJSON struct {
	history.RestoreResult
	// Time is --time, resolved (a duration is taken back from now).
	Time *time.Time `json:"time,omitempty"`
	// Received is when the plugin received the restored state's last
	// change (or when its restore point was written): at or before Time.
	Received *time.Time `json:"received,omitempty"`
	// From names where Received comes from: "record SEQ" or "manifest SEQ".
	From string `json:"received_from,omitempty"`
	// Secrets are the files --with-secrets wrote.
	Secrets []string `json:"secrets,omitempty"`
}

// parseRestoreTime parses --time: an RFC 3339 time, or a duration meaning
// that long before now, in Go's units (90m, 2h30m) plus d for days of 24
// hours (3d, 1d12h, 1.5d).
func parseRestoreTime(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := parseAgo(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--time %q is neither an RFC 3339 time (2026-12-01T14:00:00Z) nor a duration ago (90m, 2h, 3d): %v", s, err)
	}
	return now.Add(-d), nil
}

// parseAgo parses a non-negative duration with an optional leading days
// part (NUMBERd).
func parseAgo(s string) (time.Duration, error) {
	var d time.Duration
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		days, err := strconv.ParseFloat(s[:i], 64)
		if err != nil || days < 0 || days > 365*100 {
			return 0, fmt.Errorf("bad number of days %q", s[:i])
		}
		d, rest = time.Duration(days*24*float64(time.Hour)), s[i+1:]
		if rest == "" {
			return d, nil
		}
	}
	r, err := time.ParseDuration(rest)
	if err != nil {
		return 0, err
	}
	if r < 0 {
		return 0, fmt.Errorf("a duration ago cannot be negative")
	}
	return d + r, nil
}
