package store

import (
	"context"
	"errors"

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

// errNotWired is returned by the parts of encryption not yet built.
var errNotWired = errors.New("encryption is not wired yet")

// Keyring is an open encrypted store's keys: its master key and the key
// objects that keep it wrapped, and the node secrets (hsm_secret) that only
// an encrypted store may hold. Store.Keyring is nil for unencrypted stores
// and for a store server's keyless view of an encrypted one.
type Keyring struct {
	st       *Store
	master   crypt.MasterKey
	openedBy string
}

// Master is the store's master key (for key export and new key objects).
func (k *Keyring) Master() crypt.MasterKey { return k.master }

// OpenedBy is the id of the key object that opened the store ("" when a
// master key file did).
func (k *Keyring) OpenedBy() string { return k.openedBy }

// List reads every key object of the store, sorted by id.
func (k *Keyring) List(ctx context.Context) ([]*crypt.KeyObject, error) {
	return nil, errNotWired
}

// Add stores a key object (made with crypt.WrapWithPassphrase or
// crypt.WrapWithKeyFile around Master) as keys/<id>; it refuses one that
// does not wrap this store's master key.
func (k *Keyring) Add(ctx context.Context, o *crypt.KeyObject) error {
	return errNotWired
}

// Remove deletes key object id; it refuses to remove the last one.
func (k *Keyring) Remove(ctx context.Context, id string) error {
	return errNotWired
}

// PutSecret stores a node secret (name "hsm_secret" or
// "emergency.recover") sealed like every object of the store, replacing
// an earlier one.
func (k *Keyring) PutSecret(ctx context.Context, node, name string, data []byte) error {
	return errNotWired
}

// Secrets reads a node's secrets by name (none: an empty map).
func (k *Keyring) Secrets(ctx context.Context, node string) (map[string][]byte, error) {
	return nil, errNotWired
}

// Keyring is the store's keys, or nil when the store is not encrypted (or
// is opened keyless by a store server).
func (s *Store) Keyring() *Keyring { return nil }
