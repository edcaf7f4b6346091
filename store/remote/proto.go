// Package remote is the socket: store: a store server (Server) that serves a
// local store to many clients over TCP, and the client (Dial) that the
// store package uses for socket:HOST:PORT[?proxy=socks5:PHOST:PPORT] URLs.
// The wire protocol is described in docs/remote-protocol.md; this file is
// its framing, codec.go its value encodings, messages*.go its messages.
package remote

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

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
	msgQuota  byte = 0x15 // nothing: what the server counts against the token

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
	msgJStart   byte = 0x37 // node, u64 first seq, lease owner

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
	case msgPut, msgGet, msgStat, msgList, msgDelete, msgQuota, msgMissing, msgReadBodies,
		msgJOpen, msgJRecords, msgJTrim, msgJClose, msgJRead, msgJStart,
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
	case msgQuota:
		return "quota"
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
	case msgJStart:
		return "journal-start"
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
