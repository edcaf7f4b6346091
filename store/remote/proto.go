// Package remote is the socket: store: a store server (Server) that serves a
// local store to many clients over TCP, and the client (Dial) that the
// store package uses for socket:HOST:PORT[?proxy=socks5:PHOST:PPORT] URLs.
// The wire protocol is described in docs/remote-protocol.md; this file is
// its framing and encoding.
package remote

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

// ProtocolVersion is the version of the wire protocol this code speaks. A
// peer speaking another version is refused during the handshake.
const ProtocolVersion = 1

// magic opens every Hello: it tells a store server from anything else
// listening on a port.
const magic = "CLNBSTOR"

// Frame size limits. A frame is u8 type, u32 length, payload.
const (
	frameHeaderSize = 5
	// MaxHandshakeFrame bounds every frame before authentication.
	MaxHandshakeFrame = 4 << 10
	// MaxFrame bounds ordinary frames.
	MaxFrame = 8 << 20
	// MaxRecordFrame bounds frames that carry one journal record or one
	// chunk body (journal append/replace, record and body replies): a
	// record may hold up to journal.MaxPayload bytes.
	MaxRecordFrame = journal.MaxPayload + 64<<10
	// dataPiece is the size of the data frames objects travel in.
	dataPiece = 4 << 20
	// maxIDsPerRequest bounds the chunk ids of one Missing or ReadBodies
	// request (the client sends larger sets in batches).
	maxIDsPerRequest = 64 << 10
	// listPage is the number of names per List reply frame.
	listPage = 1000
)

// Message types. Requests go from client to server; every request is
// answered by zero or more stream frames (Data, Items, Body, Record) and
// exactly one final frame: OK (with a request-specific payload) or Error.
const (
	msgHello   byte = 0x01
	msgHelloOK byte = 0x02

	msgPut    byte = 0x10 // name, u64 size; then Data frames carrying size bytes
	msgGet    byte = 0x11 // name, i64 off, i64 length
	msgStat   byte = 0x12 // name
	msgList   byte = 0x13 // prefix, after
	msgDelete byte = 0x14 // name

	msgMissing    byte = 0x20 // u32 n, n ids
	msgPutBodies  byte = 0x21 // u32 n, n bodies
	msgReadBodies byte = 0x22 // u32 n, n ids

	msgJOpen    byte = 0x30 // node
	msgJAppend  byte = 0x31 // node, u64 expected next seq, record
	msgJReplace byte = 0x32 // node, u64 expected next seq, record
	msgJRecords byte = 0x33 // node, u64 after (journal opened by this session)
	msgJTrim    byte = 0x34 // node, u64 upto
	msgJClose   byte = 0x35 // node
	msgJRead    byte = 0x36 // node, u64 after (without opening)

	msgData   byte = 0x40 // a piece of an object, either direction
	msgOK     byte = 0x80
	msgItems  byte = 0x81 // a page of List entries
	msgBody   byte = 0x82 // one chunk body
	msgRecord byte = 0x83 // one journal record
	msgError  byte = 0x8f // u8 code, message
)

// frameLimit is the largest payload a frame of type typ may carry after the
// handshake; 0 for an unknown type.
func frameLimit(typ byte) int {
	switch typ {
	case msgJAppend, msgJReplace, msgRecord, msgBody, msgPutBodies:
		return MaxRecordFrame
	case msgPut, msgGet, msgStat, msgList, msgDelete, msgMissing, msgReadBodies,
		msgJOpen, msgJRecords, msgJTrim, msgJClose, msgJRead,
		msgData, msgOK, msgItems, msgError:
		return MaxFrame
	case msgHello, msgHelloOK:
		return MaxHandshakeFrame
	}
	return 0
}

func msgName(typ byte) string {
	switch typ {
	case msgHello:
		return "hello"
	case msgHelloOK:
		return "hello-ok"
	case msgPut:
		return "put"
	case msgGet:
		return "get"
	case msgStat:
		return "stat"
	case msgList:
		return "list"
	case msgDelete:
		return "delete"
	case msgMissing:
		return "missing"
	case msgPutBodies:
		return "put-bodies"
	case msgReadBodies:
		return "read-bodies"
	case msgJOpen:
		return "journal-open"
	case msgJAppend:
		return "journal-append"
	case msgJReplace:
		return "journal-replace"
	case msgJRecords:
		return "journal-records"
	case msgJTrim:
		return "journal-trim"
	case msgJClose:
		return "journal-close"
	case msgJRead:
		return "journal-read"
	case msgData:
		return "data"
	case msgOK:
		return "ok"
	case msgItems:
		return "items"
	case msgBody:
		return "body"
	case msgRecord:
		return "record"
	case msgError:
		return "error"
	}
	return fmt.Sprintf("0x%02x", typ)
}

// errFrameTooLarge is wrapped when a frame's length field exceeds the limit
// for its type: the frame is refused before its payload is read.
var errFrameTooLarge = errors.New("frame exceeds the size limit")

// errUnknownType is wrapped when a frame has a type this side does not know.
var errUnknownType = errors.New("unknown message type")

// readHeader reads a frame header.
func readHeader(r io.Reader) (typ byte, n uint32, err error) {
	var h [frameHeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, 0, err
	}
	return h[0], binary.BigEndian.Uint32(h[1:]), nil
}

// readPayload reads n bytes, growing the buffer only as bytes arrive, so a
// peer announcing a large frame and sending little costs little memory.
// progress (may be nil) is called after each piece (to push deadlines).
func readPayload(r io.Reader, n int, buf []byte, progress func()) ([]byte, error) {
	buf = buf[:0]
	const first = 64 << 10
	for len(buf) < n {
		step := min(n-len(buf), max(first, len(buf)))
		if cap(buf)-len(buf) < step {
			nb := make([]byte, len(buf), len(buf)+step)
			copy(nb, buf)
			buf = nb
		}
		if _, err := io.ReadFull(r, buf[len(buf):len(buf)+step]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		buf = buf[:len(buf)+step]
		if progress != nil {
			progress()
		}
	}
	return buf, nil
}

// readFrame reads one frame whose size limit is given by limit (0 refuses
// the type).
func readFrame(r io.Reader, limit func(byte) int, progress func()) (byte, []byte, error) {
	typ, n, err := readHeader(r)
	if err != nil {
		return 0, nil, err
	}
	max := limit(typ)
	if max == 0 {
		return typ, nil, fmt.Errorf("%w %s (length %d)", errUnknownType, msgName(typ), n)
	}
	if int64(n) > int64(max) {
		return typ, nil, fmt.Errorf("%s frame of %d bytes: %w of %d bytes", msgName(typ), n, errFrameTooLarge, max)
	}
	p, err := readPayload(r, int(n), nil, progress)
	return typ, p, err
}

// writeFrame buffers one frame.
func writeFrame(w *bufio.Writer, typ byte, payload []byte) error {
	var h [frameHeaderSize]byte
	h[0] = typ
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// enc builds a payload.
type enc struct{ b []byte }

func (e *enc) u8(v byte)    { e.b = append(e.b, v) }
func (e *enc) u16(v uint16) { e.b = binary.BigEndian.AppendUint16(e.b, v) }
func (e *enc) u32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) u64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) i64(v int64)  { e.u64(uint64(v)) }
func (e *enc) bool(v bool) {
	if v {
		e.u8(1)
	} else {
		e.u8(0)
	}
}
func (e *enc) str(s string)     { e.u32(uint32(len(s))); e.b = append(e.b, s...) }
func (e *enc) bytes(b []byte)   { e.u32(uint32(len(b))); e.b = append(e.b, b...) }
func (e *enc) id(id chunker.ID) { e.b = append(e.b, id[:]...) }

// zeroTime encodes a zero time.Time (time.Time{} is outside the int64
// nanosecond range).
const zeroTime = math.MinInt64

func (e *enc) time(t time.Time) {
	if t.IsZero() {
		e.i64(zeroTime)
		return
	}
	e.i64(t.UnixNano())
}

func (e *enc) record(r journal.Record) {
	e.u64(r.Seq)
	e.u32(r.Version)
	e.time(r.Time)
	e.u32(uint32(len(r.Statements)))
	for _, s := range r.Statements {
		e.str(s)
	}
}

// errMalformed is wrapped by every decoding error.
var errMalformed = errors.New("malformed message")

// dec reads a payload; the first error sticks.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errMalformed, what)
	}
	d.b = nil
}

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

// raw returns a length-prefixed byte string, aliasing the payload.
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

func (d *dec) id() chunker.ID {
	var id chunker.ID
	if b := d.take(len(id), "chunk id"); b != nil {
		copy(id[:], b)
	}
	return id
}

func (d *dec) time() time.Time {
	n := d.i64()
	if n == zeroTime {
		return time.Time{}
	}
	return time.Unix(0, n)
}

func (d *dec) record() journal.Record {
	r := journal.Record{Seq: d.u64(), Version: d.u32(), Time: d.time()}
	n := d.u32()
	if d.err != nil {
		return r
	}
	// Every statement takes at least its 4-byte length.
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

// ids decodes a u32 count and that many chunk ids.
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

// bodyDelta, set in a body's kind byte, says a base id follows: the body
// is a zstd delta against that chunk's full bytes.
const bodyDelta = 0x80

// body decodes one chunk body; Body aliases the payload.
func (d *dec) body() store.ChunkBody {
	b := store.ChunkBody{ID: d.id()}
	k := d.u8()
	b.Kind = store.Kind(k &^ bodyDelta)
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

func (e *enc) body(b store.ChunkBody) {
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

// done fails when bytes are left over.
func (d *dec) done() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d unexpected trailing bytes", len(d.b)))
	}
	return d.err
}

// hello is the client's first frame.
type hello struct {
	Magic   string
	Version uint16
	Token   string
	Client  string // program and host, for the server's log
}

func (h hello) encode() []byte {
	var e enc
	e.b = append(e.b, h.Magic...)
	e.u16(h.Version)
	e.str(h.Token)
	e.str(h.Client)
	return e.b
}

func decodeHello(p []byte) (hello, error) {
	d := dec{b: p}
	var h hello
	h.Magic = string(d.take(len(magic), "magic"))
	if d.err == nil && h.Magic != magic {
		return h, fmt.Errorf("%w: not a store client (bad magic)", errMalformed)
	}
	h.Version = d.u16()
	if d.err == nil && h.Version != ProtocolVersion {
		// Refused by the caller with its own message; the rest of the
		// frame is another version's business.
		return h, nil
	}
	h.Token = d.str(MaxHandshakeFrame)
	h.Client = d.str(MaxHandshakeFrame)
	return h, d.done()
}

// helloOK is the server's answer to an accepted Hello.
type helloOK struct {
	Version uint16
	Admin   bool
	Label   string
	Nodes   []string
}

func (h helloOK) encode() []byte {
	var e enc
	e.b = append(e.b, magic...)
	e.u16(h.Version)
	e.bool(h.Admin)
	e.str(h.Label)
	e.u16(uint16(len(h.Nodes)))
	for _, n := range h.Nodes {
		e.str(n)
	}
	return e.b
}

func decodeHelloOK(p []byte) (helloOK, error) {
	d := dec{b: p}
	var h helloOK
	if m := string(d.take(len(magic), "magic")); d.err == nil && m != magic {
		return h, fmt.Errorf("%w: the peer is not a store server (bad magic)", errMalformed)
	}
	h.Version = d.u16()
	h.Admin = d.bool()
	h.Label = d.str(MaxHandshakeFrame)
	n := d.u16()
	for i := 0; i < int(n) && d.err == nil; i++ {
		h.Nodes = append(h.Nodes, d.str(MaxHandshakeFrame))
	}
	return h, d.done()
}
