package chunk

import (
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/crypt"
	"github.com/klauspost/compress/zstd"
)

// Codec compresses chunk bodies and decodes and verifies stored ones. It is
// shared by everything that touches bodies (the Writer, reads, gc's repack,
// verify, a store server checking what clients send), so that every body is
// checked against its id the same way, wherever it comes from. Encoders and
// delta decoders are pooled: a new encoder costs megabytes of tables.
type Codec struct {
	dec *zstd.Decoder // full bodies, unchecked (Decompress); safe for concurrent DecodeAll
	// bounded decodes full bodies (Decode) into at most the capacity it
	// is given: a body never inflates past the size it declares, so a
	// small hostile body cannot cost the decompression of 16 MiB.
	bounded *zstd.Decoder

	mu        sync.Mutex
	encs      []*zstd.Encoder
	deltaDecs []*zstd.Decoder // each decode sets its base as dictionary

	// keys seal bodies and key ids (an encrypted store); keyless: the
	// bodies are sealed but the key is not here (see seal.go).
	keys    *crypt.Keys
	keyless bool
}

// maxDecoderMemory bounds what one decode may allocate: a hostile frame
// cannot claim more (chunks are at most MaxSize).
const maxDecoderMemory = 64 << 20

// NewCodec makes a codec; Close releases it.
func NewCodec() (*Codec, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(maxDecoderMemory))
	if err != nil {
		return nil, fmt.Errorf("chunk codec: make a zstd decoder: %w", err)
	}
	// Decode and DecodeDelta check every result against its id: the
	// frames' own checksums would add an xxhash per chunk and nothing more.
	bounded, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(maxDecoderMemory), zstd.WithDecodeAllCapLimit(true), zstd.IgnoreChecksum(true))
	if err != nil {
		dec.Close()
		return nil, fmt.Errorf("chunk codec: make a bounded zstd decoder: %w", err)
	}
	return &Codec{dec: dec, bounded: bounded}, nil
}

// Encoder takes a single-threaded encoder from the pool; PutEncoder
// returns it.
func (c *Codec) Encoder() (*zstd.Encoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.encs); n > 0 {
		e := c.encs[n-1]
		c.encs = c.encs[:n-1]
		return e, nil
	}
	return zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithWindowSize(encoderWindow), zstd.WithLowerEncoderMem(true))
}

// encoderWindow is the encoders' window: larger than every chunk but a
// rare oversized change chunk, so it costs no compression. The default
// (8 MiB, without lower encoder memory) made each pooled encoder that had
// compressed one chunk larger than a block (a change chunk) keep a 16 MiB
// history for good.
const encoderWindow = 1 << 20

// PutEncoder returns an encoder to the pool.
func (c *Codec) PutEncoder(e *zstd.Encoder) {
	c.mu.Lock()
	c.encs = append(c.encs, e)
	c.mu.Unlock()
}

func (c *Codec) deltaDecoder() (*zstd.Decoder, error) {
	c.mu.Lock()
	if n := len(c.deltaDecs); n > 0 {
		d := c.deltaDecs[n-1]
		c.deltaDecs = c.deltaDecs[:n-1]
		c.mu.Unlock()
		return d, nil
	}
	c.mu.Unlock()
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxDecoderMemory), zstd.IgnoreChecksum(true))
}

func (c *Codec) putDeltaDecoder(d *zstd.Decoder) {
	c.mu.Lock()
	c.deltaDecs = append(c.deltaDecs, d)
	c.mu.Unlock()
}

// Origin names where a body came from, for messages: its pack, else from.
func Origin(b Body, from string) string {
	if b.Pack != (chunker.ID{}) {
		return "pack " + b.Pack.String()
	}
	if from == "" {
		return "the store"
	}
	return from
}

// Decode decompresses a full chunk body into dst (reusing its capacity) and
// verifies it against its id. from names the body's origin for messages
// when it did not come from a pack (see Origin). The body is decompressed
// into at most b.Raw bytes: one that inflates to more fails as soon as it
// passes its declared size (a frame header announcing more fails before
// any work), so the work is bounded by the size declared, which is at most
// MaxSize.
func (c *Codec) Decode(dst []byte, b Body, from string) ([]byte, error) {
	if b.Raw > MaxSize {
		return nil, fmt.Errorf("read chunk %s from %s: %w: size %d exceeds the %d-byte limit; run backup-cli verify", b.ID, Origin(b, from), ErrCorrupt, b.Raw, MaxSize)
	}
	body, done, err := c.open(b, from, "")
	if err != nil {
		return nil, err
	}
	defer done()
	raw := int(b.Raw)
	dst = slices.Grow(dst, raw)
	full := dst
	data, err := c.bounded.DecodeAll(body, dst[:len(dst):len(dst)+raw])
	if err != nil {
		return nil, fmt.Errorf("read chunk %s from %s: %w: cannot decompress into its declared %d bytes (%v); run backup-cli verify", b.ID, Origin(b, from), ErrCorrupt, b.Raw, err)
	}
	if len(data) != raw || c.ID(data) != b.ID {
		return nil, fmt.Errorf("read chunk %s from %s: %w: hash mismatch; run backup-cli verify", b.ID, Origin(b, from), ErrCorrupt)
	}
	// The decoder could not grow past the capacity given: data is full's
	// array; returning it with full's capacity keeps that for reuse.
	return full[:len(data)], nil
}

// DecodeDelta decompresses a delta body with its base's full bytes as raw
// dictionary into dst and verifies the result against the chunk's id.
func (c *Codec) DecodeDelta(dst []byte, b Body, base []byte, from string) ([]byte, error) {
	if b.Raw > MaxSize {
		return nil, fmt.Errorf("read chunk %s from %s: %w: size %d exceeds the %d-byte limit; run backup-cli verify", b.ID, Origin(b, from), ErrCorrupt, b.Raw, MaxSize)
	}
	body, done, err := c.open(b, from, " (a delta of chunk "+b.Base.String()+")")
	if err != nil {
		return nil, err
	}
	defer done()
	dec, err := c.deltaDecoder()
	if err != nil {
		return nil, err
	}
	defer c.putDeltaDecoder(dec)
	if err := dec.ResetWithOptions(nil, zstd.WithDecoderDictRaw(0, base)); err != nil {
		return nil, err
	}
	if dst == nil {
		dst = make([]byte, 0, b.Raw)
	}
	data, err := dec.DecodeAll(body, dst)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s (a delta of chunk %s) from %s: %w: cannot decompress (%v); run backup-cli verify", b.ID, b.Base, Origin(b, from), ErrCorrupt, err)
	}
	if uint32(len(data)) != b.Raw || c.ID(data) != b.ID {
		return nil, fmt.Errorf("read chunk %s (a delta of chunk %s) from %s: %w: hash mismatch; run backup-cli verify", b.ID, b.Base, Origin(b, from), ErrCorrupt)
	}
	return data, nil
}

// Close releases the codec's decoders and pooled encoders.
func (c *Codec) Close() {
	c.dec.Close()
	c.bounded.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.encs {
		e.Close()
	}
	for _, d := range c.deltaDecs {
		d.Close()
	}
	c.encs, c.deltaDecs = nil, nil
}

// Decompress decompresses a body into dst (reusing its capacity) without
// checking it, for verify, which tells why a chunk fails; the decoder's
// memory is bounded whatever the body claims.
func (c *Codec) Decompress(dst, body []byte) ([]byte, error) {
	return c.dec.DecodeAll(body, dst)
}
