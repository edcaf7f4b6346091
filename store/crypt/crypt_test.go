package crypt

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/clnbackup/backup/chunker"
)

func TestSealOpenRoundTrip(t *testing.T) {
	t.Parallel()
	k := NewMasterKey().Keys()
	tests := []struct {
		name string
		pt   []byte
		ad   []byte
	}{
		{"empty", nil, ObjectAD("config")},
		{"page", bytes.Repeat([]byte{7}, 4096), ChunkAD(chunker.Sum([]byte("x")))},
		{"record", []byte("UPDATE x"), RecordAD("alice", 42, 7)},
		{"no ad", []byte("abc"), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			prefix := []byte("prefix")
			sealed := k.Seal(bytes.Clone(prefix), tc.pt, tc.ad)
			if !bytes.Equal(sealed[:len(prefix)], prefix) {
				t.Fatal("Seal did not append to dst")
			}
			env := sealed[len(prefix):]
			if len(env) != len(tc.pt)+Overhead {
				t.Fatalf("envelope is %d bytes, want %d", len(env), len(tc.pt)+Overhead)
			}
			if env[0] != EnvelopeVersion {
				t.Fatalf("version byte %d", env[0])
			}
			got, err := k.Open([]byte("d"), env, tc.ad)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, append([]byte("d"), tc.pt...)) {
				t.Fatalf("Open = %q", got)
			}
		})
	}
}

func TestSealNoncesDiffer(t *testing.T) {
	t.Parallel()
	k := NewMasterKey().Keys()
	a := k.Seal(nil, []byte("same"), nil)
	b := k.Seal(nil, []byte("same"), nil)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are equal: nonce not random")
	}
}

func TestOpenRefuses(t *testing.T) {
	t.Parallel()
	k := NewMasterKey().Keys()
	other := NewMasterKey().Keys()
	ad := ObjectAD("nodes/alice/node.json")
	pt := []byte("a manifest of node alice")
	env := k.Seal(nil, pt, ad)

	tests := []struct {
		name string
		keys *Keys
		env  []byte
		ad   []byte
	}{
		{"wrong ad", k, env, ObjectAD("nodes/bob/node.json")},
		{"wrong ad kind", k, env, ChunkAD(chunker.ID{})},
		{"wrong key", other, env, ad},
		{"truncated", k, env[:len(env)-1], ad},
		{"tag only", k, env[:Overhead-1], ad},
		{"empty", k, nil, ad},
		{"appended", k, append(bytes.Clone(env), 0), ad},
		{"wrong version", k, append([]byte{EnvelopeVersion + 1}, env[1:]...), ad},
	}
	for i := range len(env) * 8 {
		flipped := bytes.Clone(env)
		flipped[i/8] ^= 1 << (i % 8)
		tests = append(tests, struct {
			name string
			keys *Keys
			env  []byte
			ad   []byte
		}{fmt.Sprintf("bit %d flipped", i), k, flipped, ad})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.keys.Open(nil, tc.env, tc.ad)
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("Open = %q, %v; want ErrAuth", got, err)
			}
			if len(got) != 0 {
				t.Fatalf("Open returned %d bytes with an error", len(got))
			}
		})
	}
}

func TestADUnambiguous(t *testing.T) {
	t.Parallel()
	id := chunker.Sum([]byte("x"))
	ads := [][]byte{
		ObjectAD(""), ObjectAD("a"), ObjectAD("ab"), ObjectAD(string(id[:])),
		ChunkAD(id), ChunkAD(chunker.ID{}),
		RecordAD("", 0, 0), RecordAD("a", 0, 0), RecordAD("a", 1, 0), RecordAD("a", 0, 1),
		RecordAD("a", 1<<32, 0), RecordAD("ab", 0, 0),
		// a node name that ends like a sequence number must not collide
		RecordAD("a\x00\x00\x00\x00\x00\x00\x00\x01", 0, 0),
	}
	seen := map[string]int{}
	for i, ad := range ads {
		if j, ok := seen[string(ad)]; ok {
			t.Errorf("bindings %d and %d are equal: %x", j, i, ad)
		}
		seen[string(ad)] = i
	}
	// Golden encodings: docs/store-format.md describes these bytes.
	golden := []struct {
		got  []byte
		want string
	}{
		{ObjectAD("config"), "0100000006636f6e666967"},
		{ChunkAD(chunker.ID{1}), "02" + "01" + "00000000000000000000000000000000000000000000000000000000000000"},
		{RecordAD("alice", 2, 3), "0300000005616c696365" + "0000000000000002" + "00000003"},
	}
	for _, g := range golden {
		if fmt.Sprintf("%x", g.got) != g.want {
			t.Errorf("binding %x, want %s", g.got, g.want)
		}
	}
}

func TestKeyedID(t *testing.T) {
	t.Parallel()
	k1 := NewMasterKey().Keys()
	k2 := NewMasterKey().Keys()
	page := bytes.Repeat([]byte("page"), 1024)
	other := bytes.Repeat([]byte("egap"), 1024)
	tests := []struct {
		name  string
		a, b  chunker.ID
		equal bool
	}{
		{"same data same key", k1.ID(page), k1.ID(bytes.Clone(page)), true},
		{"keyed vs unkeyed", k1.ID(page), chunker.Sum(page), false},
		{"two keys", k1.ID(page), k2.ID(page), false},
		{"other data", k1.ID(page), k1.ID(other), false},
		{"empty vs unkeyed", k1.ID(nil), chunker.Sum(nil), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if (tc.a == tc.b) != tc.equal {
				t.Fatalf("%s vs %s: equal=%v, want %v", tc.a, tc.b, tc.a == tc.b, tc.equal)
			}
		})
	}
}

func TestIDHasherMatchesID(t *testing.T) {
	t.Parallel()
	k := NewMasterKey().Keys()
	data := bytes.Repeat([]byte("0123456789"), 3000)
	h := k.NewIDHasher()
	for i := 0; i < len(data); i += 777 {
		h.Write(data[i:min(i+777, len(data))])
	}
	if h.Sum() != k.ID(data) {
		t.Fatal("streaming id differs from ID")
	}
	h.Reset()
	h.Write([]byte("x"))
	if h.Sum() != k.ID([]byte("x")) {
		t.Fatal("id after Reset differs from ID")
	}
}

func TestMasterKeyDerivationStable(t *testing.T) {
	t.Parallel()
	mk := NewMasterKey()
	a, b := mk.Keys(), mk.Keys()
	env := a.Seal(nil, []byte("x"), nil)
	if _, err := b.Open(nil, env, nil); err != nil {
		t.Fatalf("keys derived twice from one master key differ: %v", err)
	}
	if a.ID([]byte("x")) != b.ID([]byte("x")) {
		t.Fatal("ids differ between two derivations")
	}
	if mk.IsZero() || !(MasterKey{}).IsZero() {
		t.Fatal("IsZero")
	}
}

func TestMasterKeyDoesNotPrint(t *testing.T) {
	t.Parallel()
	mk := NewMasterKey()
	for _, s := range []string{fmt.Sprint(mk), fmt.Sprintf("%v %+v %#v %s", mk, mk, mk, mk)} {
		if bytes.Contains([]byte(s), mk.b[:8]) || bytes.Contains([]byte(s), []byte(fmt.Sprintf("%x", mk.b[:8]))) ||
			bytes.Contains([]byte(s), []byte(fmt.Sprint(mk.b[0], " ", mk.b[1], " ", mk.b[2]))) {
			t.Fatalf("formatted master key shows its bytes: %s", s)
		}
	}
}
