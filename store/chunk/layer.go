package chunk

import (
	"context"

	"github.com/clnbackup/backup/chunker"
)

// Layer is where a store keeps its chunks. It has two implementations:
// packs and their indexes over a backend.Backend (store/packs: a local
// directory, or a store server's objects for an admin), and the chunk
// service of a store server for a client that may not see the packs
// (store's serverChunks). Everything above it (the Writer's
// compression and delta encoding, the decoding and verification of every
// body read, the two passes of delta reads) runs the same way for both.
type Layer interface {
	// Lookup finds whether each chunk of ids is stored in a copy a
	// writer may rely on (one gc has not condemned), and where, as far
	// as the layer can tell. Chunks not stored are absent, not an error.
	Lookup(ctx context.Context, ids []chunker.ID) (Lookup, error)
	// ReadBodies hands the stored body of every distinct id to the
	// consumers of sink, from up to workers goroutines. l is a Lookup of
	// ids by this layer, or nil. With deltasLater, the layer may leave
	// out copies it knows are deltas and return them instead, for the
	// caller to read once their bases are in memory; bodies it delivers
	// may be deltas all the same (their Base is set). A chunk the layer
	// does not hold fails the read, wrapping ErrMissing.
	ReadBodies(ctx context.Context, l Lookup, ids []chunker.ID, workers int, deltasLater bool, sink BodySink) (later []DeltaRef, err error)
	// BeginWrite readies the layer for a writer that starts now: the
	// writer relies on what the layer then knows of gc's condemned copies.
	BeginWrite(ctx context.Context) error
	// WritePack stores a pack of compressed bodies durably. Chunks the
	// layer holds in a copy a writer may rely on are dropped from it
	// first; it reports the chunks it stored.
	WritePack(ctx context.Context, p *Batch) (Written, error)
	// Deltas reports whether the layer takes delta bodies.
	Deltas() bool
	// ReleaseIndex drops what the layer holds in memory between
	// operations (an idle plugin stays small). It must not run
	// concurrently with reads or writers.
	ReleaseIndex()
}

// BodySink receives the bodies of a read, one reading goroutine at a time:
// each goroutine calls it once for the function it hands every body it
// reads (valid during the call only), and calls flush, if not nil, after
// its last body when nothing failed. Consumers can so keep state per
// goroutine without locks.
type BodySink func() (put func(Body) error, flush func() error)

// Batch is what a writer hands its chunk layer to store as one pack:
// compressed bodies, back to back, and an entry per body locating it.
type Batch struct {
	Bodies  []byte
	Entries []Entry
	// Unchecked are the chunks of the batch no lookup answered for: the
	// layer must find out whether it holds them before storing them.
	Unchecked []chunker.ID
}

// Written is what WritePack stored.
type Written struct {
	// Entries are the chunks stored (offsets into Pack), Dropped the
	// chunks left out because the layer held them already.
	Entries []Entry
	Dropped []Entry
	// Pack is the pack the chunks went to (zero when the layer does not
	// say), Packs how many packs were written.
	Pack  chunker.ID
	Packs int
	// PackBytes and IndexBytes are the bytes the store grew by.
	PackBytes, IndexBytes int64
}

// Lookup says whether, and where, each chunk of a set is stored, as one
// Layer.Lookup found it.
type Lookup interface {
	// Known reports whether id was looked up (whether or not it was found).
	Known(id chunker.ID) bool
	// Has reports whether the lookup found a copy of id that gc has not
	// condemned: one a writer may rely on.
	Has(id chunker.ID) bool
	// Locate returns where id is stored (any copy found, condemned or
	// not), as far as the layer tells.
	Locate(id chunker.ID) (Info, bool)
	// Stored records copies a writer has just made durable in pack (zero
	// when the layer does not say), so that later Has calls see them.
	Stored(pack chunker.ID, entries []Entry)
}
