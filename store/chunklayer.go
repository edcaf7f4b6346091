package store

import (
	"context"

	"github.com/clnbackup/backup/chunker"
)

// ChunkLayer is where a Store keeps its chunks. It has two
// implementations: *Packs, packs and their indexes over a backend.Backend
// (a local directory, or a store server's objects for an admin), and the
// chunk service of a store server for a client that may not see the packs
// (serverChunks over a ChunkService). Everything above it (the Writer's
// compression and delta encoding, the decoding and verification of every
// body read, the two passes of delta reads) runs the same way for both.
type ChunkLayer interface {
	// Lookup finds whether each chunk of ids is stored in a copy a
	// writer may rely on (one gc has not condemned), and where, as far
	// as the layer can tell. Chunks not stored are absent, not an error.
	Lookup(ctx context.Context, ids []chunker.ID) (*Located, error)
	// ReadBodies hands the stored body of every distinct id to the
	// consumers of sink, from up to workers goroutines. l is a Lookup of
	// ids by this layer, or nil. With deltasLater, the layer may leave
	// out copies it knows are deltas and return them instead, for the
	// caller to read once their bases are in memory; bodies it delivers
	// may be deltas all the same (their Base is set). A chunk the layer
	// does not hold fails the read, wrapping ErrChunkMissing.
	ReadBodies(ctx context.Context, l *Located, ids []chunker.ID, workers int, deltasLater bool, sink BodySink) (later []DeltaRef, err error)
	// BeginWrite readies the layer for a writer that starts now: the
	// writer relies on what the layer then knows of gc's condemned copies.
	BeginWrite(ctx context.Context) error
	// WritePack stores a pack of compressed bodies durably. Chunks the
	// layer holds in a copy a writer may rely on are dropped from it
	// first; it reports the chunks it stored.
	WritePack(ctx context.Context, p *PackBatch) (Written, error)
	// Deltas reports whether the layer takes delta bodies.
	Deltas() bool
	// ReleaseIndex drops what the layer holds in memory between
	// operations (an idle plugin stays small). It must not run
	// concurrently with reads or writers.
	ReleaseIndex()
}

// ChunkBody is one chunk as stored: zstd-compressed.
type ChunkBody struct {
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

// BodySink receives the bodies of a read, one reading goroutine at a time:
// each goroutine calls it once for the function it hands every body it
// reads (valid during the call only), and calls flush, if not nil, after
// its last body when nothing failed. Consumers can so keep state per
// goroutine without locks.
type BodySink func() (put func(ChunkBody) error, flush func() error)

// DeltaRef is a chunk stored as a delta, and its base.
type DeltaRef struct{ ID, Base chunker.ID }

// PackBatch is what a Writer hands its chunk layer to store: compressed
// bodies, back to back, and an entry per body locating it.
type PackBatch struct {
	Bodies  []byte
	Entries []indexEntry
	// Unchecked are the chunks of the batch no lookup answered for: the
	// layer must find out whether it holds them before storing them.
	Unchecked []chunker.ID
}

// Written is what WritePack stored.
type Written struct {
	// Entries are the chunks stored (offsets into Pack), Dropped the
	// chunks left out because the layer held them already.
	Entries []indexEntry
	Dropped []indexEntry
	// Pack is the pack the chunks went to (zero when the layer does not
	// say), Packs how many packs were written.
	Pack  chunker.ID
	Packs int
	// PackBytes and IndexBytes are the bytes the store grew by.
	PackBytes, IndexBytes int64
}
