package crypt

import (
	"encoding/binary"

	"github.com/clnbackup/backup/chunker"
)

// Associated-data domains: the first byte of every binding, so that no
// binding of one kind can be read as one of another.
const (
	adObject    byte = 1
	adChunk     byte = 2
	adRecord    byte = 3
	adKeyObject byte = 4
)

// ObjectAD binds an object stored by name (a manifest, a node record, an
// index, a lease) to its name relative to the store's root, e.g.
// "nodes/alice/manifests/00000000000000000042": an object moved or copied to
// another name, such as node A's manifest put in node B's place, no longer
// opens. Encoding: 0x01 | u32 len(name) | name.
func ObjectAD(name string) []byte {
	b := make([]byte, 0, 1+4+len(name))
	b = append(b, adObject)
	return appendString(b, name)
}

// ChunkAD binds a chunk body to its (keyed) chunk id: a body stored under
// another id does not open. Encoding: 0x02 | id [32].
func ChunkAD(id chunker.ID) []byte {
	b := make([]byte, 0, 1+chunker.IDSize)
	b = append(b, adChunk)
	return append(b, id[:]...)
}

// RecordAD binds a journal record to its node, its sequence number and the
// data_version it brings the database to: a record cannot be moved to another
// node, reordered, replayed at another place, or injected without the key.
// Encoding: 0x03 | u32 len(node) | node | u64 seq | u32 version.
func RecordAD(node string, seq uint64, version uint32) []byte {
	b := make([]byte, 0, 1+4+len(node)+8+4)
	b = append(b, adRecord)
	b = appendString(b, node)
	b = binary.BigEndian.AppendUint64(b, seq)
	return binary.BigEndian.AppendUint32(b, version)
}

// appendString appends s length-prefixed (u32 big-endian), so that
// consecutive fields cannot be re-split.
func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
