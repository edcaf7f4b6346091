// Package chunk is what the layers of the store say to one another about
// chunks: what a chunk is (its kinds, its limits), how its body is coded and
// checked against its id (Codec), and the interface of the chunk layer that
// keeps chunks (Layer), with the lookups and pack batches that cross it.
// The store reads and writes through a Layer; packs over a backend
// (store/packs) and a store server's chunk service implement one.
package chunk

import (
	"errors"
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

// Valid reports whether k is a kind this program knows.
func (k Kind) Valid() bool { return k >= KindPage && k <= KindChange }

// MaxSize bounds one chunk's uncompressed size.
const MaxSize = 16 << 20

// MaxBatchRaw bounds the uncompressed bytes of the chunk bodies one
// request to a store server may carry (a client batches by it): the server
// decompresses and hashes every body it keeps, so this bounds the work one
// small request can ask for, whatever the bodies compress to.
const MaxBatchRaw = 64 << 20

// ErrMissing is returned (wrapped) for a chunk the store does not hold.
var ErrMissing = errors.New("chunk not in the store")

// ErrCorrupt is returned (wrapped) when stored bytes do not match their name.
var ErrCorrupt = errors.New("stored data is damaged")

// ErrBad is returned (wrapped) for a body a client sent that does not
// decompress to the bytes its id names.
var ErrBad = errors.New("chunk body does not match its id")

// Body is one chunk as stored: zstd-compressed.
type Body struct {
	ID   chunker.ID
	Kind Kind
	// Raw is the uncompressed size.
	Raw uint32
	// Base, when not zero, is the chunk whose full bytes Body was
	// compressed against (raw zstd dictionary): a delta copy.
	Base chunker.ID
	Body []byte
	// Pack is the pack the body was read from, for messages (zero for a
	// body from a store server or a client).
	Pack chunker.ID
}

// Info describes where a stored chunk is.
type Info struct {
	Pack   chunker.ID
	Kind   Kind
	Offset uint32
	Length uint32 // stored bytes
	Raw    uint32 // uncompressed bytes
	// Base is the chunk this copy is a delta against (zero: a full copy).
	Base chunker.ID
}

// Entry locates one chunk's body among others (in a pack, or in a batch
// on its way to one).
type Entry struct {
	ID     chunker.ID
	Kind   Kind
	Offset uint32
	Length uint32 // stored (compressed) length
	Raw    uint32 // uncompressed length
	// Base is the chunk the body is a delta against (zero: a full body).
	Base chunker.ID
}

// Delta reports whether the entry is a delta copy.
func (e Entry) Delta() bool { return e.Base != (chunker.ID{}) }

// DeltaRef is a chunk stored as a delta, and its base.
type DeltaRef struct{ ID, Base chunker.ID }

// MaxDeltaDepth bounds the chain of bases a read follows. Writers make
// deltas of full chunks only (depth 1), and gc keeps a full copy of every
// live base; the bound guards against damaged stores.
const MaxDeltaDepth = 4
