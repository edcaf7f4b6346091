package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/crypt"
	"github.com/clnbackup/backup/store/remote"
)

// pluginKeyName is the plugin's unlock key file, next to backup.lock in
// the lightning directory, for a node of an encrypted store.
const pluginKeyName = "backup.key"

// nodeSecretNames are the node's files init --include-hsm-secret stores
// and restore --with-secrets writes back: hsm_secret is required,
// emergency.recover is stored when present.
var nodeSecretNames = []string{"hsm_secret", "emergency.recover"}

// maxSecretFile bounds a node secret read from the lightning directory
// (hsm_secret is 32 bytes, or 73 encrypted; emergency.recover a few KiB).
const maxSecretFile = 1 << 20

// keepKeyOffNode is what init says, once, when it leaves an encrypted
// store or a plugin key file behind.
const keepKeyOffNode = `
IMPORTANT: this store is encrypted. Nothing in it can be restored without its
passphrase or an exported master key, and a backup that needs a key lost
with the node is worth nothing. Keep the passphrase, or the master key
printed by
    backup-cli key export %s
somewhere OFF this node (a password manager, paper in a safe).
`

// openInitStore opens or creates the store for init. With encrypt, a new
// store is created encrypted (its passphrase from --passphrase-file or
// $CLNBACKUP_PASSPHRASE_FILE, else asked twice on a terminal); an existing
// encrypted one is opened as usual and an existing plain one is refused,
// since a store cannot be encrypted in place. needKeyring refuses a plain
// store without creating one (--include-hsm-secret). np is where a new
// store's passphrase comes from.
func (g *globals) openInitStore(ctx context.Context, url string, opts store.Options, encrypt, needKeyring bool, np newPassSource) (*store.Store, bool, error) {
	u, err := store.ParseURL(url)
	if err != nil {
		return nil, false, err
	}
	if !encrypt && !needKeyring {
		return store.Create(ctx, url, opts)
	}
	if encrypt && u.Scheme == "socket" {
		return nil, false, fmt.Errorf("init --encrypt %s: a store server creates and holds its own store, so it cannot be encrypted from here: on the server's machine run `backup-cli init --encrypt --store-only file:///PATH` before starting `backup-cli server file:///PATH`, then add nodes through the server without --encrypt", url)
	}
	probe := opts
	probe.Unlock = store.Unlock{}
	st, err := store.Open(ctx, url, probe)
	switch {
	case err == nil:
		if st.Keyring() == nil {
			st.Close()
			if !encrypt {
				return nil, false, fmt.Errorf("store %s is not encrypted: --include-hsm-secret stores the node's secrets only in an encrypted store (create one with init --encrypt NEW_URL and move the nodes with `backup-cli copy --dst-encrypt %s NEW_URL`)", url, url)
			}
			return nil, false, fmt.Errorf("store %s exists and is not encrypted: a store cannot be encrypted in place; create a new encrypted store and copy the nodes into it: `backup-cli copy --dst-encrypt %s NEW_URL`", url, url)
		}
		return st, false, nil
	case errors.Is(err, store.ErrLocked):
		st, err := store.Open(ctx, url, opts)
		return st, false, err
	case !encrypt:
		return nil, false, fmt.Errorf("%w (--include-hsm-secret needs an encrypted store: add --encrypt to create one)", err)
	}
	pass, err := g.keys.newPassphrase(np.file, np.env, np.flag, "the new store "+url)
	if err != nil {
		return nil, false, err
	}
	opts.Encrypt = &store.Encryption{Passphrase: pass, Label: keyLabel("passphrase of init")}
	opts.Unlock = store.Unlock{Passphrase: pass}
	st, created, err := store.Create(ctx, url, opts)
	if err != nil {
		return nil, false, err
	}
	if st.Keyring() == nil {
		st.Close()
		return nil, false, fmt.Errorf("store %s was opened but is not encrypted (this build cannot create encrypted stores?): refusing to write the node's data in plain text", url)
	}
	return st, created, nil
}

// newPassSource is where a new passphrase comes from (keyFlags.newPassphrase):
// a file, or $CLNBACKUP_PASSPHRASE_FILE when env, else the terminal; flag
// names the file's flag in messages.
type newPassSource struct {
	file string
	env  bool
	flag string
}

// keyLabel labels a key object with what it is for and the host that
// made it (key list shows it).
func keyLabel(what string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return what
	}
	l := what + " on " + host
	if len(l) > 200 {
		l = l[:200]
	}
	return l
}

// pluginKey makes the plugin's key file DIR/backup.key for a node of an
// encrypted store, before the node is added (so that a refusal leaves
// nothing behind): a copy of the unlock key file the store was opened with
// (--key-file: one made by key add --new-key-file, e.g. on the store's
// machine for a node whose server token may not add keys), else a new one
// whose key object it adds. undo takes it back if the node is not added.
func pluginKey(ctx context.Context, st *store.Store, lightningDir string, given *crypt.KeyFile) (keyPath string, undo func(), err error) {
	kr := st.Keyring()
	if kr == nil || lightningDir == "" {
		return "", func() {}, nil
	}
	if keyPath, err = filepath.Abs(filepath.Join(lightningDir, pluginKeyName)); err != nil {
		return "", nil, err
	}
	if given != nil && given.Kind == crypt.KeyFileUnlock {
		if err := writeSecretFile(keyPath, []byte(given.Format()), 0o600); err != nil {
			return "", nil, fmt.Errorf("copy the key file of --key-file for the plugin: %w (nothing was written)", err)
		}
		return keyPath, func() { os.Remove(keyPath) }, nil
	}
	o, err := addKeyFile(ctx, kr, keyPath, keyLabel("plugin key file "+keyPath))
	if err != nil {
		hint := ""
		if errors.Is(err, remote.ErrDenied) {
			hint = "; a node token may not add keys: make the node a key file on the store's machine (or with an admin token), `backup-cli key add --new-key-file NODE.key URL`, and give it to init with --key-file NODE.key"
		}
		return "", nil, fmt.Errorf("make the plugin's key file: %w (nothing was written)%s", err, hint)
	}
	return keyPath, func() {
		kr.Remove(ctx, o.ID)
		os.Remove(keyPath)
	}, nil
}

// storeSecrets stores the node's secrets (--include-hsm-secret) once the
// node is in the store, and returns their names.
func storeSecrets(ctx context.Context, st *store.Store, node string, secrets map[string][]byte) ([]string, error) {
	var stored []string
	for _, name := range nodeSecretNames {
		data, ok := secrets[name]
		if !ok {
			continue
		}
		if err := st.Keyring().PutSecret(ctx, node, name, data); err != nil {
			return stored, fmt.Errorf("node %q was added to the store, but storing its %s failed: %w; backup.lock was not written: fix the cause and run init again with another --node name (the node's backup is otherwise complete)", node, name, err)
		}
		stored = append(stored, name)
	}
	return stored, nil
}

// addKeyFile writes a new unlock key file at path (mode 0600, never over
// an existing file) and adds the key object it opens to the store; the
// file is removed again if the store refuses the key object.
func addKeyFile(ctx context.Context, kr *store.Keyring, path, label string) (*crypt.KeyObject, error) {
	kf := crypt.NewUnlockKeyFile()
	o, err := crypt.WrapWithKeyFile(kr.Master(), label, kf)
	if err != nil {
		return nil, err
	}
	if err := writeSecretFile(path, []byte(kf.Format()), 0o600); err != nil {
		return nil, err
	}
	if err := kr.Add(ctx, o); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("add key object %s: %w (%s was removed again)", o.ID, err, path)
	}
	return o, nil
}

// readNodeSecrets reads the node's secrets from the lightning directory
// for --include-hsm-secret, before anything is written: hsm_secret must be
// there, emergency.recover is taken when present.
func readNodeSecrets(lightningDir string) (map[string][]byte, error) {
	if lightningDir == "" {
		return nil, errors.New("--include-hsm-secret needs --lightning-dir (the directory holding hsm_secret)")
	}
	out := map[string][]byte{}
	for i, name := range nodeSecretNames {
		path := filepath.Join(lightningDir, name)
		f, err := os.Open(path)
		if i > 0 && isNotExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("--include-hsm-secret: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("--include-hsm-secret: read %s: %w", path, err)
		}
		if len(data) == 0 || len(data) > maxSecretFile {
			return nil, fmt.Errorf("--include-hsm-secret: %s has %d bytes: not a node's %s", path, len(data), name)
		}
		out[name] = data
	}
	return out, nil
}

// writeSecretFile writes data to a new file at path with mode perm, durably
// (fsync of the file and its directory); an existing file is never
// replaced.
func writeSecretFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists: refusing to overwrite it (move it away, or choose another file)", path)
		}
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm) // exactly perm, whatever the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// nodeSecrets reads the secrets a node carries, for restore
// --with-secrets, before anything is restored: it refuses a plain store, a
// node without secrets, and a directory that has one of them already.
func nodeSecrets(ctx context.Context, st *store.Store, node, dir string) (map[string][]byte, error) {
	kr := st.Keyring()
	if kr == nil {
		return nil, fmt.Errorf("--with-secrets: store %s is not encrypted, and only encrypted stores hold node secrets (nothing was restored)", st.Location())
	}
	secrets, err := kr.Secrets(ctx, node)
	if err != nil {
		return nil, fmt.Errorf("--with-secrets: read the secrets of node %q: %w (nothing was restored)", node, err)
	}
	if len(secrets) == 0 {
		return nil, fmt.Errorf("--with-secrets: node %q carries no secrets (init --include-hsm-secret stores them); restore without --with-secrets and bring hsm_secret from where you keep it (nothing was restored)", node)
	}
	for name := range secrets {
		if !slices.Contains(nodeSecretNames, name) {
			return nil, fmt.Errorf("--with-secrets: node %q carries a secret named %q, which this program does not know (nothing was restored)", node, name)
		}
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return nil, fmt.Errorf("--with-secrets: %s exists: refusing to overwrite a node's secret (move it away, or restore into another directory; nothing was restored)", filepath.Join(dir, name))
		}
	}
	return secrets, nil
}

// writeNodeSecrets writes restored secrets into dir, mode 0400, and returns
// their paths.
func writeNodeSecrets(dir string, secrets map[string][]byte) ([]string, error) {
	var written []string
	for _, name := range nodeSecretNames {
		data, ok := secrets[name]
		if !ok {
			continue
		}
		path := filepath.Join(dir, name)
		if err := writeSecretFile(path, data, 0o400); err != nil {
			return written, fmt.Errorf("writing the node's %s failed: %w", name, err)
		}
		written = append(written, path)
	}
	return written, nil
}
