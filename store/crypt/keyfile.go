package crypt

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/zeebo/blake3"
)

// A key file holds one 32-byte secret as one line of text:
//
//	clnbackup-key-v1:<kind>:<secret, base64url without padding, 43 chars>:<check, 8 hex digits>
//
// kind is "master" (the store's master key itself: what `key export`
// prints and `restore --key-file` accepts even with every key object lost)
// or "unlock" (a random secret that opens one "keyfile" key object, such as
// the plugin's key file; removing that key object revokes it). check is the
// first 4 bytes of BLAKE3-256 of everything before the last colon, in
// lower-case hex: it catches a key mistyped or cut when copied by hand.
const keyFilePrefix = "clnbackup-key-v1"

// KeyFileKind says what the secret in a key file is.
type KeyFileKind string

// The kinds of key file.
const (
	// KeyFileMaster holds the store's master key (key export).
	KeyFileMaster KeyFileKind = "master"
	// KeyFileUnlock holds a secret that unwraps a "keyfile" key object.
	KeyFileUnlock KeyFileKind = "unlock"
)

// KeyFile is the content of a key file (see FormatKeyFile). Its secret is
// unexported so that it does not print.
type KeyFile struct {
	Kind   KeyFileKind
	secret [32]byte
}

// maxKeyFileSize bounds what ParseKeyFile reads: a key file is one short
// line, and a reader handed a large file by mistake should say so rather
// than scan it.
const maxKeyFileSize = 4096

// errKeyFile is wrapped by every parse failure.
var errKeyFile = errors.New("not a clnbackup key file (want one line `clnbackup-key-v1:<kind>:<key>:<check>`, as `backup-cli key export` prints)")

// NewUnlockKeyFile draws a new random "unlock" key file, for a key object
// of kind keyfile (`key add --key-file`, the plugin's key file).
func NewUnlockKeyFile() KeyFile {
	kf := KeyFile{Kind: KeyFileUnlock}
	rand.Read(kf.secret[:]) // never fails (crypto/rand since Go 1.24)
	return kf
}

// KeyFile returns the "master" key file of mk: what `key export` prints.
func (mk MasterKey) KeyFile() KeyFile {
	return KeyFile{Kind: KeyFileMaster, secret: mk.b}
}

// MasterKey returns the master key a "master" key file holds.
func (kf KeyFile) MasterKey() (MasterKey, error) {
	if kf.Kind != KeyFileMaster {
		return MasterKey{}, fmt.Errorf("key file of kind %q holds no master key: it opens a key object of the store (pass it where a key file unlocks the store, not as an exported master key)", kf.Kind)
	}
	return MasterKey{b: kf.secret}, nil
}

// String names the kind, never the secret.
func (kf KeyFile) String() string { return "key file (" + string(kf.Kind) + ")" }

// GoString names the kind, never the secret (%#v).
func (kf KeyFile) GoString() string { return "crypt.KeyFile{" + string(kf.Kind) + "}" }

// Format returns the key file's one line, with a final newline: write it
// to a file of mode 0600 (secretfile's rule applies to its readers).
func (kf KeyFile) Format() string {
	body := keyFilePrefix + ":" + string(kf.Kind) + ":" + base64.RawURLEncoding.EncodeToString(kf.secret[:])
	return body + ":" + keyFileCheck(body) + "\n"
}

func keyFileCheck(body string) string {
	sum := blake3.Sum256([]byte(body))
	return hex.EncodeToString(sum[:4])
}

// ParseKeyFile reads a key file. Whitespace around the line (a trailing
// newline, a pasted indent) is ignored; anything else that differs from the
// format is refused, naming the part that is wrong.
func ParseKeyFile(data []byte) (KeyFile, error) {
	if len(data) > maxKeyFileSize {
		return KeyFile{}, fmt.Errorf("%d bytes, a key file is one line of about 80: %w", len(data), errKeyFile)
	}
	line := string(bytes.TrimSpace(data))
	parts := strings.Split(line, ":")
	if len(parts) != 4 || parts[0] != keyFilePrefix {
		return KeyFile{}, errKeyFile
	}
	kf := KeyFile{Kind: KeyFileKind(parts[1])}
	if kf.Kind != KeyFileMaster && kf.Kind != KeyFileUnlock {
		return KeyFile{}, fmt.Errorf("key kind %.20q is neither %q nor %q: %w", parts[1], KeyFileMaster, KeyFileUnlock, errKeyFile)
	}
	body := line[:len(line)-len(parts[3])-1]
	if want := keyFileCheck(body); parts[3] != want {
		return KeyFile{}, fmt.Errorf("check %.20q does not match the key (mistyped or cut when copied? copy the whole line again): %w", parts[3], errKeyFile)
	}
	// Length first: Decode panics when the output does not fit.
	if len(parts[2]) != base64.RawURLEncoding.EncodedLen(len(kf.secret)) {
		return KeyFile{}, fmt.Errorf("key is %d characters, not %d: %w", len(parts[2]), base64.RawURLEncoding.EncodedLen(len(kf.secret)), errKeyFile)
	}
	n, err := base64.RawURLEncoding.Strict().Decode(kf.secret[:], []byte(parts[2]))
	if err != nil || n != len(kf.secret) {
		return KeyFile{}, fmt.Errorf("key is not %d bytes of unpadded base64url: %w", len(kf.secret), errKeyFile)
	}
	return kf, nil
}
