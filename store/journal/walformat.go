package journal

// This file is the one place that knows the layout of the group-commit
// write-ahead log (WAL.md): its two header slots and its frames.

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

const (
	walMagic         = "CLNJWAL\x00"
	walFormatVersion = 1
	walSlotSize      = 32
	// walSlot1 is the offset of the second header slot: another sector
	// than the first, so that a torn header write spoils at most one.
	walSlot1 = 512
	// walDataStart is the offset of the first frame.
	walDataStart = 4096
	// walFixed is a frame body's fixed part: u64 generation, u8 node
	// name length.
	walFixed = 9
	// maxWALNode bounds a node name in a frame (node names are far
	// shorter; the store checks them again on replay).
	maxWALNode = 255
	// maxWALBody bounds a frame body: the fixed part, a node name and the
	// largest journal payload.
	maxWALBody = walFixed + maxWALNode + MaxPayload
)

// errBadWAL marks a WAL whose headers are both unreadable: acknowledged
// changes may be in it, so it is not silently reset.
var errBadWAL = errors.New("write-ahead log header damaged")

// encodeWALSlot returns a 32-byte header slot naming generation gen.
func encodeWALSlot(gen uint64) []byte {
	h := make([]byte, walSlotSize)
	copy(h, walMagic)
	le.PutUint32(h[8:], walFormatVersion)
	le.PutUint64(h[12:], gen)
	le.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	return h
}

// decodeWALSlot returns a slot's generation; ok is false for a slot that is
// not a valid header (torn, zero, damaged).
func decodeWALSlot(h []byte) (gen uint64, ok bool, err error) {
	if len(h) < walSlotSize || string(h[:8]) != walMagic {
		return 0, false, nil
	}
	if crc32.Checksum(h[:28], castagnoli) != le.Uint32(h[28:]) {
		return 0, false, nil
	}
	if v := le.Uint32(h[8:]); v != walFormatVersion {
		return 0, false, fmt.Errorf("write-ahead log format version %d is not supported (this program reads version %d): use a backup-cli that matches the store", v, walFormatVersion)
	}
	return le.Uint64(h[12:]), true, nil
}

// walGeneration returns the current generation: the higher of the two
// valid slots. Slot gen%2 is the one a reset to gen writes.
func walGeneration(head []byte) (uint64, error) {
	var best uint64
	found := false
	for _, off := range []int{0, walSlot1} {
		if len(head) < off+walSlotSize {
			continue
		}
		gen, ok, err := decodeWALSlot(head[off : off+walSlotSize])
		if err != nil {
			return 0, err
		}
		if ok && (!found || gen > best) {
			best, found = gen, true
		}
	}
	if !found {
		return 0, errBadWAL
	}
	return best, nil
}

// walSlotOffset is where a reset to generation gen writes its header.
func walSlotOffset(gen uint64) int64 {
	if gen%2 == 0 {
		return 0
	}
	return walSlot1
}

// appendWALFrame appends the frame carrying a journal frame's payload
// (jframe: as appendFrame made it) for node in generation gen.
func appendWALFrame(dst []byte, gen uint64, node string, jframe []byte) []byte {
	payload := jframe[frameHeaderSize:]
	n := walFixed + len(node) + len(payload)
	start := len(dst)
	dst = le.AppendUint32(dst, uint32(n))
	dst = le.AppendUint32(dst, 0) // crc, below
	dst = le.AppendUint64(dst, gen)
	dst = append(dst, byte(len(node)))
	dst = append(dst, node...)
	dst = append(dst, payload...)
	le.PutUint32(dst[start+4:], crc32.Checksum(dst[start+frameHeaderSize:], castagnoli))
	return dst
}

// crc32c is the checksum of WAL frames, as of journal frames.
func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// walRecord is one frame read back from the WAL.
type walRecord struct {
	node string
	kind byte
	rec  Record
}

// decodeWAL reads the frames of generation gen from r, from off up to
// size, and calls fn for each, until the end: a zero length, a frame of
// another generation, or the first invalid frame. Frames after an invalid
// one were never acknowledged: a batch is acknowledged only once all of it
// is durable, and every earlier batch was. It returns the offset after the
// last valid frame. A length is checked against what is left before
// anything is allocated for it.
func decodeWAL(r io.ReaderAt, off, size int64, gen uint64, fn func(walRecord) error) (int64, error) {
	var hdr [frameHeaderSize]byte
	var body []byte
	for {
		if size-off < frameHeaderSize {
			return off, nil
		}
		if _, err := r.ReadAt(hdr[:], off); err != nil {
			return off, err
		}
		n := int64(le.Uint32(hdr[:]))
		if n < walFixed+payloadFixedSize || n > maxWALBody || n > size-off-frameHeaderSize {
			return off, nil
		}
		if int64(cap(body)) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := r.ReadAt(body, off+frameHeaderSize); err != nil && err != io.EOF {
			return off, err
		}
		rec, ok := decodeWALBody(body, le.Uint32(hdr[4:]), gen)
		if !ok {
			return off, nil
		}
		if err := fn(rec); err != nil {
			return off, err
		}
		off += frameHeaderSize + n
	}
}

// decodeWALBody checks a frame body against its crc and generation and
// decodes it.
func decodeWALBody(body []byte, crc uint32, gen uint64) (walRecord, bool) {
	if crc32c(body) != crc || le.Uint64(body) != gen {
		return walRecord{}, false
	}
	nl := int(body[8])
	if walFixed+nl+payloadFixedSize > len(body) {
		return walRecord{}, false
	}
	p := body[walFixed+nl:]
	h, err := checkPayload(p)
	if err != nil {
		return walRecord{}, false
	}
	return walRecord{node: string(body[walFixed : walFixed+nl]), kind: h.kind, rec: decodePayload(p, h)}, true
}

// readWAL reads the header slots and the frames of the current generation
// from f.
func readWAL(f io.ReaderAt, size int64) (gen uint64, recs []walRecord, end int64, err error) {
	head := make([]byte, min(size, walDataStart))
	if _, err := f.ReadAt(head, 0); err != nil && err != io.EOF {
		return 0, nil, 0, err
	}
	if gen, err = walGeneration(head); err != nil {
		return 0, nil, 0, err
	}
	end, err = decodeWAL(f, walDataStart, size, gen, func(r walRecord) error {
		recs = append(recs, r)
		return nil
	})
	return gen, recs, end, err
}
