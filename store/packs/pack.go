package packs

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"

	"github.com/clnbackup/backup/chunker"
)

// Pack and index layout (see docs/store-format.md):
//
//	pack  = compressed chunk bodies ... | index (pack id zero) | nonce [16] | u32 index length | "CLNPACK1"
//	index = "CLNIDX" u16 version | pack id [32] | u32 count | entries
//	entry = chunk id [32] | u8 kind | u32 offset | u32 stored length | u32 raw length
//	        [base id [32], version 2 only, when kind has kindDelta set]
const (
	indexMagic = "CLNIDX"
	// indexVersion1 is the index of version-1 stores; indexVersion2, of
	// version-2 stores, adds delta entries.
	indexVersion1  = 1
	indexVersion2  = 2
	indexHeaderLen = 6 + 2 + chunker.IDSize + 4
	indexEntryLen  = chunker.IDSize + 1 + 4 + 4 + 4
	// kindDelta, set in an entry's kind byte (index version 2), marks a
	// delta copy: the body is a zstd frame compressed with the full bytes
	// of the base chunk, whose id follows the entry, as raw dictionary.
	kindDelta      = 0x80
	packMagic      = "CLNPACK1"
	packNonceLen   = 16
	packTrailerLen = packNonceLen + 4 + len(packMagic)
	// maxIndexEntries bounds the entries one index may claim.
	maxIndexEntries = 1 << 22
	// maxIndexSize is the largest index walkIndex accepts: every entry a
	// delta with its base id. An index object listed larger is refused
	// before anything is read, so a store cannot make a pass over the
	// indexes hold more.
	maxIndexSize = indexHeaderLen + maxIndexEntries*(indexEntryLen+chunker.IDSize)
	// maxPackSize bounds the packs verify and gc read whole: the largest
	// pack_size a store may have, one chunk past it (a writer closes a
	// pack after the chunk that reaches the size), the index and the
	// trailer.
	maxPackSize = int64(1<<30 + 2*chunk.MaxSize + maxIndexSize + packTrailerLen)
)

// checkIndexSize refuses an index object listed at a size no index has.
func checkIndexSize(in backend.Info) error {
	if in.Size < indexHeaderLen || in.Size > maxIndexSize {
		return fmt.Errorf("index %s is listed as %d bytes, outside the %d..%d an index can have", in.Name, in.Size, indexHeaderLen, maxIndexSize)
	}
	return nil
}

// encodeIndex encodes an index in the given index version (1 cannot hold
// delta entries: the caller never has any for a version-1 store).
func encodeIndex(version uint16, pack chunker.ID, entries []chunk.Entry) []byte {
	n := indexHeaderLen + len(entries)*indexEntryLen
	for _, e := range entries {
		if e.Delta() {
			n += chunker.IDSize
		}
	}
	b := make([]byte, 0, n)
	b = append(b, indexMagic...)
	b = binary.BigEndian.AppendUint16(b, version)
	b = append(b, pack[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = append(b, e.ID[:]...)
		k := byte(e.Kind)
		if e.Delta() {
			if version < indexVersion2 {
				panic("store: delta entry in a version-1 index")
			}
			k |= kindDelta
		}
		b = append(b, k)
		b = binary.BigEndian.AppendUint32(b, e.Offset)
		b = binary.BigEndian.AppendUint32(b, e.Length)
		b = binary.BigEndian.AppendUint32(b, e.Raw)
		if e.Delta() {
			b = append(b, e.Base[:]...)
		}
	}
	return b
}

// decodeIndex parses an index. packLen, when not negative, is the size of
// the pack's data area, and every entry must lie inside it.
func decodeIndex(b []byte, packLen int64) (chunker.ID, []chunk.Entry, error) {
	var entries []chunk.Entry
	pack, err := walkIndex(b, packLen, func(n int) { entries = make([]chunk.Entry, 0, n) }, func(e *chunk.Entry) { entries = append(entries, *e) })
	if err != nil {
		return pack, nil, err
	}
	return pack, entries, nil
}

// walkIndex checks and parses an index without holding its entries: count
// is called with the number of entries, then fn with each (the entry is
// only valid during the call). On error fn may have seen some entries.
func walkIndex(b []byte, packLen int64, count func(n int), fn func(e *chunk.Entry)) (chunker.ID, error) {
	var pack chunker.ID
	if len(b) < indexHeaderLen || string(b[:6]) != indexMagic {
		return pack, fmt.Errorf("not a pack index")
	}
	v := binary.BigEndian.Uint16(b[6:8])
	if v != indexVersion1 && v != indexVersion2 {
		return pack, fmt.Errorf("pack index format version %d unknown (this program reads %d and %d): upgrade backup-cli", v, indexVersion1, indexVersion2)
	}
	copy(pack[:], b[8:])
	n := binary.BigEndian.Uint32(b[8+chunker.IDSize:])
	rest := uint64(len(b) - indexHeaderLen)
	if n > maxIndexEntries || rest < uint64(n)*indexEntryLen || (v == indexVersion1 && rest != uint64(n)*indexEntryLen) {
		return pack, fmt.Errorf("pack index: %d entries do not match %d bytes", n, len(b)-indexHeaderLen)
	}
	if count != nil {
		count(int(n))
	}
	var e chunk.Entry
	o := indexHeaderLen
	for i := 0; i < int(n); i++ {
		if len(b)-o < indexEntryLen {
			return pack, fmt.Errorf("pack index: %d entries do not match %d bytes", n, len(b)-indexHeaderLen)
		}
		copy(e.ID[:], b[o:])
		k := b[o+chunker.IDSize]
		e.Kind = chunk.Kind(k &^ kindDelta)
		e.Offset = binary.BigEndian.Uint32(b[o+chunker.IDSize+1:])
		e.Length = binary.BigEndian.Uint32(b[o+chunker.IDSize+5:])
		e.Raw = binary.BigEndian.Uint32(b[o+chunker.IDSize+9:])
		e.Base = chunker.ID{}
		o += indexEntryLen
		if e.Kind < chunk.KindPage || e.Kind > chunk.KindChange || (v == indexVersion1 && k&kindDelta != 0) {
			return pack, fmt.Errorf("pack index: entry %d: unknown chunk kind %d", i, k)
		}
		if k&kindDelta != 0 {
			if len(b)-o < chunker.IDSize {
				return pack, fmt.Errorf("pack index: %d entries do not match %d bytes", n, len(b)-indexHeaderLen)
			}
			copy(e.Base[:], b[o:])
			o += chunker.IDSize
			switch {
			case e.Kind != chunk.KindPage:
				return pack, fmt.Errorf("pack index: entry %d: a %s chunk stored as a delta (only pages may be)", i, e.Kind)
			case !e.Delta():
				return pack, fmt.Errorf("pack index: entry %d: delta with a zero base id", i)
			case e.Base == e.ID:
				return pack, fmt.Errorf("pack index: entry %d: delta against itself", i)
			}
		}
		if e.Raw > chunk.MaxSize {
			return pack, fmt.Errorf("pack index: entry %d: chunk of %d bytes exceeds the limit", i, e.Raw)
		}
		if packLen >= 0 && int64(e.Offset)+int64(e.Length) > packLen {
			return pack, fmt.Errorf("pack index: entry %d lies outside the pack", i)
		}
		fn(&e)
	}
	if o != len(b) {
		return pack, fmt.Errorf("pack index: %d entries do not match %d bytes", n, len(b)-indexHeaderLen)
	}
	return pack, nil
}

// buildPack appends the trailer (the pack's own copy of its index) to the
// chunk bodies, so a pack can be re-indexed from itself alone. The random
// nonce makes every pack a new object: a writer that stores chunks again
// must never find its pack "already there" as a copy gc is deleting.
func buildPack(version uint16, bodies []byte, entries []chunk.Entry) []byte {
	idx := encodeIndex(version, chunker.ID{}, entries)
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
func parsePackTrailer(pack []byte) ([]chunk.Entry, error) {
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

// Packs and index objects live under these prefixes, in folders named by
// the first two hex digits of their id.
const (
	packPrefix  = "packs/"
	indexPrefix = "index/"
)

func packName(id chunker.ID) string {
	s := id.String()
	return packPrefix + s[:2] + "/" + s
}

func indexName(id chunker.ID) string {
	s := id.String()
	return indexPrefix + s[:2] + "/" + s
}
