package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/crypt"
)

// Unlock is what opens an encrypted store's master key (issue 13). The zero
// Unlock opens unencrypted stores only: opening an encrypted one fails
// wrapping ErrLocked, with a message naming --passphrase-file, --key-file
// and $CLNBACKUP_PASSPHRASE_FILE.
type Unlock struct {
	// Passphrase is tried against the store's passphrase key objects.
	Passphrase []byte
	// KeyFile is a parsed key file: a master key file opens the store
	// by itself (even with every key object lost); an unlock key file
	// opens the keyfile key object it was made for.
	KeyFile *crypt.KeyFile
	// Prompt asks for a passphrase when neither of the above is given and
	// the store turns out to be encrypted (a terminal); nil fails instead.
	// location names the store, for the question.
	Prompt func(location string) ([]byte, error)
}

// Encryption makes Create write a new encrypted store (format 3) whose
// fresh master key is kept wrapped by Passphrase.
type Encryption struct {
	Passphrase []byte
	// KDF are the argon2id parameters (crypt.DefaultKDFParams when zero).
	KDF crypt.KDFParams
	// Label names the first key object (shown by key list).
	Label string
}

// ErrLocked is wrapped when an encrypted store is opened without a key.
var ErrLocked = errors.New("the store is encrypted and no passphrase or key file was given")

// Keyring is an open encrypted store's keys: its master key and the key
// objects that keep it wrapped, and the node secrets (hsm_secret) that only
// an encrypted store may hold. Store.Keyring is nil for unencrypted stores
// and for a store server's keyless view of an encrypted one.
type Keyring struct {
	st       *Store
	master   crypt.MasterKey
	openedBy string
	keys     *crypt.Keys
}

// Master is the store's master key (for key export and new key objects).
func (k *Keyring) Master() crypt.MasterKey { return k.master }

// OpenedBy is the id of the key object that opened the store ("" when a
// master key file did).
func (k *Keyring) OpenedBy() string { return k.openedBy }

// List reads every key object of the store, sorted by id.
func (k *Keyring) List(ctx context.Context) ([]*crypt.KeyObject, error) {
	return listKeyObjects(ctx, k.st.raw)
}

// Add stores a key object (made with crypt.WrapWithPassphrase or
// crypt.WrapWithKeyFile around Master) as keys/<id>; it refuses one that
// does not wrap this store's master key.
func (k *Keyring) Add(ctx context.Context, o *crypt.KeyObject) error {
	if err := o.Check(); err != nil {
		return fmt.Errorf("add key object to store %s: %w", k.st.Location(), err)
	}
	if o.Master != k.master.Fingerprint() {
		return fmt.Errorf("add key object %s to store %s: it wraps master key %s, the store's is %s", o.ID, k.st.Location(), o.Master, k.master.Fingerprint())
	}
	return putKeyObject(ctx, k.st.raw, o)
}

// ErrLastKey is wrapped when removing a key object would leave none.
var ErrLastKey = errors.New("it is the store's last key object: add another key first (backup-cli key add), or the store could only be opened with an exported master key")

// Remove deletes key object id; it refuses to remove the last one.
func (k *Keyring) Remove(ctx context.Context, id string) error {
	objs, err := k.List(ctx)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(objs, func(o *crypt.KeyObject) bool { return o.ID == id })
	switch {
	case i < 0:
		return fmt.Errorf("remove key object %q from store %s: %w (backup-cli key list shows the ids)", id, k.st.Location(), backend.ErrNotFound)
	case len(objs) == 1:
		return fmt.Errorf("remove key object %q from store %s: %w", id, k.st.Location(), ErrLastKey)
	}
	body, err := objs[i].Marshal()
	if err != nil {
		return err
	}
	if err := k.st.raw.Delete(ctx, KeysPrefix+id); err != nil {
		return fmt.Errorf("remove key object %q from store %s: %w", id, k.st.Location(), err)
	}
	// Two removals at once may each have seen the other's key: whichever
	// then finds none left puts its own back, so the store never ends
	// with no key object (at worst both keys stay).
	left, err := k.List(ctx)
	if err == nil && len(left) > 0 {
		return nil
	}
	if perr := k.st.raw.PutIfAbsent(ctx, KeysPrefix+id, body); perr != nil && !errors.Is(perr, backend.ErrExists) {
		return fmt.Errorf("remove key object %q from store %s: another removal ran at once and the key could not be put back (%v): restore it with backup-cli key add, or open the store with the exported master key", id, k.st.Location(), perr)
	}
	if err != nil {
		return fmt.Errorf("remove key object %q from store %s: put back, since the keys left could not be listed: %w", id, k.st.Location(), err)
	}
	return fmt.Errorf("remove key object %q from store %s: %w (another key was removed at the same time; the key was put back)", id, k.st.Location(), ErrLastKey)
}

// Node secrets the store keeps, by name.
var secretNames = []string{"hsm_secret", "emergency.recover"}

// maxSecretSize bounds a node secret (hsm_secret is 32 bytes or a
// mnemonic-encrypted 73; emergency.recover a few KiB).
const maxSecretSize = 1 << 20

// maxSecretVersions bounds the secret objects of a node a reader lists
// (old versions stay until their node is forgotten).
const maxSecretVersions = 4096

// secretPrefix is where a node's secrets are kept: one object per version,
// nodes/<node>/secrets/<name>-<generation, 20 digits>; the newest wins, so
// replacing a secret never leaves a moment with none.
func secretPrefix(node string) string { return nodePrefix(node) + "secrets/" }

// PutSecret stores a node secret (name "hsm_secret" or
// "emergency.recover") sealed like every object of the store, replacing
// an earlier one.
func (k *Keyring) PutSecret(ctx context.Context, node, name string, data []byte) error {
	if err := manifest.ValidNodeName(node); err != nil {
		return err
	}
	if !slices.Contains(secretNames, name) {
		return fmt.Errorf("store secret %q of node %q: only %s are kept", name, node, strings.Join(secretNames, " and "))
	}
	if len(data) == 0 || len(data) > maxSecretSize {
		return fmt.Errorf("store secret %s of node %q: %d bytes (want 1 to %d)", name, node, len(data), maxSecretSize)
	}
	gens, err := k.secretGens(ctx, node)
	if err != nil {
		return err
	}
	gen := uint64(1)
	if old := gens[name]; len(old) > 0 {
		gen = old[len(old)-1] + 1
	}
	if err := k.st.be.PutIfAbsent(ctx, secretName(node, name, gen), data); err != nil {
		return fmt.Errorf("store secret %s of node %q in %s: %w", name, node, k.st.Location(), err)
	}
	for _, g := range gens[name] {
		// Older versions: best effort (a store server lets a node token
		// delete only its leases; they are small and sealed).
		_ = k.st.be.Delete(ctx, secretName(node, name, g))
	}
	return nil
}

func secretName(node, name string, gen uint64) string {
	return fmt.Sprintf("%s%s-%020d", secretPrefix(node), name, gen)
}

// secretGens lists the generations of each of a node's secrets, oldest
// first.
func (k *Keyring) secretGens(ctx context.Context, node string) (map[string][]uint64, error) {
	return secretGenerations(ctx, k.st.be, node)
}

func secretGenerations(ctx context.Context, be backend.Backend, node string) (map[string][]uint64, error) {
	gens := map[string][]uint64{}
	n := 0
	err := be.List(ctx, secretPrefix(node), func(in backend.Info) error {
		name, gen, ok := parseSecretName(strings.TrimPrefix(in.Name, secretPrefix(node)))
		if !ok {
			return nil
		}
		if n++; n > maxSecretVersions {
			return fmt.Errorf("more than %d secret objects under %s (each init --include-hsm-secret adds one): the store was filled by something else; remove the extra objects", maxSecretVersions, secretPrefix(node))
		}
		gens[name] = append(gens[name], gen)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the secrets of node %q: %w", node, err)
	}
	for _, g := range gens {
		slices.Sort(g)
	}
	return gens, nil
}

// parseSecretName splits "<name>-<20 digits>".
func parseSecretName(file string) (name string, gen uint64, ok bool) {
	i := strings.LastIndexByte(file, '-')
	if i < 0 || !slices.Contains(secretNames, file[:i]) {
		return "", 0, false
	}
	gen, ok = twentyDigits(file[i+1:])
	return file[:i], gen, ok
}

// Secrets reads a node's secrets by name (none: an empty map).
func (k *Keyring) Secrets(ctx context.Context, node string) (map[string][]byte, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return nil, err
	}
	gens, err := k.secretGens(ctx, node)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for name, g := range gens {
		obj := secretName(node, name, g[len(g)-1])
		// Sized before it is read: the store host cannot make a restore
		// load a huge object as a secret.
		data, err := backend.ReadWhole(ctx, k.st.be, obj, maxSecretSize)
		if err != nil {
			return nil, fmt.Errorf("read secret %s of node %q: %w", name, node, err)
		}
		out[name] = data
	}
	return out, nil
}

// SecretNames lists the secrets a node keeps in the store, sorted (for
// list); it needs no key and opens nothing (the names are not sealed).
func SecretNames(ctx context.Context, st *Store, node string) ([]string, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return nil, err
	}
	gens, err := secretGenerations(ctx, st.raw, node)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(gens))
	for name := range gens {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// Keyring is the store's keys, or nil when the store is not encrypted (or
// is opened keyless by a store server).
func (s *Store) Keyring() *Keyring { return s.keyring }
