package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/crypt"
)

// EncryptedFormatVersion is the layout version of encrypted stores (issue
// 13; docs/store-format.md "Encryption (store format 3)"): version 2's
// layout with keyed chunk ids, sealed chunk bodies, sealed node objects and
// sealed journal records. Programs that handle versions up to 2 refuse it.
const EncryptedFormatVersion = 3

// MaxFormatVersion is the newest store layout version this code handles.
const MaxFormatVersion = EncryptedFormatVersion

// KeysPrefix holds the key objects of an encrypted store (keys/<id>): the
// master key wrapped by each passphrase or key file that opens the store.
// They are plaintext JSON (an opener reads them before it has a key); every
// field is authenticated by the wrapped key's envelope.
const KeysPrefix = "keys/"

// EncryptionConfig is what an encrypted store's config records, in
// plaintext: what its bodies are sealed with, and which master key opens
// it (its fingerprint, which reveals nothing of the key).
type EncryptionConfig struct {
	Cipher string `json:"cipher"` // "xchacha20poly1305"
	IDs    string `json:"ids"`    // "blake3-keyed"
	Master string `json:"master"` // crypt.MasterKey.Fingerprint
}

// maxKeyObjectsTried bounds the key objects an opener tries a secret
// against: each passphrase try costs up to seconds of KDF, and the store's
// host can add key objects.
const maxKeyObjectsTried = 32

// maxKeyObjects bounds the key objects a store may list: far above what
// operators add, low enough that a store host cannot make an opener read
// an unbounded list of them.
const maxKeyObjects = 1024

// newEncryptedConfig makes the first key object of a new encrypted store
// and fills the config's encryption record; the caller stores the key
// object before the config.
func newEncryptedConfig(cfg *Config, e *Encryption) (crypt.MasterKey, *crypt.KeyObject, error) {
	mk := crypt.NewMasterKey()
	kdf := e.KDF
	if kdf.Name == "" {
		kdf = crypt.DefaultKDFParams
	}
	label := e.Label
	if label == "" {
		label = "init"
	}
	o, err := crypt.WrapWithPassphrase(mk, label, e.Passphrase, kdf)
	if err != nil {
		return crypt.MasterKey{}, nil, err
	}
	cfg.Version = EncryptedFormatVersion
	cfg.Encryption = &EncryptionConfig{Cipher: "xchacha20poly1305", IDs: "blake3-keyed", Master: mk.Fingerprint()}
	return mk, o, nil
}

// putKeyObject stores o as keys/<id> in be.
func putKeyObject(ctx context.Context, be backend.Backend, o *crypt.KeyObject) error {
	data, err := o.Marshal()
	if err != nil {
		return err
	}
	if err := be.PutIfAbsent(ctx, KeysPrefix+o.ID, data); err != nil {
		return fmt.Errorf("store key object %s in %s: %w", o.ID, be.Location(), err)
	}
	return nil
}

// checkEncryptionConfig refuses a config whose version and encryption
// record disagree.
func checkEncryptionConfig(cfg Config) error {
	e := cfg.Encryption
	switch {
	case cfg.Version < EncryptedFormatVersion && e != nil:
		return fmt.Errorf("store format version %d records encryption, which only version %d has (damaged config)", cfg.Version, EncryptedFormatVersion)
	case cfg.Version >= EncryptedFormatVersion && e == nil:
		return fmt.Errorf("store format version %d records no encryption (damaged config)", cfg.Version)
	case e != nil && (e.Cipher != "xchacha20poly1305" || e.IDs != "blake3-keyed" || len(e.Master) != 32):
		return fmt.Errorf("store encryption %s/%s with master key %.40q is not what this program knows (damaged config, or a newer program's store)", e.Cipher, e.IDs, e.Master)
	}
	return nil
}

// unlockHelp is what an opener of a locked store is told to give.
const unlockHelp = "give --passphrase-file FILE or --key-file FILE (or set $CLNBACKUP_PASSPHRASE_FILE), or run it on a terminal to be asked"

// unlock finds the master key of an encrypted store from u: a master key
// file directly (checked against the config's fingerprint), an unlock key
// file or a passphrase against the store's key objects. It returns the id
// of the key object that opened it ("" for a master key file).
func unlock(ctx context.Context, be backend.Backend, cfg Config, u Unlock) (crypt.MasterKey, string, error) {
	want := cfg.Encryption.Master
	if u.KeyFile != nil && u.KeyFile.Kind == crypt.KeyFileMaster {
		mk, err := u.KeyFile.MasterKey()
		if err != nil {
			return crypt.MasterKey{}, "", err
		}
		if mk.Fingerprint() != want {
			return crypt.MasterKey{}, "", fmt.Errorf("the key file holds master key %s, the store's is %s (a key of another store): %w", mk.Fingerprint(), want, crypt.ErrWrongKey)
		}
		return mk, "", nil
	}
	kind, secret := crypt.KindPassphrase, u.Passphrase
	if u.KeyFile != nil {
		kind, secret = crypt.KindKeyFile, u.KeyFile.UnlockSecret()
	} else if len(secret) == 0 {
		if u.Prompt == nil {
			return crypt.MasterKey{}, "", fmt.Errorf("%w: %s", ErrLocked, unlockHelp)
		}
		p, err := u.Prompt(be.Location())
		if err != nil {
			return crypt.MasterKey{}, "", fmt.Errorf("ask for the passphrase of store %s: %w", be.Location(), err)
		}
		if len(p) == 0 {
			return crypt.MasterKey{}, "", fmt.Errorf("%w: the passphrase given is empty; %s", ErrLocked, unlockHelp)
		}
		secret = p
	}
	objs, err := listKeyObjects(ctx, be)
	if err != nil {
		return crypt.MasterKey{}, "", err
	}
	tried := 0
	for _, o := range objs {
		if o.Kind != kind || o.Master != want {
			continue
		}
		if tried++; tried > maxKeyObjectsTried {
			break
		}
		mk, err := crypt.Unwrap(o, secret)
		if err == nil {
			return mk, o.ID, nil
		}
		if !errors.Is(err, crypt.ErrWrongKey) {
			return crypt.MasterKey{}, "", fmt.Errorf("open store %s with key object %s: %w", be.Location(), o.ID, err)
		}
	}
	what := "passphrase"
	if kind == crypt.KindKeyFile {
		what = "key file"
	}
	if tried == 0 {
		return crypt.MasterKey{}, "", fmt.Errorf("store %s has no %s key object for master key %s (its keys: backup-cli key list; a master key file from key export still opens it): %w", be.Location(), kind, want, crypt.ErrWrongKey)
	}
	return crypt.MasterKey{}, "", fmt.Errorf("the %s opens none of the %d %s key objects of store %s: %w", what, min(tried, maxKeyObjectsTried), kind, be.Location(), crypt.ErrWrongKey)
}

// listKeyObjects reads every key object of the store, sorted by id. A key
// object that does not parse is an error naming it: an opener must not
// silently skip a damaged key.
func listKeyObjects(ctx context.Context, be backend.Backend) ([]*crypt.KeyObject, error) {
	var infos []backend.Info
	err := be.List(ctx, KeysPrefix, func(in backend.Info) error {
		if len(infos) == maxKeyObjects {
			return fmt.Errorf("more than %d key objects under %s (a store has one per passphrase or key file): remove the ones not written by backup-cli key add", maxKeyObjects, KeysPrefix)
		}
		if in.Size < 0 || in.Size > crypt.MaxKeyObjectSize {
			return fmt.Errorf("key object %s is %d bytes, more than the %d a key object may have (damaged or not written by backup-cli); remove it", in.Name, in.Size, crypt.MaxKeyObjectSize)
		}
		infos = append(infos, in)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the key objects of store %s: %w", be.Location(), err)
	}
	var out []*crypt.KeyObject
	for _, in := range infos {
		name := in.Name
		// The size listed bounds the read: an object grown since reads
		// as a prefix, which does not parse.
		data, err := be.Get(ctx, name, 0, in.Size)
		if errors.Is(err, backend.ErrNotFound) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("read key object %s of store %s: %w", name, be.Location(), err)
		}
		o, err := crypt.ParseKeyObject(data)
		if err != nil {
			return nil, fmt.Errorf("key object %s of store %s: %w", name, be.Location(), err)
		}
		if KeysPrefix+o.ID != name {
			return nil, fmt.Errorf("key object %s of store %s names itself %s (moved or damaged)", name, be.Location(), o.ID)
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// sealedName reports whether the object name is sealed as a whole by the
// sealed view: every object under nodes/ but the journal's files (their
// records are sealed one by one). config and keys/ are read before the key
// is known; packs hold bodies sealed one by one; index and gc objects hold
// keyed ids, kinds and sizes that a keyless store server must read to
// serve chunks (docs/store-format.md).
func sealedName(name string) bool {
	if !strings.HasPrefix(name, NodesPrefix) {
		return false
	}
	_, kind, _, err := ParseNodeObject(name)
	return err != nil || kind != NodeJournal
}
