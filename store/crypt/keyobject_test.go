package crypt

import (
	"bytes"
	"encoding/json"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// testKDF is the cheapest cost Check accepts, so that tests run fast.
var testKDF = KDFParams{Name: "argon2id", Time: 1, MemoryKiB: minKDFMemoryKiB, Threads: 1}

func TestWrapUnwrapRoundTrip(t *testing.T) {
	t.Parallel()
	mk := NewMasterKey()
	kf := NewUnlockKeyFile()
	pass := []byte("correct horse battery staple")
	byPass, err := WrapWithPassphrase(mk, "alice@host", pass, testKDF)
	if err != nil {
		t.Fatal(err)
	}
	byFile, err := WrapWithKeyFile(mk, "plugin on host", kf)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		obj    *KeyObject
		secret []byte
		ok     bool
	}{
		{"passphrase", byPass, pass, true},
		{"wrong passphrase", byPass, []byte("correct horse battery stapler"), false},
		{"empty passphrase", byPass, nil, false},
		{"key file secret on passphrase object", byPass, kf.UnlockSecret(), false},
		{"key file", byFile, kf.UnlockSecret(), true},
		{"other key file", byFile, NewUnlockKeyFile().UnlockSecret(), false},
		{"passphrase on key file object", byFile, pass, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Through the stored form, as an opener reads it.
			data, err := tc.obj.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			obj, err := ParseKeyObject(data)
			if err != nil {
				t.Fatalf("ParseKeyObject(%s): %v", data, err)
			}
			got, err := Unwrap(obj, tc.secret)
			if tc.ok {
				if err != nil || got != mk {
					t.Fatalf("Unwrap = %v, %v; want %v", got, err, mk)
				}
				return
			}
			if !errors.Is(err, ErrWrongKey) {
				t.Fatalf("Unwrap error %v does not wrap ErrWrongKey", err)
			}
			if !got.IsZero() {
				t.Fatal("Unwrap returned a key with an error")
			}
		})
	}
	if byPass.ID == byFile.ID || bytes.Equal(byPass.KDF.Salt, make([]byte, len(byPass.KDF.Salt))) {
		t.Fatal("ids or salts not random")
	}
}

func TestWrapRefuses(t *testing.T) {
	t.Parallel()
	mk := NewMasterKey()
	weak := testKDF
	weak.MemoryKiB = 1024
	salted := testKDF
	salted.Salt = []byte("0123456789abcdef")
	tests := []struct {
		name string
		wrap func() (*KeyObject, error)
	}{
		{"empty passphrase", func() (*KeyObject, error) { return WrapWithPassphrase(mk, "", nil, testKDF) }},
		{"weak kdf", func() (*KeyObject, error) { return WrapWithPassphrase(mk, "", []byte("p"), weak) }},
		{"given salt", func() (*KeyObject, error) { return WrapWithPassphrase(mk, "", []byte("p"), salted) }},
		{"long label", func() (*KeyObject, error) {
			return WrapWithPassphrase(mk, strings.Repeat("x", maxLabelSize+1), []byte("p"), testKDF)
		}},
		{"master key file", func() (*KeyObject, error) { return WrapWithKeyFile(mk, "", mk.KeyFile()) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if o, err := tc.wrap(); err == nil {
				t.Fatalf("wrapped: %+v", o)
			}
		})
	}
}

// TestKeyObjectTampered: every field is bound to the wrapped key, so an
// edited key object does not open, even with the right passphrase.
func TestKeyObjectTampered(t *testing.T) {
	t.Parallel()
	mk := NewMasterKey()
	pass := []byte("pass")
	orig, err := WrapWithPassphrase(mk, "alice", pass, testKDF)
	if err != nil {
		t.Fatal(err)
	}
	other := NewMasterKey()
	tests := []struct {
		name string
		edit func(o *KeyObject)
	}{
		{"label", func(o *KeyObject) { o.Label = "mallory" }},
		{"created", func(o *KeyObject) { o.Created = o.Created.Add(time.Second) }},
		{"id", func(o *KeyObject) { o.ID = "0000000000000000" }},
		{"master", func(o *KeyObject) { o.Master = other.Fingerprint() }},
		{"salt", func(o *KeyObject) { o.KDF.Salt[0] ^= 1 }},
		{"threads", func(o *KeyObject) { o.KDF.Threads = 2 }},
		{"wrapped", func(o *KeyObject) { o.Wrapped[len(o.Wrapped)-1] ^= 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			data, _ := orig.Marshal()
			o, err := ParseKeyObject(data)
			if err != nil {
				t.Fatal(err)
			}
			tc.edit(o)
			if _, err := Unwrap(o, pass); !errors.Is(err, ErrWrongKey) {
				t.Fatalf("edited key object: Unwrap error %v, want ErrWrongKey", err)
			}
		})
	}
}

// TestHostileKeyObjects: absurd KDF parameters are refused by Parse and by
// Unwrap before the KDF allocates anything.
//
// Not parallel: it measures the memory allocated, which is process-wide (a
// top-level test without t.Parallel runs while every parallel one waits).
func TestHostileKeyObjects(t *testing.T) {
	mk := NewMasterKey()
	good, err := WrapWithPassphrase(mk, "alice", []byte("pass"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(p *KDFParams)
	}{
		{"4 TiB of memory", func(p *KDFParams) { p.MemoryKiB = 1<<32 - 1 }},
		{"just over 1 GiB", func(p *KDFParams) { p.MemoryKiB = maxKDFMemoryKiB + 1 }},
		{"1 KiB of memory", func(p *KDFParams) { p.MemoryKiB = 1 }},
		{"huge time", func(p *KDFParams) { p.Time = 1<<32 - 1 }},
		{"time over cap", func(p *KDFParams) { p.Time = maxKDFTime + 1 }},
		{"time zero", func(p *KDFParams) { p.Time = 0 }},
		{"1 GiB × 64 passes", func(p *KDFParams) { p.MemoryKiB, p.Time = maxKDFMemoryKiB, maxKDFTime }},
		{"threads 256", func(p *KDFParams) { p.Threads = 256 }},
		{"threads 0", func(p *KDFParams) { p.Threads = 0 }},
		{"no salt", func(p *KDFParams) { p.Salt = nil }},
		{"short salt", func(p *KDFParams) { p.Salt = p.Salt[:minSaltSize-1] }},
		{"long salt", func(p *KDFParams) { p.Salt = make([]byte, maxSaltSize+1) }},
		{"scrypt", func(p *KDFParams) { p.Name = "scrypt" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, _ := good.Marshal()
			o, _ := ParseKeyObject(data)
			tc.edit(o.KDF)
			hostile, err := json.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParseKeyObject(hostile); !errors.Is(err, errKeyObject) {
				t.Fatalf("ParseKeyObject accepted %s: %v", hostile, err)
			}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err = Unwrap(o, []byte("pass"))
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, errKeyObject) || errors.Is(err, ErrWrongKey) {
				t.Fatalf("Unwrap = %v, want a refusal of the key object", err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
				t.Fatalf("refusal allocated %d bytes", alloc)
			}
			if elapsed > time.Second {
				t.Fatalf("refusal took %v", elapsed)
			}
		})
	}
}

func TestParseKeyObjectRefuses(t *testing.T) {
	t.Parallel()
	mk := NewMasterKey()
	o, err := WrapWithKeyFile(mk, "plugin", NewUnlockKeyFile())
	if err != nil {
		t.Fatal(err)
	}
	good, _ := o.Marshal()
	if _, err := ParseKeyObject(good); err != nil {
		t.Fatalf("good key object refused: %v\n%s", err, good)
	}
	var m map[string]any
	if err := json.Unmarshal(good, &m); err != nil {
		t.Fatal(err)
	}
	edit := func(k string, v any) []byte {
		c := map[string]any{}
		for kk, vv := range m {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		b, _ := json.Marshal(c)
		return b
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"not json", []byte("clnbackup-key-v1:master:x:y")},
		{"trailing", append(bytes.Clone(good), []byte("{}")...)},
		{"unknown field", edit("extra", 1)},
		{"format", edit("format", "clnbackup-store")},
		{"version 2", edit("version", 2)},
		{"no id", edit("id", nil)},
		{"upper id", edit("id", strings.ToUpper(o.ID))},
		{"no created", edit("created", nil)},
		{"kind", edit("kind", "token")},
		{"keyfile with kdf", edit("kdf", map[string]any{"name": "argon2id", "time": 1, "memory_kib": 8192, "threads": 1, "salt": "AAAAAAAAAAAAAAAAAAAAAA=="})},
		{"passphrase without kdf", edit("kind", KindPassphrase)},
		{"short master", edit("master", "abcd")},
		{"short wrapped", edit("wrapped", "AAAA")},
		{"bad base64", edit("wrapped", "!!!")},
		{"huge", append(bytes.Clone(good), bytes.Repeat([]byte(" "), maxKeyObject)...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got, err := ParseKeyObject(tc.data); !errors.Is(err, errKeyObject) {
				t.Fatalf("ParseKeyObject(%.200s) = %+v, %v; want a refusal", tc.data, got, err)
			}
		})
	}
}

func FuzzParseKeyObject(f *testing.F) {
	mk := NewMasterKey()
	p, _ := WrapWithPassphrase(mk, "alice", []byte("pass"), testKDF)
	k, _ := WrapWithKeyFile(mk, "plugin", NewUnlockKeyFile())
	for _, o := range []*KeyObject{p, k} {
		b, _ := o.Marshal()
		f.Add(b)
	}
	f.Add([]byte(`{"kdf":{"memory_kib":4294967295,"time":4294967295}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		o, err := ParseKeyObject(data)
		if err != nil {
			return
		}
		// Accepted objects are within bounds and re-encode to something
		// that parses to the same object.
		if o.KDF != nil && (o.KDF.MemoryKiB > maxKDFMemoryKiB || o.KDF.Time > maxKDFTime) {
			t.Fatalf("accepted out-of-bounds parameters %+v", o.KDF)
		}
		b, err := o.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		o2, err := ParseKeyObject(b)
		if err != nil {
			t.Fatalf("re-encoded key object refused: %v\n%s", err, b)
		}
		if !bytes.Equal(o.ad(), o2.ad()) || !bytes.Equal(o.Wrapped, o2.Wrapped) {
			t.Fatal("re-encoding changed the key object")
		}
	})
}
