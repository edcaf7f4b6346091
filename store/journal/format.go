package journal

// This file is the one place that knows the segment layout (FORMAT.md): the
// segment header, the record frame and its payload, and the sequential frame
// reader used by Open, Read and Records.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"time"
)

const (
	segMagic         = "CLNJSEG\x00"
	segFormatVersion = 1
	headerSize       = 32
	frameHeaderSize  = 8  // u32 payload length, u32 crc32c
	payloadFixedSize = 25 // u8 kind, u64 seq, u32 version, i64 nanos, u32 count
	minFrameSize     = frameHeaderSize + payloadFixedSize

	// MaxPayload is the hard limit on one record's payload (its statements
	// plus 25 bytes of fixed fields). Append rejects larger records rather
	// than write something a reader would refuse; readers treat a larger
	// length as damage. lightningd transactions are far smaller (the biggest
	// seen, the schema creation, is about 40 KB).
	MaxPayload = 64 << 20

	kindAppend  = 1
	kindReplace = 2
)

// errUnknownVersion marks a segment written in a format this program does not
// know: not damage, so not ErrCorrupt.
var errUnknownVersion = errors.New("unknown segment format version")

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	le         = binary.LittleEndian
)

// encodeHeader returns the 32-byte header of a segment whose first record has
// seq first.
func encodeHeader(first uint64) []byte {
	h := make([]byte, headerSize)
	copy(h, segMagic)
	le.PutUint32(h[8:], segFormatVersion)
	le.PutUint64(h[12:], first)
	// h[20:28] reserved, zero.
	le.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	return h
}

// decodeHeader checks a segment header and returns its first seq. The
// version is checked before the checksum so that a segment written by a
// newer format is reported as such, not as damage.
func decodeHeader(h []byte) (uint64, error) {
	if len(h) < headerSize {
		return 0, fmt.Errorf("file is %d bytes, shorter than the %d-byte segment header", len(h), headerSize)
	}
	if string(h[:8]) != segMagic {
		return 0, errors.New("bad magic: not a journal segment")
	}
	if v := le.Uint32(h[8:]); v != segFormatVersion {
		return 0, fmt.Errorf("%w %d (this program reads version %d)", errUnknownVersion, v, segFormatVersion)
	}
	if crc32.Checksum(h[:28], castagnoli) != le.Uint32(h[28:]) {
		return 0, errors.New("segment header checksum mismatch")
	}
	return le.Uint64(h[12:]), nil
}

// encodeTime maps a time to the stored int64: Unix nanoseconds, with
// math.MinInt64 standing for the zero time.Time (unknown). ok is false for a
// time outside the range int64 nanoseconds can hold (years 1678 to 2262).
func encodeTime(t time.Time) (n int64, ok bool) {
	if t.IsZero() {
		return math.MinInt64, true
	}
	if t.Before(minTime) || t.After(maxTime) {
		return math.MinInt64, false
	}
	return t.UnixNano(), true
}

// decodeTime is the inverse of encodeTime.
func decodeTime(n int64) time.Time {
	if n == math.MinInt64 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

var (
	minTime = time.Unix(0, math.MinInt64+1)
	maxTime = time.Unix(0, math.MaxInt64)
)

// payloadSize returns the payload size of r, or an error if it exceeds
// MaxPayload.
func payloadSize(r *Record) (int, error) {
	n := payloadFixedSize
	for _, s := range r.Statements {
		n += 4 + len(s)
		if n > MaxPayload {
			return 0, fmt.Errorf("record of %d statements exceeds the %d-byte payload limit", len(r.Statements), MaxPayload)
		}
	}
	return n, nil
}

// appendFrame appends the frame of r (kind, r.Seq, r.Version, nanos) to dst.
func appendFrame(dst []byte, kind byte, r *Record, nanos int64) ([]byte, error) {
	n, err := payloadSize(r)
	if err != nil {
		return dst, err
	}
	start := len(dst)
	dst = le.AppendUint32(dst, uint32(n))
	dst = le.AppendUint32(dst, 0) // crc, filled below
	dst = append(dst, kind)
	dst = le.AppendUint64(dst, r.Seq)
	dst = le.AppendUint32(dst, r.Version)
	dst = le.AppendUint64(dst, uint64(nanos))
	dst = le.AppendUint32(dst, uint32(len(r.Statements)))
	for _, s := range r.Statements {
		dst = le.AppendUint32(dst, uint32(len(s)))
		dst = append(dst, s...)
	}
	p := dst[start+frameHeaderSize:]
	le.PutUint32(dst[start+4:], crc32.Checksum(p, castagnoli))
	return dst, nil
}

// payloadHead holds a payload's fixed fields.
type payloadHead struct {
	kind    byte
	seq     uint64
	version uint32
	nanos   int64
	count   uint32
}

// checkPayload validates a payload's structure (kind, statement count and
// lengths consuming it exactly) without allocating.
func checkPayload(p []byte) (payloadHead, error) {
	if len(p) < payloadFixedSize {
		return payloadHead{}, fmt.Errorf("payload of %d bytes is shorter than its fixed fields", len(p))
	}
	h := payloadHead{
		kind:    p[0],
		seq:     le.Uint64(p[1:]),
		version: le.Uint32(p[9:]),
		nanos:   int64(le.Uint64(p[13:])),
		count:   le.Uint32(p[21:]),
	}
	if h.kind != kindAppend && h.kind != kindReplace {
		return h, fmt.Errorf("unknown record kind %d", h.kind)
	}
	rest := p[payloadFixedSize:]
	if uint64(h.count) > uint64(len(rest))/4 {
		return h, fmt.Errorf("statement count %d does not fit in %d payload bytes", h.count, len(rest))
	}
	for i := uint32(0); i < h.count; i++ {
		if len(rest) < 4 {
			return h, fmt.Errorf("statement %d: length truncated", i)
		}
		n := le.Uint32(rest)
		rest = rest[4:]
		if uint64(n) > uint64(len(rest)) {
			return h, fmt.Errorf("statement %d: length %d exceeds the %d bytes left", i, n, len(rest))
		}
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return h, fmt.Errorf("%d bytes after the last statement", len(rest))
	}
	return h, nil
}

// decodePayload builds the Record of a payload already accepted by
// checkPayload.
func decodePayload(p []byte, h payloadHead) Record {
	r := Record{Seq: h.seq, Version: h.version, Time: decodeTime(h.nanos)}
	if h.count > 0 {
		r.Statements = make([]string, h.count)
		rest := p[payloadFixedSize:]
		for i := range r.Statements {
			n := le.Uint32(rest)
			r.Statements[i] = string(rest[4 : 4+n])
			rest = rest[4+n:]
		}
	}
	return r
}

// badRecord describes the first invalid record of a segment.
type badRecord struct {
	off    int64
	reason string
}

func (b *badRecord) String() string { return fmt.Sprintf("offset %d: %s", b.off, b.reason) }

// frameReader reads the frames of one segment sequentially, from a starting
// offset up to limit. It validates the frame (length bounds, crc), the payload
// structure and seq continuity. A zero length, or fewer than 4 bytes left, is
// the end of the records; with zeroTail the rest up to limit must then be
// zero, otherwise that position is reported as invalid.
type frameReader struct {
	br       *bufio.Reader
	off      int64 // offset of the next frame
	limit    int64
	expect   uint64 // seq the next record must carry
	zeroTail bool
	hdr      [frameHeaderSize]byte
	buf      []byte
}

func newFrameReader(r io.ReaderAt, off, limit int64, expect uint64, zeroTail bool) *frameReader {
	return &frameReader{
		br:       bufio.NewReaderSize(io.NewSectionReader(r, off, limit-off), 1<<16),
		off:      off,
		limit:    limit,
		expect:   expect,
		zeroTail: zeroTail,
	}
}

// next returns the payload (valid until the next call) and head of the next
// record. It returns (nil, nil, nil) at the end of the records, a *badRecord
// for an invalid one (fr.off is then its offset), or an I/O error.
func (fr *frameReader) next() ([]byte, payloadHead, *badRecord, error) {
	rem := fr.limit - fr.off
	if rem <= 0 {
		return nil, payloadHead{}, nil, nil
	}
	n := int64(frameHeaderSize)
	if rem < n {
		n = rem
	}
	if _, err := io.ReadFull(fr.br, fr.hdr[:n]); err != nil {
		return nil, payloadHead{}, nil, err
	}
	if n < 4 || le.Uint32(fr.hdr[:]) == 0 {
		// End marker (or a tail too short to hold one).
		if !allZero(fr.hdr[:n]) {
			return nil, payloadHead{}, fr.bad("non-zero bytes after the end of the records"), nil
		}
		if fr.zeroTail {
			off, err := firstNonZero(fr.br)
			if err != nil {
				return nil, payloadHead{}, nil, err
			}
			if off >= 0 {
				return nil, payloadHead{}, fr.bad(fmt.Sprintf("non-zero byte at offset %d after the end of the records", fr.off+n+off)), nil
			}
		}
		return nil, payloadHead{}, nil, nil
	}
	if n < frameHeaderSize {
		return nil, payloadHead{}, fr.bad("frame header cut by the end of the segment"), nil
	}
	length := int64(le.Uint32(fr.hdr[:]))
	if length < payloadFixedSize || length > MaxPayload {
		return nil, payloadHead{}, fr.bad(fmt.Sprintf("payload length %d out of bounds", length)), nil
	}
	if length > rem-frameHeaderSize {
		return nil, payloadHead{}, fr.bad(fmt.Sprintf("payload length %d runs past the end of the segment (%d bytes left)", length, rem-frameHeaderSize)), nil
	}
	if int64(cap(fr.buf)) < length {
		fr.buf = make([]byte, length)
	}
	p := fr.buf[:length]
	if _, err := io.ReadFull(fr.br, p); err != nil {
		return nil, payloadHead{}, nil, err
	}
	if crc32.Checksum(p, castagnoli) != le.Uint32(fr.hdr[4:]) {
		return nil, payloadHead{}, fr.bad("checksum mismatch"), nil
	}
	h, err := checkPayload(p)
	if err != nil {
		return nil, payloadHead{}, fr.bad(err.Error()), nil
	}
	if h.seq != fr.expect {
		return nil, payloadHead{}, fr.bad(fmt.Sprintf("seq %d where %d was expected", h.seq, fr.expect)), nil
	}
	fr.off += frameHeaderSize + length
	fr.expect++
	return p, h, nil, nil
}

func (fr *frameReader) bad(reason string) *badRecord {
	return &badRecord{off: fr.off, reason: reason}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// firstNonZero reads r to its end and returns the index of its first non-zero
// byte, or -1.
func firstNonZero(r io.Reader) (int64, error) {
	buf := make([]byte, 1<<15)
	var pos int64
	for {
		n, err := r.Read(buf)
		for i, c := range buf[:n] {
			if c != 0 {
				return pos + int64(i), nil
			}
		}
		pos += int64(n)
		if err == io.EOF {
			return -1, nil
		}
		if err != nil {
			return 0, err
		}
	}
}

// findValidAfter is the torn-tail test. tail holds a segment's bytes from the
// offset of its first invalid record (tailOff) to the end of the file. It
// reports the offset and seq of the first valid record in tail (any offset:
// frame, crc, payload structure, seq > lastGood), and the end of the non-zero
// region (absolute offset; tailOff if tail is all zero). A record at absolute
// offset y cannot carry a seq above first + (y-headerSize)/minFrameSize, since
// the records before it would not fit: that bound keeps garbage from being
// checksummed at every offset.
func findValidAfter(tail []byte, tailOff int64, first, lastGood uint64) (found bool, at int64, seq uint64, nonZeroEnd int64) {
	nonZeroEnd = tailOff
	for i := len(tail) - 1; i >= 0; i-- {
		if tail[i] != 0 {
			nonZeroEnd = tailOff + int64(i) + 1
			break
		}
	}
	for i := 0; i+minFrameSize <= len(tail); i++ {
		length := int64(le.Uint32(tail[i:]))
		if length < payloadFixedSize || length > MaxPayload || length > int64(len(tail)-i-frameHeaderSize) {
			continue
		}
		p := tail[i+frameHeaderSize : i+frameHeaderSize+int(length)]
		if p[0] != kindAppend && p[0] != kindReplace {
			continue
		}
		s := le.Uint64(p[1:])
		y := tailOff + int64(i)
		if s <= lastGood || s-first > uint64(y-headerSize)/minFrameSize {
			continue
		}
		if crc32.Checksum(p, castagnoli) != le.Uint32(tail[i+4:]) {
			continue
		}
		if _, err := checkPayload(p); err != nil {
			continue
		}
		return true, y, s, nonZeroEnd
	}
	return false, 0, 0, nonZeroEnd
}
