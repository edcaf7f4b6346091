package crypt

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// A key object keeps the store's master key wrapped (sealed in an envelope
// under a key-encryption key) so that it can live in the store itself, under
// keys/<id>: one key object per passphrase or key file that opens the store.
// Its format is JSON, documented in docs/store-format.md:
//
//	{"format": "clnbackup-key", "version": 1, "id": "<16 hex>",
//	 "created": "<RFC 3339>", "label": "<who or where>",
//	 "kind": "passphrase" | "keyfile",
//	 "kdf": {"name": "argon2id", "time": 8, "memory_kib": 65536,
//	         "threads": 2, "salt": "<base64>"},     passphrase only
//	 "master": "<fingerprint of the master key, 32 hex>",
//	 "wrapped": "<base64 of the envelope sealing the 32-byte master key>"}
//
// Every field is authenticated: the envelope's associated data is
// keyObjectAD of all the others, so a key object edited in place (a lowered
// KDF cost, another label, another master fingerprint) does not open.
const (
	keyObjectFormat  = "clnbackup-key"
	keyObjectVersion = 1
)

// The kinds of key object.
const (
	// KindPassphrase: the key-encryption key is argon2id of a passphrase.
	KindPassphrase = "passphrase"
	// KindKeyFile: the key-encryption key is derived from an unlock key file.
	KindKeyFile = "keyfile"
)

// KeyObject is one wrapped copy of a store's master key.
type KeyObject struct {
	Format  string     `json:"format"`        // "clnbackup-key"
	Version int        `json:"version"`       // 1
	ID      string     `json:"id"`            // random, 16 hex; the object is keys/<id>
	Created time.Time  `json:"created"`       // when it was wrapped (UTC, seconds)
	Label   string     `json:"label"`         // who or where it is for, shown by key list
	Kind    string     `json:"kind"`          // KindPassphrase or KindKeyFile
	KDF     *KDFParams `json:"kdf,omitempty"` // passphrase only
	Master  string     `json:"master"`        // fingerprint of the master key it wraps
	Wrapped []byte     `json:"wrapped"`       // envelope of the master key under the key-encryption key
}

// KDFParams are the argon2id parameters a passphrase key object records:
// opening it must repeat exactly this work, whatever machine opens it.
type KDFParams struct {
	Name      string `json:"name"` // "argon2id"
	Time      uint32 `json:"time"` // passes over memory
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint32 `json:"threads"` // lanes: the parallelism the work allows
	Salt      []byte `json:"salt"`    // random, drawn per key object
}

// DefaultKDFParams make one unwrap cost about 0.5 s and 64 MiB on the
// machine they were tuned on (2 CPUs: BenchmarkKDF, 0.50 s when least
// contended, 0.6 to 0.9 s while other work shared the CPUs; above RFC 9106's
// 3 passes over 64 MiB). A passphrase is typed once per restore or key
// command, so the cost is paid rarely by the operator and at every guess by
// an attacker. WrapWithPassphrase draws the salt.
var DefaultKDFParams = KDFParams{Name: "argon2id", Time: 8, MemoryKiB: 64 << 10, Threads: 2}

// Bounds on the KDF parameters of a key object, checked before any work:
// the store host writes key objects, and a crafted one must not make an
// opener allocate unbounded memory or run for hours. The lower bounds keep
// a passphrase from being wrapped (or accepted) with a trivial cost.
const (
	minKDFMemoryKiB = 8 << 10 // 8 MiB
	maxKDFMemoryKiB = 1 << 20 // 1 GiB
	maxKDFTime      = 64      // passes
	maxKDFWork      = 4 << 20 // time × memory, in KiB: 4 GiB of passes (some seconds)
	maxKDFThreads   = 255     // argon2's lanes are a uint8
	minSaltSize     = 16
	maxSaltSize     = 64
	maxLabelSize    = 256
	maxKeyObject    = MaxKeyObjectSize
	keyIDSize       = 8 // random bytes of a key object's id
	fingerprintHex  = 32
)

// MaxKeyObjectSize is the largest key object ParseKeyObject accepts, in
// bytes of JSON: readers check an object's size against it before reading
// it, so that a store host cannot make them load a huge one.
const MaxKeyObjectSize = 16 << 10

// ErrWrongKey is wrapped when a key object does not open with the secret
// given: a wrong passphrase or key file (or a key object altered since it
// was written, which cannot be told apart).
var ErrWrongKey = errors.New("wrong passphrase or key file")

// errKeyObject is wrapped by every refusal of a key object's content.
var errKeyObject = errors.New("invalid key object")

// Check refuses parameters outside the bounds an opener accepts, before any
// memory is allocated.
func (p *KDFParams) Check() error {
	switch {
	case p.Name != "argon2id":
		return fmt.Errorf("kdf %.40q is not argon2id, the only one this program knows", p.Name)
	case p.MemoryKiB < minKDFMemoryKiB || p.MemoryKiB > maxKDFMemoryKiB:
		return fmt.Errorf("kdf memory %d KiB is outside %d KiB to %d KiB", p.MemoryKiB, minKDFMemoryKiB, maxKDFMemoryKiB)
	case p.Time < 1 || p.Time > maxKDFTime:
		return fmt.Errorf("kdf time %d is outside 1 to %d passes", p.Time, maxKDFTime)
	case uint64(p.Time)*uint64(p.MemoryKiB) > maxKDFWork:
		return fmt.Errorf("kdf work %d passes × %d KiB is above %d KiB in all", p.Time, p.MemoryKiB, maxKDFWork)
	case p.Threads < 1 || p.Threads > maxKDFThreads:
		return fmt.Errorf("kdf threads %d is outside 1 to %d", p.Threads, maxKDFThreads)
	case len(p.Salt) < minSaltSize || len(p.Salt) > maxSaltSize:
		return fmt.Errorf("kdf salt of %d bytes is outside %d to %d", len(p.Salt), minSaltSize, maxSaltSize)
	}
	return nil
}

// Check refuses a key object that is not well formed, without unwrapping
// it (and so without the KDF's cost).
func (o *KeyObject) Check() error {
	if err := o.check(); err != nil {
		return fmt.Errorf("key object %.40q: %w: %w", o.ID, errKeyObject, err)
	}
	return nil
}

func (o *KeyObject) check() error {
	if o.Format != keyObjectFormat || o.Version != keyObjectVersion {
		return fmt.Errorf("format %.40q version %d is not %s version %d (written by a newer program?)", o.Format, o.Version, keyObjectFormat, keyObjectVersion)
	}
	if len(o.ID) != 2*keyIDSize || !isLowerHex(o.ID) {
		return fmt.Errorf("id is not %d lower-case hex digits", 2*keyIDSize)
	}
	if o.Created.IsZero() {
		return errors.New("no creation time")
	}
	if len(o.Label) > maxLabelSize || !utf8.ValidString(o.Label) {
		return fmt.Errorf("label is not UTF-8 of at most %d bytes", maxLabelSize)
	}
	switch o.Kind {
	case KindPassphrase:
		if o.KDF == nil {
			return errors.New("passphrase key object without kdf parameters")
		}
		if err := o.KDF.Check(); err != nil {
			return err
		}
	case KindKeyFile:
		if o.KDF != nil {
			return errors.New("keyfile key object with kdf parameters")
		}
	default:
		return fmt.Errorf("kind %.40q is neither %q nor %q", o.Kind, KindPassphrase, KindKeyFile)
	}
	if len(o.Master) != fingerprintHex || !isLowerHex(o.Master) {
		return fmt.Errorf("master fingerprint is not %d lower-case hex digits", fingerprintHex)
	}
	if len(o.Wrapped) != MasterKeySize+Overhead {
		return fmt.Errorf("wrapped key is %d bytes, not %d", len(o.Wrapped), MasterKeySize+Overhead)
	}
	return nil
}

func isLowerHex(s string) bool {
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ParseKeyObject decodes and checks a key object read from the store.
// Unknown fields, trailing data and out-of-bounds KDF parameters are
// refused; nothing is unwrapped.
func ParseKeyObject(data []byte) (*KeyObject, error) {
	if len(data) > maxKeyObject {
		return nil, fmt.Errorf("%w: %d bytes, more than the %d a key object may have", errKeyObject, len(data), maxKeyObject)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var o KeyObject
	if err := dec.Decode(&o); err != nil {
		return nil, fmt.Errorf("%w: %w", errKeyObject, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", errKeyObject)
	}
	if err := o.Check(); err != nil {
		return nil, err
	}
	return &o, nil
}

// Marshal encodes the key object as stored (indented JSON, final newline).
func (o *KeyObject) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode key object %s: %w", o.ID, err)
	}
	return append(b, '\n'), nil
}

// WrapWithPassphrase makes a key object that opens with pass, under a fresh
// random id and salt. params.Salt must be empty (a salt is never reused).
func WrapWithPassphrase(mk MasterKey, label string, pass []byte, params KDFParams) (*KeyObject, error) {
	if len(pass) == 0 {
		return nil, errors.New("wrap the master key: the passphrase is empty")
	}
	if params.Salt != nil {
		return nil, errors.New("wrap the master key: KDF parameters come with a salt; each key object draws its own")
	}
	params.Salt = make([]byte, minSaltSize)
	rand.Read(params.Salt) // never fails (crypto/rand since Go 1.24)
	o := newKeyObject(mk, label, KindPassphrase)
	o.KDF = &params
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("wrap the master key with a passphrase: %w", err)
	}
	return o.wrap(mk, passphraseKEK(pass, &params))
}

// WrapWithKeyFile makes a key object that opens with kf, an unlock key file
// (NewUnlockKeyFile).
func WrapWithKeyFile(mk MasterKey, label string, kf KeyFile) (*KeyObject, error) {
	if kf.Kind != KeyFileUnlock {
		return nil, fmt.Errorf("wrap the master key with a key file of kind %q: only %q key files open key objects", kf.Kind, KeyFileUnlock)
	}
	o := newKeyObject(mk, label, KindKeyFile)
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("wrap the master key with a key file: %w", err)
	}
	return o.wrap(mk, keyFileKEK(kf.secret[:]))
}

func newKeyObject(mk MasterKey, label, kind string) *KeyObject {
	id := make([]byte, keyIDSize)
	rand.Read(id) // never fails (crypto/rand since Go 1.24)
	return &KeyObject{
		Format:  keyObjectFormat,
		Version: keyObjectVersion,
		ID:      hex.EncodeToString(id),
		Created: time.Now().UTC().Truncate(time.Second),
		Label:   label,
		Kind:    kind,
		Master:  mk.Fingerprint(),
		Wrapped: make([]byte, MasterKeySize+Overhead), // placeholder for check
	}
}

func (o *KeyObject) wrap(mk MasterKey, kek []byte) (*KeyObject, error) {
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, fmt.Errorf("wrap the master key: %w", err)
	}
	o.Wrapped = seal(aead, nil, mk.b[:], o.ad())
	return o, nil
}

// Unwrap opens the key object with secret: the passphrase for a passphrase
// key object, or an unlock key file's secret (KeyFile.UnlockSecret) for a
// keyfile one. The KDF parameters are checked before any work. A secret
// that does not open it gives an error wrapping ErrWrongKey.
func Unwrap(o *KeyObject, secret []byte) (MasterKey, error) {
	if err := o.Check(); err != nil {
		return MasterKey{}, err
	}
	var kek []byte
	switch o.Kind {
	case KindPassphrase:
		kek = passphraseKEK(secret, o.KDF)
	case KindKeyFile:
		kek = keyFileKEK(secret)
	}
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return MasterKey{}, fmt.Errorf("key object %s: %w", o.ID, err)
	}
	pt, err := open(aead, nil, o.Wrapped, o.ad())
	if err != nil {
		what := "passphrase"
		if o.Kind == KindKeyFile {
			what = "key file"
		}
		return MasterKey{}, fmt.Errorf("key object %s (%s %q) does not open with this %s (or was altered): %w", o.ID, o.Kind, o.Label, what, ErrWrongKey)
	}
	var mk MasterKey
	copy(mk.b[:], pt)
	if mk.Fingerprint() != o.Master {
		// Cannot happen: the fingerprint is authenticated with the key.
		return MasterKey{}, fmt.Errorf("key object %s: the key it holds is not master key %s: %w", o.ID, o.Master, ErrWrongKey)
	}
	return mk, nil
}

// UnlockSecret is the secret to hand Unwrap for a keyfile key object.
func (kf KeyFile) UnlockSecret() []byte { return bytes.Clone(kf.secret[:]) }

func passphraseKEK(pass []byte, p *KDFParams) []byte {
	return argon2.IDKey(pass, p.Salt, p.Time, p.MemoryKiB, uint8(p.Threads), chacha20poly1305.KeySize)
}

// keyFileKEK derives the key-encryption key from an unlock key file's
// secret (any length reaches here; only the right 32 bytes open).
func keyFileKEK(secret []byte) []byte {
	kek := make([]byte, chacha20poly1305.KeySize)
	blake3.DeriveKey(ctxKeyFileKEK, secret, kek)
	return kek
}

// ad binds the wrapped key to every other field of the key object:
//
//	0x04 | u32 version | str format | str id | i64 created (unix ns) | str label
//	     | str kind | str kdf name | u32 time | u32 memory_kib | u32 threads
//	     | str salt | str master
//
// (str = u32 length | bytes; the kdf fields are empty and zero for a
// keyfile key object).
func (o *KeyObject) ad() []byte {
	var p KDFParams
	if o.KDF != nil {
		p = *o.KDF
	}
	b := []byte{adKeyObject}
	b = binary.BigEndian.AppendUint32(b, uint32(o.Version))
	b = appendString(b, o.Format)
	b = appendString(b, o.ID)
	b = binary.BigEndian.AppendUint64(b, uint64(o.Created.UnixNano()))
	b = appendString(b, o.Label)
	b = appendString(b, o.Kind)
	b = appendString(b, p.Name)
	b = binary.BigEndian.AppendUint32(b, p.Time)
	b = binary.BigEndian.AppendUint32(b, p.MemoryKiB)
	b = binary.BigEndian.AppendUint32(b, p.Threads)
	b = appendString(b, string(p.Salt))
	return appendString(b, o.Master)
}
