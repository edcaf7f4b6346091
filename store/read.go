package store

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/chunk"
)

// Get returns a chunk's bytes, verified against its ID.
func (s *Store) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	return s.reader.get(ctx, id, 0)
}

// chunkReader is the read pipeline above the chunk layer, the same for
// every implementation of it: bodies are fetched by the layer, decoded and
// verified by the codec, deltas resolved against their bases in a second
// pass.
type chunkReader struct {
	chunks  chunk.Layer
	codec   *chunk.Codec
	workers int
	// from names where bodies not from a pack come from, for messages.
	from string
}

func newChunkReader(chunks chunk.Layer, codec *chunk.Codec, workers int, location string) *chunkReader {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	return &chunkReader{chunks: chunks, codec: codec, workers: workers, from: "store server " + location}
}

// get reads one chunk at a depth of delta chains.
func (s *chunkReader) get(ctx context.Context, id chunker.ID, depth int) ([]byte, error) {
	var data []byte
	err := s.read(ctx, nil, []chunker.ID{id}, depth, sinkOf(func(_ chunker.ID, d []byte) error {
		data = append([]byte(nil), d...)
		return nil
	}))
	return data, err
}

// ReadChunks fetches many chunks efficiently: grouped by pack, in few large
// reads, decompressed and verified by several workers. fn is called once per
// distinct id, from several goroutines at once; the data is only valid during
// the call. The first error stops the reading and is returned. The chunks
// are looked up with one pass over the store's index objects (see Lookup);
// memory is about 100 bytes per distinct id plus one read span (at most 4
// MiB) per worker.
//
// Chunks stored as deltas are read in a second pass, in batches of at most
// deltaBatch: the batch's bases first (full and verified, kept in memory),
// then the deltas, decompressed with their base and verified.
func (s *Store) ReadChunks(ctx context.Context, ids []chunker.ID, fn func(id chunker.ID, data []byte) error) error {
	return s.reader.read(ctx, nil, ids, 0, sinkOf(fn))
}

// ReadLocated is ReadChunks for chunks the caller has looked up already:
// l must be a Lookup of (at least) ids.
func (s *Store) ReadLocated(ctx context.Context, l chunk.Lookup, ids []chunker.ID, fn func(id chunker.ID, data []byte) error) error {
	return s.reader.read(ctx, l, ids, 0, sinkOf(fn))
}

// ReadChunksTo is ReadChunks with a sink per reading goroutine.
func (s *Store) ReadChunksTo(ctx context.Context, ids []chunker.ID, sink ChunkSink) error {
	return s.reader.read(ctx, nil, ids, 0, sink)
}

// ReadPlan is the lookups a read needs, made before the read: the chunks'
// and their delta bases'. Each lookup is a pass over the store's index
// objects; a restore plans its next window of pages while it reads one,
// so that its decoders do not wait for those passes.
type ReadPlan struct {
	ids   []chunker.ID
	l     chunk.Lookup // of ids
	bases chunk.Lookup // of the bases of those ids stored as deltas (nil: not looked up yet)
}

// PlanNextRead plans reads that follow one another (a restore's windows of
// pages) with one pass over the index objects per read instead of two: it
// looks up ids, the next read's chunks, together with the delta bases of
// prev, the read planned before it (nil: none), which completes prev. The
// plan it returns is complete once it is given as prev in turn (no ids:
// prev was the last read, and no plan is returned). ReadPlanned reads an
// incomplete plan too, looking its bases up then. A plan may go stale (gc
// moving chunks); the read then finds the chunks where they are, as any
// read does.
func (s *Store) PlanNextRead(ctx context.Context, prev *ReadPlan, ids []chunker.ID) (*ReadPlan, error) {
	want := ids
	if prev != nil {
		var bases []chunker.ID
		for _, id := range prev.ids {
			if info, ok := prev.l.Locate(id); ok && info.Base != (chunker.ID{}) {
				bases = append(bases, info.Base)
			}
		}
		want = append(slices.Clone(ids), bases...)
	}
	l, err := s.chunks.Lookup(ctx, want)
	if err != nil {
		return nil, err
	}
	if prev != nil {
		prev.bases = l
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return &ReadPlan{ids: ids, l: l}, nil
}

// ReadPlanned is ReadChunksTo of the chunks p was planned for.
func (s *Store) ReadPlanned(ctx context.Context, p *ReadPlan, sink ChunkSink) error {
	return s.reader.readWith(ctx, p.l, p.bases, p.ids, 0, sink)
}

// ChunkSink receives the chunks of a read, one reading goroutine at a
// time: each goroutine calls it once for the put function it calls with
// every chunk it reads (the data valid during the call only), and calls
// flush, if not nil, when it has read its last chunk without error. A
// sink can so keep state per goroutine without locks (restore combines
// adjacent pages into one write).
type ChunkSink func() (put func(id chunker.ID, data []byte) error, flush func() error)

// sinkOf is the sink that calls fn from every goroutine.
func sinkOf(fn func(id chunker.ID, data []byte) error) ChunkSink {
	return func() (func(chunker.ID, []byte) error, func() error) { return fn, nil }
}

// deltaBatch bounds the deltas (and so the bases held in memory) of one
// step of a read's second pass (a variable for tests).
var deltaBatch = 1024

// read reads ids in two passes: the full copies, then the deltas met
// on the way (l: a lookup of ids, or nil).
func (s *chunkReader) read(ctx context.Context, l chunk.Lookup, ids []chunker.ID, depth int, sink ChunkSink) error {
	return s.readWith(ctx, l, nil, ids, depth, sink)
}

// readWith is read with bl, a lookup of the deltas' bases made ahead (nil:
// none); the bases are looked up anew unless bl knows every one.
func (s *chunkReader) readWith(ctx context.Context, l, bl chunk.Lookup, ids []chunker.ID, depth int, sink ChunkSink) error {
	if l == nil {
		var err error
		if l, err = s.chunks.Lookup(ctx, ids); err != nil {
			return err
		}
	}
	var (
		mu     sync.Mutex
		deltas []chunk.DeltaRef
	)
	later, err := s.chunks.ReadBodies(ctx, l, ids, s.workers, true, s.decoding(sink, func(b chunk.Body) ([]byte, bool, error) {
		if b.Base != (chunker.ID{}) {
			mu.Lock()
			deltas = append(deltas, chunk.DeltaRef{ID: b.ID, Base: b.Base})
			mu.Unlock()
			return nil, false, nil
		}
		return nil, true, nil
	}))
	if err != nil {
		return err
	}
	deltas = append(deltas, later...)
	if len(deltas) == 0 {
		return nil
	}
	if depth >= chunk.MaxDeltaDepth {
		return fmt.Errorf("read chunk %s: %w: a chain of more than %d delta copies (base %s); run backup-cli verify", deltas[0].ID, chunk.ErrCorrupt, chunk.MaxDeltaDepth, deltas[0].Base)
	}
	slices.SortFunc(deltas, func(a, b chunk.DeltaRef) int { return bytes.Compare(a.ID[:], b.ID[:]) })
	deltas = slices.CompactFunc(deltas, func(a, b chunk.DeltaRef) bool { return a.ID == b.ID })
	// The bases of all the deltas, looked up at once.
	bases := make([]chunker.ID, len(deltas))
	known := bl != nil
	for i, d := range deltas {
		bases[i] = d.Base
		known = known && bl.Known(d.Base)
	}
	if !known {
		if bl, err = s.chunks.Lookup(ctx, bases); err != nil {
			return err
		}
	}
	// Batched by where their bases lie, each batch reads its bases in a
	// few short spans, not spans across every pack holding bases.
	orderByLocation(deltas, bl, func(d chunk.DeltaRef) chunker.ID { return d.Base })
	for start := 0; start < len(deltas); start += deltaBatch {
		if err := s.readDeltas(ctx, l, bl, deltas[start:min(len(deltas), start+deltaBatch)], depth, sink); err != nil {
			return err
		}
	}
	return nil
}

// decoding turns a chunk sink into a body sink: each goroutine decodes
// bodies into a buffer of its own and hands the chunks to its put. pick
// sees each body first: it may set it aside (ok false), or give the full
// bytes of its delta base (nil for a full body).
func (s *chunkReader) decoding(sink ChunkSink, pick func(chunk.Body) (base []byte, ok bool, err error)) chunk.BodySink {
	from := s.from
	return func() (func(chunk.Body) error, func() error) {
		put, flush := sink()
		var buf []byte
		return func(b chunk.Body) error {
			base, ok, err := pick(b)
			if !ok || err != nil {
				return err
			}
			var data []byte
			if b.Base == (chunker.ID{}) {
				data, err = s.codec.Decode(buf[:0], b, from)
			} else {
				data, err = s.codec.DecodeDelta(buf[:0], b, base, from)
			}
			if err != nil {
				return err
			}
			buf = data
			return put(b.ID, data)
		}, flush
	}
}

// readDeltas is one batch of a read's second pass: l located the deltas,
// bl their bases.
func (s *chunkReader) readDeltas(ctx context.Context, l, bl chunk.Lookup, batch []chunk.DeltaRef, depth int, sink ChunkSink) error {
	var (
		mu    sync.Mutex
		bases = map[chunker.ID][]byte{}
		want  []chunker.ID
		ids   = make([]chunker.ID, len(batch))
	)
	for i, d := range batch {
		ids[i] = d.ID
		if _, ok := bases[d.Base]; !ok {
			bases[d.Base] = nil
			want = append(want, d.Base)
		}
	}
	keep := func(id chunker.ID, data []byte) error {
		mu.Lock()
		bases[id] = append([]byte(nil), data...)
		mu.Unlock()
		return nil
	}
	if err := s.read(ctx, bl, want, depth+1, sinkOf(keep)); err != nil {
		return s.baseError(ctx, l, batch, bases, depth, err)
	}
	_, err := s.chunks.ReadBodies(ctx, l, ids, s.workers, false, s.decoding(sink, func(b chunk.Body) ([]byte, bool, error) {
		if b.Base == (chunker.ID{}) {
			return nil, true, nil // a full copy now (gc moved it, or a full copy was added)
		}
		mu.Lock()
		base := bases[b.Base]
		mu.Unlock()
		if base == nil {
			// Not the base planned: the copy changed since.
			var err error
			if base, err = s.get(ctx, b.Base, depth+1); err != nil {
				return nil, false, fmt.Errorf("read chunk %s from %s: its base chunk %s: %w", b.ID, chunk.Origin(b, s.from), b.Base, err)
			}
		}
		return base, true, nil
	}))
	return err
}

// baseError names the delta whose base could not be read, after reading
// the bases of batch (into bases) failed with err.
func (s *chunkReader) baseError(ctx context.Context, l chunk.Lookup, batch []chunk.DeltaRef, bases map[chunker.ID][]byte, depth int, err error) error {
	if ctx.Err() != nil {
		return err
	}
	tried := map[chunker.ID]bool{}
	for _, d := range batch {
		if bases[d.Base] != nil || tried[d.Base] {
			continue
		}
		tried[d.Base] = true
		if _, berr := s.get(ctx, d.Base, depth+1); berr != nil {
			where := "the store"
			if info, ok := l.Locate(d.ID); ok && info.Pack != (chunker.ID{}) {
				where = "pack " + info.Pack.String()
			}
			return fmt.Errorf("read chunk %s (stored in %s as a delta of chunk %s): its base cannot be read: %w (run backup-cli verify)", d.ID, where, d.Base, berr)
		}
	}
	return err
}

// orderByLocation sorts deltas by where l locates key(d): pack, then
// offset (those l does not locate last, in their order; they are read
// where they are found then).
func orderByLocation(deltas []chunk.DeltaRef, l chunk.Lookup, key func(chunk.DeltaRef) chunker.ID) {
	type placed struct {
		d    chunk.DeltaRef
		pack chunker.ID
		off  uint32
		ok   bool
	}
	ps := make([]placed, len(deltas))
	for i, d := range deltas {
		info, ok := l.Locate(key(d))
		ps[i] = placed{d, info.Pack, info.Offset, ok}
	}
	slices.SortStableFunc(ps, func(a, b placed) int {
		if a.ok != b.ok {
			if a.ok {
				return -1
			}
			return 1
		}
		if c := bytes.Compare(a.pack[:], b.pack[:]); c != 0 {
			return c
		}
		return cmp.Compare(a.off, b.off)
	})
	for i, p := range ps {
		deltas[i] = p.d
	}
}
