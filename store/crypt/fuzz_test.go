package crypt

import (
	"bytes"
	"errors"
	"testing"
)

// fuzzKeys is a fixed key, so that the corpus can hold authentic envelopes.
var fuzzKeys = func() *Keys {
	var mk MasterKey
	copy(mk.b[:], "fuzz master key, fixed for tests")
	return mk.Keys()
}()

// FuzzOpen: Open never panics, and opens only what Seal made with the same
// binding (an envelope found by the fuzzer that opens would be a forgery).
func FuzzOpen(f *testing.F) {
	ad := ObjectAD("nodes/alice/node.json")
	authentic := map[string]string{} // envelope -> plaintext, the only ones that may open
	for i, pt := range []string{"hello", ""} {
		// fixed nonces: the fuzzing workers must build the same envelopes
		env := sealNonce(fuzzKeys.aead, nil, [NonceSize]byte{byte(i)}, []byte(pt), ad)
		authentic[string(env)] = pt
		f.Add(env)
	}
	f.Add([]byte{EnvelopeVersion})
	f.Add(bytes.Repeat([]byte{1}, Overhead))
	f.Fuzz(func(t *testing.T, env []byte) {
		got, err := fuzzKeys.Open(nil, env, ad)
		if err != nil {
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("error does not wrap ErrAuth: %v", err)
			}
			return
		}
		want, ok := authentic[string(env)]
		if !ok || string(got) != want {
			t.Fatalf("forged envelope opened: %x -> %q", env, got)
		}
		if _, err := fuzzKeys.Open(nil, env, ObjectAD("nodes/bob/node.json")); !errors.Is(err, ErrAuth) {
			t.Fatalf("envelope opened under another binding: %v", err)
		}
	})
}
