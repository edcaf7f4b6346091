package chunk

import (
	"bytes"
	"errors"
	"runtime"
	"slices"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/klauspost/compress/zstd"
)

// TestCodec: a body decodes to the bytes its id names, and every way a body
// can lie (another chunk's bytes, a wrong size, garbage, a size over the
// limit, a delta against the wrong base) is refused as corrupt.
func TestCodec(t *testing.T) {
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enc, err := c.Encoder()
	if err != nil {
		t.Fatal(err)
	}
	defer c.PutEncoder(enc)
	data := bytes.Repeat([]byte("page "), 800)
	other := bytes.Repeat([]byte("other"), 800)
	body := Body{ID: chunker.Sum(data), Kind: KindPage, Raw: uint32(len(data)), Body: enc.EncodeAll(data, nil)}
	if got, err := c.Decode(nil, body, "test"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("decode: %v", err)
	}
	tests := []struct {
		name string
		edit func(b *Body)
	}{
		{"other chunk's bytes", func(b *Body) { b.Body = enc.EncodeAll(other, nil) }},
		{"wrong size", func(b *Body) { b.Raw-- }},
		{"garbage", func(b *Body) { b.Body = []byte("not zstd at all") }},
		{"over the limit", func(b *Body) { b.Raw = MaxSize + 1 }},
		{"truncated", func(b *Body) { b.Body = b.Body[:len(b.Body)/2] }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := body
			tc.edit(&b)
			if _, err := c.Decode(nil, b, "test"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode: %v, want ErrCorrupt", err)
			}
		})
	}
	// A delta body decoded against a base that is not its own.
	if _, err := c.DecodeDelta(nil, body, other, "test"); err != nil {
		// A full frame decodes with any dictionary: still verified.
		t.Fatalf("full frame with a dictionary: %v", err)
	}
	lie := body
	lie.ID = chunker.Sum(other)
	if _, err := c.DecodeDelta(nil, lie, other, "test"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("delta with a wrong id: %v", err)
	}
}

// FuzzDecode: no body, however hostile, panics the codec or passes as
// a chunk it is not.
func FuzzDecode(f *testing.F) {
	c, err := NewCodec()
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	enc, _ := c.Encoder()
	f.Add(enc.EncodeAll([]byte("hello"), nil), uint32(5))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}, uint32(1<<20))
	f.Fuzz(func(t *testing.T, raw []byte, size uint32) {
		id := chunker.Sum([]byte("the chunk it claims to be"))
		if _, err := c.Decode(nil, Body{ID: id, Raw: size, Body: raw}, "fuzz"); err == nil {
			t.Fatal("a body passed as a chunk it does not hash to")
		}
	})
}

// TestCodecDecodeBounded: a body that inflates past the size it declares
// (a decompression bomb) fails without producing more than that size,
// whether its frame header announces the real size or none; a body decoded
// into a reused buffer keeps the buffer's capacity.
func TestCodecDecodeBounded(t *testing.T) {
	// Not parallel: it counts the process's allocations.
	c, err := NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enc, err := c.Encoder()
	if err != nil {
		t.Fatal(err)
	}
	defer c.PutEncoder(enc)
	zeros := make([]byte, MaxSize)
	withSize := enc.EncodeAll(zeros, nil)
	var streamed bytes.Buffer
	w, err := zstd.NewWriter(&streamed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(zeros); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		body []byte
	}{
		{"frame content size announced", withSize},
		{"no frame content size", streamed.Bytes()},
		{"two frames", append(slices.Clip(withSize), withSize...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the allocation count is the process's.
			small := zeros[:4096]
			b := Body{ID: chunker.Sum(small), Kind: KindPage, Raw: uint32(len(small)), Body: tc.body}
			dst := make([]byte, 0, 8192)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			got, err := c.Decode(dst, b, "test")
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode of a %d-byte bomb declaring %d bytes: %v (%d bytes), want ErrCorrupt", len(tc.body), b.Raw, err, len(got))
			}
			// Inflating the bomb would allocate its 16 MiB at least.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > MaxSize/2 {
				t.Errorf("decode of a bomb declaring %d bytes allocated %d bytes", b.Raw, alloc)
			}
		})
	}
	data := bytes.Repeat([]byte("page "), 100)
	buf := make([]byte, 0, 1<<16)
	got, err := c.Decode(buf, Body{ID: chunker.Sum(data), Kind: KindPage, Raw: uint32(len(data)), Body: enc.EncodeAll(data, nil)}, "test")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("decode into a reused buffer: %v", err)
	}
	if cap(got) != cap(buf) {
		t.Fatalf("decode returned capacity %d, want the buffer's %d", cap(got), cap(buf))
	}
}
