// Package crypt is the cryptography of an encrypted store (store format 3,
// issue 13): the store master key and the keys derived from it, keyed chunk
// ids, the sealed envelope every encrypted object, chunk body and journal
// record is stored in, the associated data that binds each of them to its
// place, and the key objects and key files that keep the master key wrapped.
// It is one package so that every caller seals, opens and names things the
// same way; it knows nothing of the store's layout (callers pass names).
package crypt

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
)

// MasterKeySize is the length of a master key: one 256-bit secret from
// which every working key is derived (see MasterKey).
const MasterKeySize = 32

// Subkey derivation contexts (BLAKE3 derive_key mode). Each is used for one
// purpose only, so that the subkeys are independent, and a new purpose gets
// a new context without changing the master key or anything that holds it.
const (
	ctxEncKey      = "clnbackup 2026-12-02 store format 3 encryption key"
	ctxIDKey       = "clnbackup 2026-12-02 store format 3 chunk id key"
	ctxFingerprint = "clnbackup 2026-12-02 store format 3 master key fingerprint"
	ctxKeyFileKEK  = "clnbackup 2026-12-02 store format 3 key file key-encryption key"
)

// MasterKey is a store's random master key. It is 32 bytes rather than an
// encryption key and an id key side by side: one secret is all a key object
// wraps and all `key export` prints (43 characters), and the encryption key
// and the id key are derived from it with BLAKE3's derive_key mode under
// distinct contexts, so they are independent, and further subkeys can be
// added later without changing any key object or exported key. The bytes are
// unexported and the key prints as its fingerprint, so that it cannot leak
// into a log line by accident.
type MasterKey struct {
	b [MasterKeySize]byte
}

// NewMasterKey draws a new random master key (for `init` of an encrypted
// store; a store has one master key for its lifetime).
func NewMasterKey() MasterKey {
	var mk MasterKey
	rand.Read(mk.b[:]) // never fails (crypto/rand since Go 1.24)
	return mk
}

// IsZero reports whether mk is the zero value, which is no key.
func (mk MasterKey) IsZero() bool { return mk == MasterKey{} }

// Fingerprint names the master key without revealing it: 16 bytes of a
// BLAKE3 derivation, in hex. Key objects record it, so an opener can tell
// which store's key a key object or an exported key file holds.
func (mk MasterKey) Fingerprint() string {
	var fp [16]byte
	blake3.DeriveKey(ctxFingerprint, mk.b[:], fp[:])
	return hex.EncodeToString(fp[:])
}

// String prints the fingerprint, never the key.
func (mk MasterKey) String() string { return "master key " + mk.Fingerprint() }

// GoString prints the fingerprint, never the key (%#v).
func (mk MasterKey) GoString() string { return "crypt.MasterKey{" + mk.Fingerprint() + "}" }

// Keys derives the working keys. Derive them once per store opened: it
// costs two BLAKE3 derivations and an AEAD set-up.
func (mk MasterKey) Keys() *Keys {
	k := &Keys{fingerprint: mk.Fingerprint()}
	var enc [chacha20poly1305.KeySize]byte
	blake3.DeriveKey(ctxEncKey, mk.b[:], enc[:])
	blake3.DeriveKey(ctxIDKey, mk.b[:], k.idKey[:])
	aead, err := chacha20poly1305.NewX(enc[:])
	if err != nil {
		panic("crypt: XChaCha20-Poly1305 refused a 32-byte key: " + err.Error()) // cannot happen
	}
	k.aead = aead
	k.hashers.New = func() any { return k.newKeyed() }
	return k
}

// Keys are the working keys of an encrypted store, derived from its master
// key: the encryption key (XChaCha20-Poly1305) and the chunk id key (keyed
// BLAKE3). A Keys is safe for concurrent use.
type Keys struct {
	aead        cipher.AEAD
	idKey       [32]byte
	fingerprint string
	hashers     sync.Pool // *blake3.Hasher keyed with idKey (8 KiB each: reused)
}

// Fingerprint is the fingerprint of the master key the keys derive from.
func (k *Keys) Fingerprint() string { return k.fingerprint }

func (k *Keys) newKeyed() *blake3.Hasher {
	h, err := blake3.NewKeyed(k.idKey[:])
	if err != nil {
		panic("crypt: keyed BLAKE3 refused a 32-byte key: " + err.Error()) // cannot happen
	}
	return h
}

// ID is the id of a chunk in an encrypted store: keyed BLAKE3-256 of its
// plaintext under the id key. Equal chunks have equal ids under one store's
// key, so dedup works across every node of the store, but without the key an
// id says nothing about the content (no one can test whether the store holds
// a page they know).
func (k *Keys) ID(data []byte) chunker.ID {
	h := k.hashers.Get().(*blake3.Hasher)
	h.Reset() // keeps the key
	h.Write(data)
	var id chunker.ID
	h.Sum(id[:0])
	k.hashers.Put(h)
	return id
}

// IDHasher computes ID over data written in pieces.
type IDHasher struct{ h *blake3.Hasher }

// NewIDHasher returns a hasher whose Sum equals ID of everything written.
func (k *Keys) NewIDHasher() *IDHasher { return &IDHasher{h: k.newKeyed()} }

// Write adds p to the data hashed; it never fails.
func (h *IDHasher) Write(p []byte) (int, error) { return h.h.Write(p) }

// Sum returns the id of the data written so far.
func (h *IDHasher) Sum() chunker.ID {
	var id chunker.ID
	h.h.Sum(id[:0])
	return id
}

// Reset forgets the data written, keeping the key.
func (h *IDHasher) Reset() { h.h.Reset() }

// EnvelopeVersion is the first byte of every sealed envelope. A reader
// refuses any other value: a new envelope gets a new version.
const EnvelopeVersion byte = 1

// NonceSize is the length of the random nonce in an envelope
// (XChaCha20-Poly1305's 192 bits: random nonces do not collide at any
// object count a store will reach).
const NonceSize = chacha20poly1305.NonceSizeX

// TagSize is the length of the Poly1305 tag at the end of an envelope.
const TagSize = chacha20poly1305.Overhead

// Overhead is how many bytes Seal adds to a plaintext:
// version [1] | nonce [24] | ciphertext | tag [16].
const Overhead = 1 + NonceSize + TagSize

// ErrAuth is wrapped by every failure to open an envelope. Readers treat it
// as corruption of the object: it was altered, swapped for another one,
// truncated, or is opened with the wrong key.
var ErrAuth = errors.New("decrypt-and-verify failed: the object was altered, swapped, or the key is wrong")

// Seal encrypts and authenticates plaintext bound to ad (one of ObjectAD,
// ChunkAD, RecordAD) and appends the envelope to dst, which must not
// overlap plaintext. Compress before sealing: ciphertext does not compress.
func (k *Keys) Seal(dst, plaintext, ad []byte) []byte {
	return seal(k.aead, dst, plaintext, ad)
}

// Open checks and decrypts an envelope made by Seal with the same ad, and
// appends the plaintext to dst. Any failure wraps ErrAuth and returns dst
// with its length unchanged (its spare capacity may have been written).
func (k *Keys) Open(dst, sealed, ad []byte) ([]byte, error) {
	return open(k.aead, dst, sealed, ad)
}

func seal(aead cipher.AEAD, dst, plaintext, ad []byte) []byte {
	var nonce [NonceSize]byte
	rand.Read(nonce[:]) // never fails (crypto/rand since Go 1.24)
	return sealNonce(aead, dst, nonce, plaintext, ad)
}

// sealNonce is seal with a given nonce (tests use it for fixed envelopes).
func sealNonce(aead cipher.AEAD, dst []byte, nonce [NonceSize]byte, plaintext, ad []byte) []byte {
	dst = append(dst, EnvelopeVersion)
	dst = append(dst, nonce[:]...)
	return aead.Seal(dst, nonce[:], plaintext, envelopeAD(EnvelopeVersion, ad))
}

func open(aead cipher.AEAD, dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return dst, fmt.Errorf("envelope of %d bytes is shorter than the %d bytes every envelope has (truncated): %w", len(sealed), Overhead, ErrAuth)
	}
	if sealed[0] != EnvelopeVersion {
		return dst, fmt.Errorf("envelope version %d is not %d, the only one this program reads (damaged, or written by a newer program): %w", sealed[0], EnvelopeVersion, ErrAuth)
	}
	out, err := aead.Open(dst, sealed[1:1+NonceSize], sealed[1+NonceSize:], envelopeAD(sealed[0], ad))
	if err != nil {
		return dst, ErrAuth
	}
	return out, nil
}

// envelopeAD is what the AEAD authenticates besides the ciphertext: the
// envelope's version byte, then the caller's binding.
func envelopeAD(version byte, ad []byte) []byte {
	out := make([]byte, 0, 1+len(ad))
	out = append(out, version)
	return append(out, ad...)
}
