package remote

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/journal"
)

// The encodings of docs/remote-protocol.md ("Encodings used below"): the
// values messages are made of, each encoder next to its decoder. Messages
// (messages*.go) are built from these only.

// Length limits of decoded strings, so a hostile length field costs
// nothing: twice what a valid value may hold (backend.ValidName allows 512
// bytes, manifest.ValidNodeName 64); the handlers validate the value itself.
const (
	maxNameLen  = 1024 // an object name or list prefix
	maxNodeLen  = 256  // a node name
	maxOwnerLen = 64   // a lease owner id (16 hex digits today)
	// maxRecordStatements bounds the statements of one journal record on
	// the wire: 64 MiB of empty statements would otherwise decode into 16.7
	// million strings (over a gigabyte). lightningd's transactions hold far
	// fewer (the schema creation, the largest, about a thousand).
	maxRecordStatements = 1 << 20
)

// enc builds a payload.
type enc struct{ b []byte }

// dec reads a payload; the first error sticks, so a decoder reads every
// field and checks once at the end (done).
type dec struct {
	b   []byte
	err error
}

// errMalformed is wrapped by every decoding error; the server answers it
// with a bad-request error.
var errMalformed = errors.New("malformed message")

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errMalformed, what)
	}
	d.b = nil
}

// take returns the next n bytes, aliasing the payload.
func (d *dec) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.fail(what + " truncated")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// done fails when bytes are left over: a message has exactly one encoding.
func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d unexpected trailing bytes", len(d.b)))
	}
	return d.err
}

// finish is done with the name of the message, for the error.
func (d *dec) finish(what string) error {
	if err := d.done(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func (e *enc) u8(v byte)    { e.b = append(e.b, v) }
func (e *enc) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) i64(v int64)  { e.u64(uint64(v)) }

func (d *dec) u8() byte {
	if b := d.take(1, "u8"); b != nil {
		return b[0]
	}
	return 0
}
func (d *dec) u16() uint16 {
	if b := d.take(2, "u16"); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}
func (d *dec) u32() uint32 {
	if b := d.take(4, "u32"); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}
func (d *dec) u64() uint64 {
	if b := d.take(8, "u64"); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}
func (d *dec) i64() int64 { return int64(d.u64()) }

// bool is one byte, 0 or 1; any other value is malformed, so every value
// has one encoding.
func (e *enc) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}

func (d *dec) bool() bool {
	switch d.u8() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail("bool")
	return false
}

// str and bytes are a u32 length and that many bytes.
func (e *enc) str(s string)   { e.u32(uint32(len(s))); e.b = append(e.b, s...) }
func (e *enc) bytes(b []byte) { e.u32(uint32(len(b))); e.b = append(e.b, b...) }

// raw returns a length-prefixed byte string of at most max bytes, aliasing
// the payload.
func (d *dec) raw(max int) []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if int64(n) > int64(max) {
		d.fail(fmt.Sprintf("string of %d bytes exceeds %d", n, max))
		return nil
	}
	return d.take(int(n), "string")
}

func (d *dec) str(max int) string { return string(d.raw(max)) }

// id is a chunk id's 32 raw bytes.
func (e *enc) id(id chunker.ID) { e.b = append(e.b, id[:]...) }

func (d *dec) id() chunker.ID {
	var id chunker.ID
	if b := d.take(len(id), "chunk id"); b != nil {
		copy(id[:], b)
	}
	return id
}

// ids is a u32 count and that many chunk ids.
func (e *enc) ids(ids []chunker.ID) {
	e.u32(uint32(len(ids)))
	for _, id := range ids {
		e.id(id)
	}
}

// ids allows at most maxIDsPerRequest ids, and no more than the payload
// holds, before allocating.
func (d *dec) ids() []chunker.ID {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	if n > maxIDsPerRequest || uint64(n)*uint64(len(chunker.ID{})) > uint64(len(d.b)) {
		d.fail(fmt.Sprintf("%d chunk ids (at most %d, %d bytes left)", n, maxIDsPerRequest, len(d.b)))
		return nil
	}
	out := make([]chunker.ID, n)
	for i := range out {
		out[i] = d.id()
	}
	return out
}

// zeroTime encodes a zero time.Time (time.Time{} is outside the int64
// nanosecond range).
const zeroTime = math.MinInt64

// time is i64 Unix nanoseconds.
func (e *enc) time(t time.Time) {
	if t.IsZero() {
		e.i64(zeroTime)
		return
	}
	e.i64(t.UnixNano())
}

func (d *dec) time() time.Time {
	n := d.i64()
	if n == zeroTime {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// record is a journal record: u64 seq, u32 version, time, u32 n, n × str.
func (e *enc) record(r journal.Record) {
	e.u64(r.Seq)
	e.u32(r.Version)
	e.time(r.Time)
	e.u32(uint32(len(r.Statements)))
	for _, s := range r.Statements {
		e.str(s)
	}
}

// record checks the statement count against the payload before
// allocating; no statements decode as nil.
func (d *dec) record() journal.Record {
	r := journal.Record{Seq: d.u64(), Version: d.u32(), Time: d.time()}
	n := d.u32()
	if d.err != nil {
		return r
	}
	// Every statement takes at least its 4-byte length; each costs a
	// string header (16 bytes) once decoded, so the count is bounded too.
	if n > maxRecordStatements {
		d.fail(fmt.Sprintf("statement count %d exceeds the %d a record may hold", n, maxRecordStatements))
		return r
	}
	if uint64(n) > uint64(len(d.b))/4 {
		d.fail(fmt.Sprintf("statement count %d does not fit in %d bytes", n, len(d.b)))
		return r
	}
	if n > 0 {
		r.Statements = make([]string, n)
		for i := range r.Statements {
			r.Statements[i] = d.str(journal.MaxPayload)
		}
	}
	return r
}

// infoMinSize is the smallest encoded info (an empty name): list pages
// bound their entry count with it.
const infoMinSize = 4 + 8 + 8

// info is an object's str name, i64 size, time modtime.
func (e *enc) info(in backend.Info) {
	e.str(in.Name)
	e.i64(in.Size)
	e.time(in.ModTime)
}

func (d *dec) info() backend.Info {
	return backend.Info{Name: d.str(maxNameLen), Size: d.i64(), ModTime: d.time()}
}

// bodyDelta, set in a body's kind byte, says a base id follows: the body
// is a zstd delta against that chunk's full bytes.
const bodyDelta = 0x80

// bodyMinSize is the smallest encoded body (id, kind, raw size, empty
// bytes): put-bodies bounds its body count with it.
const bodyMinSize = 32 + 1 + 4 + 4

// body is a chunk body: id, u8 kind, [id base,] u32 raw size, str bytes.
func (e *enc) body(b chunk.Body) {
	e.id(b.ID)
	if b.Base != (chunker.ID{}) {
		e.u8(byte(b.Kind) | bodyDelta)
		e.id(b.Base)
	} else {
		e.u8(byte(b.Kind))
	}
	e.u32(b.Raw)
	e.bytes(b.Body)
}

// body decodes one chunk body; Body aliases the payload. A delta flag
// with a zero base is malformed: the zero id means "no base".
func (d *dec) body() chunk.Body {
	b := chunk.Body{ID: d.id()}
	k := d.u8()
	b.Kind = chunk.Kind(k &^ bodyDelta)
	if k&bodyDelta != 0 {
		b.Base = d.id()
		if d.err == nil && b.Base == (chunker.ID{}) {
			d.fail("delta body with a zero base id")
		}
	}
	b.Raw = d.u32()
	b.Body = d.raw(MaxRecordFrame)
	return b
}

// bodySize is the encoded size of b.
func bodySize(b chunk.Body) int {
	n := bodyMinSize + len(b.Body)
	if b.Base != (chunker.ID{}) {
		n += len(b.Base)
	}
	return n
}
