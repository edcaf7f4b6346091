package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/clnbackup/backup/chunker"
)

// Kind says what a chunk holds; the index records it so that verify and gc
// can report by kind without reading chunks.
type Kind uint8

// Chunk kinds.
const (
	KindPage   Kind = 1 // a database page
	KindList   Kind = 2 // a list chunk of page IDs (manifest.EncodeList)
	KindPatch  Kind = 3 // a patch chunk of page IDs (manifest.EncodePatch)
	KindChange Kind = 4 // sealed journal records (journal.EncodeChunk)
)

func (k Kind) String() string {
	switch k {
	case KindPage:
		return "page"
	case KindList:
		return "list"
	case KindPatch:
		return "patch"
	case KindChange:
		return "change"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MaxChunkSize bounds one chunk's uncompressed size.
const MaxChunkSize = 16 << 20

// Pack and index layout (see docs/store-format.md):
//
//	pack  = compressed chunk bodies ... | index (pack id zero) | nonce [16] | u32 index length | "CLNPACK1"
//	index = "CLNIDX" u16 version | pack id [32] | u32 count | entries
//	entry = chunk id [32] | u8 kind | u32 offset | u32 stored length | u32 raw length
const (
	indexMagic     = "CLNIDX"
	indexVersion   = 1
	indexHeaderLen = 6 + 2 + chunker.IDSize + 4
	indexEntryLen  = chunker.IDSize + 1 + 4 + 4 + 4
	packMagic      = "CLNPACK1"
	packNonceLen   = 16
	packTrailerLen = packNonceLen + 4 + len(packMagic)
	// maxIndexEntries bounds the entries one index may claim.
	maxIndexEntries = 1 << 22
)

// indexEntry locates one chunk inside a pack.
type indexEntry struct {
	ID     chunker.ID
	Kind   Kind
	Offset uint32
	Length uint32 // stored (compressed) length
	Raw    uint32 // uncompressed length
}

func encodeIndex(pack chunker.ID, entries []indexEntry) []byte {
	b := make([]byte, 0, indexHeaderLen+len(entries)*indexEntryLen)
	b = append(b, indexMagic...)
	b = binary.BigEndian.AppendUint16(b, indexVersion)
	b = append(b, pack[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = append(b, e.ID[:]...)
		b = append(b, byte(e.Kind))
		b = binary.BigEndian.AppendUint32(b, e.Offset)
		b = binary.BigEndian.AppendUint32(b, e.Length)
		b = binary.BigEndian.AppendUint32(b, e.Raw)
	}
	return b
}

// decodeIndex parses an index. packLen, when not negative, is the size of
// the pack's data area, and every entry must lie inside it.
func decodeIndex(b []byte, packLen int64) (chunker.ID, []indexEntry, error) {
	var pack chunker.ID
	if len(b) < indexHeaderLen || string(b[:6]) != indexMagic {
		return pack, nil, fmt.Errorf("not a pack index")
	}
	if v := binary.BigEndian.Uint16(b[6:8]); v != indexVersion {
		return pack, nil, fmt.Errorf("pack index format version %d unknown (this program reads %d): upgrade backup-cli", v, indexVersion)
	}
	copy(pack[:], b[8:])
	n := binary.BigEndian.Uint32(b[8+chunker.IDSize:])
	if n > maxIndexEntries || uint64(len(b)-indexHeaderLen) != uint64(n)*indexEntryLen {
		return pack, nil, fmt.Errorf("pack index: %d entries do not match %d bytes", n, len(b)-indexHeaderLen)
	}
	entries := make([]indexEntry, n)
	for i := range entries {
		o := indexHeaderLen + i*indexEntryLen
		e := &entries[i]
		copy(e.ID[:], b[o:])
		e.Kind = Kind(b[o+chunker.IDSize])
		e.Offset = binary.BigEndian.Uint32(b[o+chunker.IDSize+1:])
		e.Length = binary.BigEndian.Uint32(b[o+chunker.IDSize+5:])
		e.Raw = binary.BigEndian.Uint32(b[o+chunker.IDSize+9:])
		if e.Kind < KindPage || e.Kind > KindChange {
			return pack, nil, fmt.Errorf("pack index: entry %d: unknown chunk kind %d", i, e.Kind)
		}
		if e.Raw > MaxChunkSize {
			return pack, nil, fmt.Errorf("pack index: entry %d: chunk of %d bytes exceeds the limit", i, e.Raw)
		}
		if packLen >= 0 && int64(e.Offset)+int64(e.Length) > packLen {
			return pack, nil, fmt.Errorf("pack index: entry %d lies outside the pack", i)
		}
	}
	return pack, entries, nil
}

// buildPack appends the trailer (the pack's own copy of its index) to the
// chunk bodies, so a pack can be re-indexed from itself alone. The random
// nonce makes every pack a new object: a writer that stores chunks again
// must never find its pack "already there" as a copy gc is deleting.
func buildPack(bodies []byte, entries []indexEntry) []byte {
	idx := encodeIndex(chunker.ID{}, entries)
	pack := make([]byte, 0, len(bodies)+len(idx)+packTrailerLen)
	pack = append(pack, bodies...)
	pack = append(pack, idx...)
	var nonce [packNonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on Linux
	}
	pack = append(pack, nonce[:]...)
	pack = binary.BigEndian.AppendUint32(pack, uint32(len(idx)))
	return append(pack, packMagic...)
}

// parsePackTrailer returns the entries recorded in a whole pack's trailer.
func parsePackTrailer(pack []byte) ([]indexEntry, error) {
	if len(pack) < packTrailerLen || !bytes.Equal(pack[len(pack)-len(packMagic):], []byte(packMagic)) {
		return nil, fmt.Errorf("not a pack (bad trailer)")
	}
	n := int64(binary.BigEndian.Uint32(pack[len(pack)-4-len(packMagic):]))
	start := int64(len(pack)-packTrailerLen) - n
	if start < 0 {
		return nil, fmt.Errorf("pack trailer: index length %d exceeds pack", n)
	}
	_, entries, err := decodeIndex(pack[start:len(pack)-packTrailerLen], start)
	return entries, err
}

func packName(id chunker.ID) string {
	s := id.String()
	return "packs/" + s[:2] + "/" + s
}

func indexName(id chunker.ID) string {
	s := id.String()
	return "index/" + s[:2] + "/" + s
}
