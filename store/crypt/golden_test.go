package crypt

import (
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// Known answers, fixed when format 3 was written: a change to a derivation
// context, the envelope, a binding, the key file or the key object format
// breaks every store already encrypted, and must fail here first.
func TestGolden(t *testing.T) {
	t.Parallel()
	var mk MasterKey
	copy(mk.b[:], "golden master key for the tests!")
	k := mk.Keys()
	if got, want := mk.Fingerprint(), "c4e35a9e1b71917966a91461d8f8fd62"; got != want {
		t.Errorf("fingerprint %s, want %s", got, want)
	}
	if got, want := k.ID([]byte("page")).String(), "6a46ec0c82d026daf0b643f68d44f97ca69470800468c27ff1a1ee1b5563a001"; got != want {
		t.Errorf("keyed id %s, want %s", got, want)
	}
	env, _ := hex.DecodeString("010102030000000000000000000000000000000000000000007cf13d3cec4bf31118240d5c14107ff7c2c050afe3")
	if got, err := k.Open(nil, env, ObjectAD("config")); err != nil || string(got) != "hello" {
		t.Errorf("golden envelope opens as %q, %v", got, err)
	}
	line := "clnbackup-key-v1:master:Z29sZGVuIG1hc3RlciBrZXkgZm9yIHRoZSB0ZXN0cyE:ab869f1a\n"
	if got := mk.KeyFile().Format(); got != line {
		t.Errorf("key file %q, want %q", got, line)
	}
	data, err := os.ReadFile("testdata/keyobject-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	o, err := ParseKeyObject(data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unwrap(o, []byte("golden passphrase"))
	if err != nil || got != mk {
		t.Fatalf("golden key object unwraps to %v, %v; want %v", got, err, mk)
	}
	if b, _ := o.Marshal(); strings.TrimSpace(string(b)) != strings.TrimSpace(string(data)) {
		t.Errorf("golden key object re-encodes as\n%s", b)
	}
}
