package history

import (
	"bytes"
	"testing"
)

// FuzzDecodeProof: a proof file is bytes from disk; any of them decode or
// fail cleanly, and what decodes encodes back to the same bytes.
func FuzzDecodeProof(f *testing.F) {
	p := cacheProof{pageSize: 4096, pages: 9, dev: 3, ino: 77, size: 9 * 4096, mtime: 1e18, ctime: 2e18, trusted: 5}
	p.table[0] = 0xaa
	f.Add(p.encode())
	f.Add([]byte(proofMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := decodeProof(b)
		if err != nil {
			return
		}
		if !bytes.Equal(q.encode(), b) {
			t.Fatalf("decoded %+v encodes to other bytes", q)
		}
	})
}

func TestProofRoundTrip(t *testing.T) {
	p := cacheProof{pageSize: 512, pages: 1 << 31, dev: 1 << 60, ino: 2, size: -1, mtime: -5, ctime: 7, trusted: 1<<32 - 1}
	b := p.encode()
	if len(b) != proofSize {
		t.Fatalf("%d bytes, want %d", len(b), proofSize)
	}
	q, err := decodeProof(b)
	if err != nil || q != p {
		t.Fatalf("decoded %+v, %v; want %+v", q, err, p)
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 1
		if _, err := decodeProof(c); err == nil {
			t.Fatalf("byte %d flipped: decoded", i)
		}
	}
	if _, err := decodeProof(b[:len(b)-1]); err == nil {
		t.Fatal("short proof decoded")
	}
}
