package lightningdtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/crypt"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// Node is a lightning directory set up for the backup plugin as
// `backup-cli init --lightning-dir DIR URL` leaves it: the store holds the
// node with a first restore point (a snapshot of DIR/lightningd.sqlite3, or
// an empty database when there is none), and DIR/backup.lock names the store
// and the node.
type Node struct {
	// Dir is the lightning network directory (the plugin's working directory).
	Dir string
	// StoreDir is the store's directory and URL its file:// URL (for a
	// node on a store server, StoreDir is "" and URL the socket: URL).
	StoreDir, URL string
	// Token is the store server's token for the node ("" for none).
	Token string
	// S3Credentials is the keys file of an s3:// store ("" for none),
	// which backup.lock then names.
	S3Credentials string
	// Name is the node's name in the store.
	Name string
	// Encrypt, when set before setup (SetupNodeEncrypted), creates the
	// store encrypted; setup then writes an unlock key file next to
	// backup.lock, adds its key object and names it in backup.lock
	// (key_file), as backup-cli init --lightning-dir --encrypt does.
	Encrypt *store.Encryption
	// KeyFile is that key file's path, and Unlock what opens the store
	// (the key file) for Restore, Summary and Matches.
	KeyFile string
	Unlock  store.Unlock
}

// SetupNode creates dir (if needed), the store at storeDir (if needed), the
// node name in it with its first restore point (a snapshot of
// dir/lightningd.sqlite3 if that exists, else an empty database), and
// dir/backup.lock.
func SetupNode(ctx context.Context, dir, storeDir, name string) (*Node, error) {
	storeDir, err := filepath.Abs(storeDir)
	if err != nil {
		return nil, err
	}
	n, err := SetupNodeAt(ctx, dir, "file://"+storeDir, "", name)
	if err != nil {
		return nil, err
	}
	n.StoreDir = storeDir
	return n, nil
}

// SetupNodeAt is SetupNode for the store at url (a store server's socket:
// URL, say), opened with token, which backup.lock then carries.
func SetupNodeAt(ctx context.Context, dir, url, token, name string) (*Node, error) {
	return setupNode(ctx, &Node{Dir: dir, URL: url, Token: token, Name: name})
}

// SetupNodeEncrypted is SetupNode for a new encrypted store at storeDir,
// created with enc, and the plugin's key file in dir (backup.key), which
// backup.lock names.
func SetupNodeEncrypted(ctx context.Context, dir, storeDir, name string, enc store.Encryption) (*Node, error) {
	storeDir, err := filepath.Abs(storeDir)
	if err != nil {
		return nil, err
	}
	n, err := setupNode(ctx, &Node{Dir: dir, URL: "file://" + storeDir, Name: name, Encrypt: &enc})
	if err != nil {
		return nil, err
	}
	n.StoreDir = storeDir
	return n, nil
}

// SetupNodeS3 is SetupNode for an s3:// store whose keys are in the file
// creds, which backup.lock then names (s3_credentials).
func SetupNodeS3(ctx context.Context, dir, url, creds, name string) (*Node, error) {
	return setupNode(ctx, &Node{Dir: dir, URL: url, S3Credentials: creds, Name: name})
}

func setupNode(ctx context.Context, n *Node) (*Node, error) {
	dir, err := filepath.Abs(n.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	n.Dir = dir
	token, name := n.Token, n.Name
	opts := n.options()
	if n.Encrypt != nil {
		opts.Encrypt, opts.Unlock.Passphrase = n.Encrypt, n.Encrypt.Passphrase
	}
	st, _, err := store.Create(ctx, n.URL, opts)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	db := filepath.Join(dir, "lightningd.sqlite3")
	if _, err := os.Stat(db); err != nil {
		db = ""
	}
	if _, err := history.Init(ctx, st, name, db, nil); err != nil {
		return nil, err
	}
	fields := map[string]string{"backend_url": n.URL, "node": name}
	if token != "" {
		fields["token"] = token
	}
	if n.S3Credentials != "" {
		fields["s3_credentials"] = n.S3Credentials
	}
	if n.Encrypt != nil {
		if err := n.addKeyFile(ctx, st); err != nil {
			return nil, err
		}
		fields["key_file"] = n.KeyFile
	}
	lock, err := json.MarshalIndent(fields, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "backup.lock"), append(lock, '\n'), 0o600); err != nil {
		return nil, err
	}
	return n, nil
}

func (n *Node) options() store.Options {
	return store.Options{Token: n.Token, CredentialsFile: n.S3Credentials, Unlock: n.Unlock}
}

// addKeyFile writes the plugin's unlock key file Dir/backup.key (mode
// 0600) and adds its key object to the encrypted store st.
func (n *Node) addKeyFile(ctx context.Context, st *store.Store) error {
	kr := st.Keyring()
	if kr == nil {
		return fmt.Errorf("store %s was created with Encrypt but is not encrypted", n.URL)
	}
	kf := crypt.NewUnlockKeyFile()
	o, err := crypt.WrapWithKeyFile(kr.Master(), "lightningdtest plugin key", kf)
	if err != nil {
		return err
	}
	if err := kr.Add(ctx, o); err != nil {
		return err
	}
	n.KeyFile = filepath.Join(n.Dir, "backup.key")
	if err := os.WriteFile(n.KeyFile, []byte(kf.Format()), 0o600); err != nil {
		return err
	}
	n.Unlock = store.Unlock{KeyFile: &kf}
	return nil
}

// Restore restores the node's newest state (manifest 0) or exactly restore
// point manifest into the new file dest.
func (n *Node) Restore(ctx context.Context, dest string, manifest uint64) (history.RestoreResult, error) {
	st, err := store.Open(ctx, n.URL, n.options())
	if err != nil {
		return history.RestoreResult{}, err
	}
	defer st.Close()
	return history.Restore(ctx, st, history.RestoreOptions{Node: n.Name, Manifest: manifest, Dest: dest})
}

// Summary lists the node's restore points and journal.
func (n *Node) Summary(ctx context.Context) (history.NodeSummary, error) {
	st, err := store.Open(ctx, n.URL, n.options())
	if err != nil {
		return history.NodeSummary{}, err
	}
	defer st.Close()
	return history.Summarize(ctx, st, n.Name)
}

// Model is the database lightningd holds, rebuilt from the changes it
// committed: every answered change, except that lightningd may die between
// an answer and its commit and then re-send that data_version with other
// statements, so the newest data_version's changes are kept apart (the tail)
// until a newer one arrives. Snapshot writes the state to a file.
type Model struct {
	path string
	db   *replay.DB
	tail []journal.Record
}

// NewModel starts an empty database at path (which must not exist).
func NewModel(path string) (*Model, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("model database %s exists", path)
	}
	db, err := replay.Open(path)
	if err != nil {
		return nil, err
	}
	return &Model{path: path, db: db}, nil
}

// Commit adds an answered change. A change that repeats the newest
// data_version with statements that are not all PRAGMAs replaces the
// newest data_version's changes, as lightningd's re-send after a crash
// does; a PRAGMA-only one is kept after them.
func (m *Model) Commit(r journal.Record) error {
	if len(m.tail) > 0 && r.Version == m.tail[0].Version {
		if r.PragmaOnly() {
			m.tail = append(m.tail, r)
		} else {
			m.tail = []journal.Record{r}
		}
		return nil
	}
	for _, t := range m.tail {
		if err := m.db.Apply(t); err != nil {
			return err
		}
	}
	m.tail = []journal.Record{r}
	return nil
}

// Version is the newest committed data_version (0 when none).
func (m *Model) Version() uint32 {
	if len(m.tail) == 0 {
		return 0
	}
	return m.tail[0].Version
}

// Snapshot writes to the new file dest the state lightningd's database
// would have if the changes extra were committed too (with Commit's rules).
func (m *Model) Snapshot(dest string, extra ...journal.Record) error {
	if err := copyFile(m.path, dest); err != nil {
		return err
	}
	db, err := replay.Open(dest)
	if err != nil {
		return err
	}
	var apply []journal.Record
	tail := slices.Clone(m.tail)
	for _, r := range extra {
		switch {
		case len(tail) > 0 && r.Version == tail[0].Version && r.PragmaOnly():
			tail = append(tail, r)
		case len(tail) > 0 && r.Version == tail[0].Version:
			tail = []journal.Record{r}
		default:
			apply, tail = append(apply, tail...), []journal.Record{r}
		}
	}
	for _, r := range append(apply, tail...) {
		if err := db.Apply(r); err != nil {
			db.Close()
			return err
		}
	}
	return db.Close()
}

// Close closes the model's database.
func (m *Model) Close() error { return m.db.Close() }

// copyFile copies a database file that no transaction is writing (the
// model's connection commits every change before Apply returns).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// SameDB returns nil when the databases at a and b hold the same schema and
// rows (replay.Diff), and an error listing the differences otherwise.
func SameDB(a, b string) error {
	diff, err := replay.Diff(a, b)
	if err != nil {
		return err
	}
	if len(diff) > 0 {
		return fmt.Errorf("%s and %s differ:\n%s", a, b, strings.Join(diff, "\n"))
	}
	return nil
}

// Hooks returns the db_write calls of a trace, in order.
func Hooks(entries []replay.TraceEntry) []replay.TraceEntry {
	var out []replay.TraceEntry
	for _, e := range entries {
		if e.IsHook() {
			out = append(out, e)
		}
	}
	return out
}

// Record is the trace hook as a journal record.
func Record(e replay.TraceEntry) journal.Record {
	return journal.Record{Version: e.Version, Statements: e.Writes}
}

// Matches restores the node (its newest state, or exactly restore point
// manifest) into a temporary file and compares it with the model's state
// plus the changes extra: nil when they are equal table by table.
func (n *Node) Matches(m *Model, manifest uint64, extra ...journal.Record) error {
	return n.compare(manifest, func(want string) error { return m.Snapshot(want, extra...) })
}

// compare restores restore point manifest (0: the newest state) and
// compares it with the database that build writes.
func (n *Node) compare(manifest uint64, build func(want string) error) error {
	dir, err := os.MkdirTemp("", "lightningdtest-restore")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	got, want := filepath.Join(dir, "restored.sqlite3"), filepath.Join(dir, "want.sqlite3")
	if _, err := n.Restore(context.Background(), got, manifest); err != nil {
		return err
	}
	if err := build(want); err != nil {
		return err
	}
	return SameDB(got, want)
}
