package store

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/klauspost/compress/zstd"
)

// codec compresses chunk bodies and decodes and verifies stored ones. It is
// shared by everything that touches bodies (the Writer, reads, gc's repack,
// verify, a store server checking what clients send), so that every body is
// checked against its id the same way, wherever it comes from. Encoders and
// delta decoders are pooled: a new encoder costs megabytes of tables.
type codec struct {
	dec *zstd.Decoder // full bodies; safe for concurrent DecodeAll

	mu        sync.Mutex
	encs      []*zstd.Encoder
	deltaDecs []*zstd.Decoder // each decode sets its base as dictionary
}

// maxDecoderMemory bounds what one decode may allocate: a hostile frame
// cannot claim more (chunks are at most MaxChunkSize).
const maxDecoderMemory = 64 << 20

func newCodec() (*codec, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(maxDecoderMemory))
	if err != nil {
		return nil, err
	}
	return &codec{dec: dec}, nil
}

// encoder takes a single-threaded encoder from the pool.
func (c *codec) encoder() (*zstd.Encoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.encs); n > 0 {
		e := c.encs[n-1]
		c.encs = c.encs[:n-1]
		return e, nil
	}
	return zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
}

func (c *codec) putEncoder(e *zstd.Encoder) {
	c.mu.Lock()
	c.encs = append(c.encs, e)
	c.mu.Unlock()
}

func (c *codec) deltaDecoder() (*zstd.Decoder, error) {
	c.mu.Lock()
	if n := len(c.deltaDecs); n > 0 {
		d := c.deltaDecs[n-1]
		c.deltaDecs = c.deltaDecs[:n-1]
		c.mu.Unlock()
		return d, nil
	}
	c.mu.Unlock()
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxDecoderMemory))
}

func (c *codec) putDeltaDecoder(d *zstd.Decoder) {
	c.mu.Lock()
	c.deltaDecs = append(c.deltaDecs, d)
	c.mu.Unlock()
}

// origin names where a body came from, for messages: its pack, else from.
func origin(b ChunkBody, from string) string {
	if b.Pack != (chunker.ID{}) {
		return "pack " + b.Pack.String()
	}
	if from == "" {
		return "the store"
	}
	return from
}

// decode decompresses a full chunk body into dst (reusing its capacity) and
// verifies it against its id. from names the body's origin for messages
// when it did not come from a pack (see origin).
func (c *codec) decode(dst []byte, b ChunkBody, from string) ([]byte, error) {
	if b.Raw > MaxChunkSize {
		return nil, fmt.Errorf("read chunk %s from %s: %w: size %d exceeds the %d-byte limit; run backup-cli verify", b.ID, origin(b, from), ErrCorrupt, b.Raw, MaxChunkSize)
	}
	if dst == nil {
		dst = make([]byte, 0, b.Raw)
	}
	data, err := c.dec.DecodeAll(b.Body, dst)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s from %s: %w: cannot decompress (%v); run backup-cli verify", b.ID, origin(b, from), ErrCorrupt, err)
	}
	if uint32(len(data)) != b.Raw || chunker.Sum(data) != b.ID {
		return nil, fmt.Errorf("read chunk %s from %s: %w: hash mismatch; run backup-cli verify", b.ID, origin(b, from), ErrCorrupt)
	}
	return data, nil
}

// decodeDelta decompresses a delta body with its base's full bytes as raw
// dictionary into dst and verifies the result against the chunk's id.
func (c *codec) decodeDelta(dst []byte, b ChunkBody, base []byte, from string) ([]byte, error) {
	if b.Raw > MaxChunkSize {
		return nil, fmt.Errorf("read chunk %s from %s: %w: size %d exceeds the %d-byte limit; run backup-cli verify", b.ID, origin(b, from), ErrCorrupt, b.Raw, MaxChunkSize)
	}
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
	data, err := dec.DecodeAll(b.Body, dst)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s (a delta of chunk %s) from %s: %w: cannot decompress (%v); run backup-cli verify", b.ID, b.Base, origin(b, from), ErrCorrupt, err)
	}
	if uint32(len(data)) != b.Raw || chunker.Sum(data) != b.ID {
		return nil, fmt.Errorf("read chunk %s (a delta of chunk %s) from %s: %w: hash mismatch; run backup-cli verify", b.ID, b.Base, origin(b, from), ErrCorrupt)
	}
	return data, nil
}

func (c *codec) close() {
	c.dec.Close()
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
