package journal

import (
	"errors"
	"fmt"
)

const (
	chunkMagic         = "CLNJCHK\x00"
	chunkFormatVersion = 1
	chunkHeaderSize    = 16 // magic, u32 version, u32 record count
	chunkRecordFixed   = 24 // u64 seq, u32 version, i64 nanos, u32 statement count
)

// EncodeChunk encodes a sealed run of logical records (replacements already
// resolved) as a change chunk: the raw bytes, which the store compresses and
// names by their hash. The encoding is canonical: DecodeChunk followed by
// EncodeChunk gives the same bytes. A zero Time is stored as "unknown"
// (legacy records); a Time outside years 1678 to 2262 cannot be represented
// and is stored as unknown too (the journal never produces one).
func EncodeChunk(recs []Record) []byte {
	n := chunkHeaderSize
	for i := range recs {
		n += chunkRecordFixed
		for _, s := range recs[i].Statements {
			n += 4 + len(s)
		}
	}
	b := make([]byte, 0, n)
	b = append(b, chunkMagic...)
	b = le.AppendUint32(b, chunkFormatVersion)
	b = le.AppendUint32(b, uint32(len(recs)))
	for i := range recs {
		r := &recs[i]
		nanos, _ := encodeTime(r.Time)
		b = le.AppendUint64(b, r.Seq)
		b = le.AppendUint32(b, r.Version)
		b = le.AppendUint64(b, uint64(nanos))
		b = le.AppendUint32(b, uint32(len(r.Statements)))
		for _, s := range r.Statements {
			b = le.AppendUint32(b, uint32(len(s)))
			b = append(b, s...)
		}
	}
	return b
}

// DecodeChunk decodes a change chunk made by EncodeChunk. It rejects an
// unknown format version, truncation, trailing bytes and counts or lengths
// that the input cannot hold, and never allocates more than a small multiple
// of len(b), whatever the input claims.
func DecodeChunk(b []byte) ([]Record, error) {
	if len(b) < chunkHeaderSize {
		return nil, fmt.Errorf("change chunk: %d bytes, shorter than its %d-byte header", len(b), chunkHeaderSize)
	}
	if string(b[:8]) != chunkMagic {
		return nil, errors.New("change chunk: bad magic")
	}
	if v := le.Uint32(b[8:]); v != chunkFormatVersion {
		return nil, fmt.Errorf("change chunk: unknown format version %d (this program reads version %d)", v, chunkFormatVersion)
	}
	count := le.Uint32(b[12:])
	d := chunkDecoder{b: b[chunkHeaderSize:]}
	if uint64(count) > uint64(len(d.b))/chunkRecordFixed {
		return nil, fmt.Errorf("change chunk: %d records cannot fit in %d bytes", count, len(d.b))
	}
	recs := make([]Record, count)
	for i := range recs {
		r := &recs[i]
		if len(d.b) < chunkRecordFixed {
			return nil, fmt.Errorf("change chunk: record %d of %d: truncated", i, count)
		}
		r.Seq = d.u64()
		r.Version = d.u32()
		r.Time = decodeTime(int64(d.u64()))
		nst := d.u32()
		if uint64(nst) > uint64(len(d.b))/4 {
			return nil, fmt.Errorf("change chunk: record %d (seq %d): %d statements cannot fit in %d bytes", i, r.Seq, nst, len(d.b))
		}
		if nst > 0 {
			r.Statements = make([]string, nst)
		}
		for k := range r.Statements {
			if len(d.b) < 4 {
				return nil, fmt.Errorf("change chunk: record %d (seq %d) statement %d: truncated", i, r.Seq, k)
			}
			n := d.u32()
			if uint64(n) > uint64(len(d.b)) {
				return nil, fmt.Errorf("change chunk: record %d (seq %d) statement %d: length %d exceeds the %d bytes left", i, r.Seq, k, n, len(d.b))
			}
			r.Statements[k] = string(d.b[:n])
			d.b = d.b[n:]
		}
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("change chunk: %d trailing bytes after %d records", len(d.b), count)
	}
	return recs, nil
}

// chunkDecoder consumes fixed-size fields; callers check the length first.
type chunkDecoder struct{ b []byte }

func (d *chunkDecoder) u32() uint32 {
	v := le.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *chunkDecoder) u64() uint64 {
	v := le.Uint64(d.b)
	d.b = d.b[8:]
	return v
}
