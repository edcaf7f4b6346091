package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"github.com/klauspost/compress/zstd"
)

// ErrChunkMissing is returned (wrapped) for a chunk the index does not know.
var ErrChunkMissing = errors.New("chunk not in the store")

// ErrCorrupt is returned (wrapped) when stored bytes do not match their name.
var ErrCorrupt = errors.New("stored data is damaged")

// Get returns a chunk's bytes, verified against its ID.
//
// If the chunk is not in the index as loaded, or its pack is gone, the index
// is refreshed and the read tried once more: other writers index chunks all
// the time, and gc moves live chunks out of packs it deletes.
func (s *Store) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	var data []byte
	err := s.ReadChunks(ctx, []chunker.ID{id}, func(_ chunker.ID, d []byte) error {
		data = append([]byte(nil), d...)
		return nil
	})
	return data, err
}

// stale reports whether a read failed in a way a fresher index may avoid.
func stale(err error) bool {
	return errors.Is(err, ErrChunkMissing) || errors.Is(err, backend.ErrNotFound)
}

// getBody reads one chunk's stored body where the store has it now (a
// read whose pack gc deleted meanwhile looks the chunk up again; gc indexes
// the chunks it moves before it deletes their old pack, so a fresh lookup
// finds them, unless gc deleted the pack just after the lookup: then once
// more).
func (s *Store) getBody(ctx context.Context, id chunker.ID) (ChunkBody, ChunkInfo, error) {
	for try := 0; ; try++ {
		b, info, err := s.getBodyOnce(ctx, id)
		if err == nil || !errors.Is(err, backend.ErrNotFound) || try == 3 {
			return b, info, err
		}
	}
}

func (s *Store) getBodyOnce(ctx context.Context, id chunker.ID) (ChunkBody, ChunkInfo, error) {
	if s.isIndexed() {
		if err := s.Refresh(ctx); err != nil {
			return ChunkBody{}, ChunkInfo{}, err
		}
	}
	l, err := s.lookupToRead(ctx, []chunker.ID{id})
	if err != nil {
		return ChunkBody{}, ChunkInfo{}, err
	}
	loc, ok := l.Locate(id)
	if !ok {
		return ChunkBody{}, loc, fmt.Errorf("read chunk %s: %w", id, ErrChunkMissing)
	}
	body, err := s.be.Get(ctx, packName(loc.Pack), int64(loc.Offset), int64(loc.Length))
	if err != nil {
		return ChunkBody{}, loc, fmt.Errorf("read chunk %s from pack %s: %w", id, loc.Pack, err)
	}
	return ChunkBody{ID: id, Kind: loc.Kind, Raw: loc.Raw, Base: loc.Base, Body: body}, loc, nil
}

// decodeInto decompresses the (full) body of chunk id stored at loc into
// dst (reusing its capacity) and verifies it against its id.
func (s *Store) decodeInto(dst []byte, id chunker.ID, loc ChunkInfo, body []byte) ([]byte, error) {
	return s.decodeBody(dst, ChunkBody{ID: id, Kind: loc.Kind, Raw: loc.Raw, Body: body}, "pack "+loc.Pack.String())
}

// decodeDelta decompresses a delta body with its base's full bytes as raw
// dictionary into dst and verifies the result against the chunk's id.
func (s *Store) decodeDelta(dst []byte, b ChunkBody, base []byte, where string) ([]byte, error) {
	if b.Raw > MaxChunkSize {
		return nil, fmt.Errorf("read chunk %s from %s: %w: size %d exceeds the %d-byte limit; run backup-cli verify", b.ID, where, ErrCorrupt, b.Raw, MaxChunkSize)
	}
	dec, err := s.deltaDecoder()
	if err != nil {
		return nil, err
	}
	defer s.putDeltaDecoder(dec)
	if err := dec.ResetWithOptions(nil, zstd.WithDecoderDictRaw(0, base)); err != nil {
		return nil, err
	}
	if dst == nil {
		dst = make([]byte, 0, b.Raw)
	}
	data, err := dec.DecodeAll(b.Body, dst)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s (a delta of chunk %s) from %s: %w: cannot decompress (%v); run backup-cli verify", b.ID, b.Base, where, ErrCorrupt, err)
	}
	if uint32(len(data)) != b.Raw || chunker.Sum(data) != b.ID {
		return nil, fmt.Errorf("read chunk %s (a delta of chunk %s) from %s: %w: hash mismatch; run backup-cli verify", b.ID, b.Base, where, ErrCorrupt)
	}
	return data, nil
}

// deltaDecoder takes a single-threaded decoder for deltas from the pool
// (each decode sets its base as dictionary).
func (s *Store) deltaDecoder() (*zstd.Decoder, error) {
	s.encMu.Lock()
	if n := len(s.deltaDecs); n > 0 {
		d := s.deltaDecs[n-1]
		s.deltaDecs = s.deltaDecs[:n-1]
		s.encMu.Unlock()
		return d, nil
	}
	s.encMu.Unlock()
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(64<<20))
}

func (s *Store) putDeltaDecoder(d *zstd.Decoder) {
	s.encMu.Lock()
	s.deltaDecs = append(s.deltaDecs, d)
	s.encMu.Unlock()
}

// decodeBody decompresses a chunk body into dst (reusing its capacity) and
// verifies it against its id. where names the body's origin for messages.
func (s *Store) decodeBody(dst []byte, b ChunkBody, where string) ([]byte, error) {
	if b.Raw > MaxChunkSize {
		return nil, fmt.Errorf("read chunk %s from %s: %w: size %d exceeds the %d-byte limit; run backup-cli verify", b.ID, where, ErrCorrupt, b.Raw, MaxChunkSize)
	}
	if dst == nil {
		dst = make([]byte, 0, b.Raw)
	}
	data, err := s.dec.DecodeAll(b.Body, dst)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s from %s: %w: cannot decompress (%v); run backup-cli verify", b.ID, where, ErrCorrupt, err)
	}
	if uint32(len(data)) != b.Raw || chunker.Sum(data) != b.ID {
		return nil, fmt.Errorf("read chunk %s from %s: %w: hash mismatch; run backup-cli verify", b.ID, where, ErrCorrupt)
	}
	return data, nil
}

// readSpan is a run of chunks of one pack read with one request.
type readSpan struct {
	pack       chunker.ID
	bases      []chunker.ID // Store.bases when planned
	start, end int64
	wants      []wantChunk
}

type wantChunk struct {
	id  chunker.ID
	loc location
}

// deltaRef is a chunk stored as a delta, and its base.
type deltaRef struct{ id, base chunker.ID }

// plan groups the chunks ids (each once; all must have been found by the
// lookup l) into spans of few large reads, in pack order. With skipDeltas,
// chunks whose copy is a delta are returned apart instead (ReadChunks
// decodes them in a second pass).
func (l *Located) plan(ids []chunker.ID, skipDeltas bool) ([]readSpan, []deltaRef, error) {
	if l == nil {
		l = newLocated(nil)
	}
	wants := make([]wantChunk, 0, len(ids))
	var deltas []deltaRef
	for _, id := range ids {
		i := l.find(id)
		if i < 0 || l.state[i] == locAbsent {
			return nil, nil, fmt.Errorf("read chunk %s: %w", id, ErrChunkMissing)
		}
		loc := l.locs[i]
		if skipDeltas && loc.base != 0 {
			deltas = append(deltas, deltaRef{id, l.bases[loc.base]})
			continue
		}
		wants = append(wants, wantChunk{id, loc})
	}
	slices.SortFunc(wants, func(a, b wantChunk) int {
		if a.loc.pack != b.loc.pack {
			return cmp.Compare(a.loc.pack, b.loc.pack)
		}
		return cmp.Compare(a.loc.offset, b.loc.offset)
	})
	// Drop repeated ids (adjacent now: one id has one location).
	wants = slices.CompactFunc(wants, func(a, b wantChunk) bool { return a.id == b.id })
	const maxGap, maxSpan = 256 << 10, 4 << 20
	var spans []readSpan
	lo := 0
	for i, w := range wants {
		start, end := int64(w.loc.offset), int64(w.loc.offset)+int64(w.loc.length)
		if k := len(spans) - 1; k >= 0 && spans[k].wants[0].loc.pack == w.loc.pack && start-spans[k].end <= maxGap && end-spans[k].start <= maxSpan {
			spans[k].end = max(spans[k].end, end)
			spans[k].wants = wants[lo : i+1]
			continue
		}
		lo = i
		spans = append(spans, readSpan{pack: l.packs[w.loc.pack], bases: l.bases, start: start, end: end, wants: wants[i : i+1]})
	}
	slices.SortFunc(deltas, func(a, b deltaRef) int { return compareIDs(a.id, b.id) })
	deltas = slices.CompactFunc(deltas, func(a, b deltaRef) bool { return a.id == b.id })
	return spans, deltas, nil
}

// plan is l.plan, looking the chunks up again if l lacks one (gc may have
// moved it since l was made); it returns the lookup the plan is from.
func (s *Store) plan(ctx context.Context, l *Located, ids []chunker.ID, skipDeltas bool) ([]readSpan, []deltaRef, *Located, error) {
	spans, deltas, err := l.plan(ids, skipDeltas)
	if errors.Is(err, ErrChunkMissing) {
		if l, err = s.lookupToRead(ctx, ids); err == nil {
			spans, deltas, err = l.plan(ids, skipDeltas)
		}
	}
	return spans, deltas, l, err
}

// readSpan calls fn with the stored body of every chunk of sp. If gc
// deleted the pack since the index was loaded, it reads each chunk where it
// is now.
func (s *Store) readSpan(ctx context.Context, sp readSpan, fn func(ChunkBody, ChunkInfo) error) error {
	raw, err := s.be.Get(ctx, packName(sp.pack), sp.start, sp.end-sp.start)
	if errors.Is(err, backend.ErrNotFound) {
		for _, w := range sp.wants {
			b, info, err := s.getBody(ctx, w.id)
			if err != nil {
				return err
			}
			if err := fn(b, info); err != nil {
				return err
			}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pack %s: %w", sp.pack, err)
	}
	for _, w := range sp.wants {
		o := int64(w.loc.offset) - sp.start
		info := ChunkInfo{Pack: sp.pack, Kind: w.loc.kind, Offset: w.loc.offset, Length: w.loc.length, Raw: w.loc.raw, Base: sp.bases[w.loc.base]}
		b := ChunkBody{ID: w.id, Kind: w.loc.kind, Raw: w.loc.raw, Base: info.Base, Body: raw[o : o+int64(w.loc.length)]}
		if err := fn(b, info); err != nil {
			return err
		}
	}
	return nil
}

// ReadBodies calls fn, one call at a time, with the stored (compressed)
// body of every distinct id, in pack order, without decompressing: what a
// store server streams to a client, which verifies them. The body is only
// valid during the call.
func (s *Store) ReadBodies(ctx context.Context, ids []chunker.ID, fn func(ChunkBody) error) error {
	var l *Located
	if s.remoteChunks == nil {
		var err error
		if l, err = s.lookupToRead(ctx, ids); err != nil {
			return err
		}
	}
	return s.readBodies(ctx, l, ids, fn)
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
	return s.readChunks(ctx, ids, 0, sinkOf(fn))
}

const (
	// deltaBatch bounds the deltas (and so the bases held in memory) of
	// one step of ReadChunks' second pass.
	deltaBatch = 1024
	// maxDeltaDepth bounds the chain of bases a read follows. Writers
	// make deltas of full chunks only (depth 1), and gc keeps a full copy
	// of every live base; the bound guards against damaged stores.
	maxDeltaDepth = 4
)

func (s *Store) readChunks(ctx context.Context, ids []chunker.ID, depth int, sink ChunkSink) error {
	var l *Located
	if s.remoteChunks == nil {
		var err error
		if l, err = s.lookupToRead(ctx, ids); err != nil {
			return err
		}
	}
	return s.readLocated(ctx, l, ids, depth, sink)
}

// ReadLocated is ReadChunks for chunks the caller has looked up already:
// l must be a Lookup of (at least) ids. Through a store server, l may be
// nil (the server looks chunks up).
func (s *Store) ReadLocated(ctx context.Context, l *Located, ids []chunker.ID, fn func(id chunker.ID, data []byte) error) error {
	return s.readLocated(ctx, l, ids, 0, sinkOf(fn))
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

// ReadChunksTo is ReadChunks with a sink per reading goroutine.
func (s *Store) ReadChunksTo(ctx context.Context, ids []chunker.ID, sink ChunkSink) error {
	return s.readChunks(ctx, ids, 0, sink)
}

// decodeFunc decodes one stored body into buf (reusing its capacity) and
// gives the chunk to put; it returns the buffer (grown).
type decodeFunc func(buf []byte, b ChunkBody, where string, put func(chunker.ID, []byte) error) ([]byte, error)

func (s *Store) readLocated(ctx context.Context, l *Located, ids []chunker.ID, depth int, sink ChunkSink) error {
	var (
		mu     sync.Mutex
		deltas []deltaRef
	)
	// Pass 1: full copies. A delta met on the way (the server streams
	// everything; a pack gc moved) is left for pass 2.
	decode := func(buf []byte, b ChunkBody, where string, put func(chunker.ID, []byte) error) ([]byte, error) {
		if b.Base != (chunker.ID{}) {
			mu.Lock()
			deltas = append(deltas, deltaRef{b.ID, b.Base})
			mu.Unlock()
			return buf, nil
		}
		data, err := s.decodeBody(buf[:0], b, where)
		if err != nil {
			return nil, err
		}
		return data, put(b.ID, data)
	}
	if s.remoteChunks != nil {
		err := s.decodeStream(ctx, func(send func(ChunkBody) error) error {
			return s.remoteChunks.ReadBodies(ctx, ids, send)
		}, "store server "+s.Location(), sink, decode)
		if err != nil {
			return err
		}
	} else {
		var (
			spans   []readSpan
			planned []deltaRef
			err     error
		)
		if spans, planned, l, err = s.plan(ctx, l, ids, true); err != nil {
			return err
		}
		deltas = planned
		if err := s.readFull(ctx, spans, sink, decode); err != nil {
			return err
		}
	}
	// Pass 2: deltas.
	if len(deltas) == 0 {
		return nil
	}
	if depth >= maxDeltaDepth {
		return fmt.Errorf("read chunk %s: %w: a chain of more than %d delta copies (base %s); run backup-cli verify", deltas[0].id, ErrCorrupt, maxDeltaDepth, deltas[0].base)
	}
	slices.SortFunc(deltas, func(a, b deltaRef) int { return compareIDs(a.id, b.id) })
	deltas = slices.CompactFunc(deltas, func(a, b deltaRef) bool { return a.id == b.id })
	// The bases of all the deltas, looked up at once (a store server
	// looks them up itself).
	var bl *Located
	if s.remoteChunks == nil {
		bases := make([]chunker.ID, len(deltas))
		for i, d := range deltas {
			bases[i] = d.base
		}
		var err error
		if bl, err = s.lookupToRead(ctx, bases); err != nil {
			return err
		}
	}
	for start := 0; start < len(deltas); start += deltaBatch {
		if err := s.readDeltas(ctx, l, bl, deltas[start:min(len(deltas), start+deltaBatch)], depth, sink); err != nil {
			return err
		}
	}
	return nil
}

// readBodies is ReadBodies for chunks looked up already (l: see
// ReadLocated).
func (s *Store) readBodies(ctx context.Context, l *Located, ids []chunker.ID, fn func(ChunkBody) error) error {
	if s.remoteChunks != nil {
		return s.remoteChunks.ReadBodies(ctx, ids, fn)
	}
	spans, _, _, err := s.plan(ctx, l, ids, false)
	if err != nil {
		return err
	}
	for _, sp := range spans {
		if err := s.readSpan(ctx, sp, func(b ChunkBody, _ ChunkInfo) error { return fn(b) }); err != nil {
			return err
		}
	}
	return nil
}

// readDeltas is one batch of ReadChunks' second pass: l located the
// deltas, bl their bases.
func (s *Store) readDeltas(ctx context.Context, l, bl *Located, batch []deltaRef, depth int, sink ChunkSink) error {
	var (
		mu    sync.Mutex
		bases = map[chunker.ID][]byte{}
		want  []chunker.ID
		ids   = make([]chunker.ID, len(batch))
	)
	for i, d := range batch {
		ids[i] = d.id
		if _, ok := bases[d.base]; !ok {
			bases[d.base] = nil
			want = append(want, d.base)
		}
	}
	keep := func(id chunker.ID, data []byte) error {
		mu.Lock()
		bases[id] = append([]byte(nil), data...)
		mu.Unlock()
		return nil
	}
	if err := s.readLocated(ctx, bl, want, depth+1, sinkOf(keep)); err != nil {
		return s.baseError(ctx, l, batch, bases, depth, err)
	}
	return s.decodeStream(ctx, func(send func(ChunkBody) error) error {
		return s.readBodies(ctx, l, ids, send)
	}, "", sink, func(buf []byte, b ChunkBody, _ string, put func(chunker.ID, []byte) error) ([]byte, error) {
		where := "store server " + s.Location()
		if s.remoteChunks == nil {
			if info, ok := l.Locate(b.ID); ok {
				where = "pack " + info.Pack.String()
			}
		}
		if b.Base == (chunker.ID{}) {
			// A full copy now (gc moved it, or a full copy was added).
			data, err := s.decodeBody(buf[:0], b, where)
			if err != nil {
				return nil, err
			}
			return data, put(b.ID, data)
		}
		mu.Lock()
		base := bases[b.Base]
		mu.Unlock()
		if base == nil {
			// Not the base planned: the copy changed since.
			var err error
			if base, err = s.getDepth(ctx, b.Base, depth+1); err != nil {
				return nil, fmt.Errorf("read chunk %s from %s: its base chunk %s: %w", b.ID, where, b.Base, err)
			}
		}
		data, err := s.decodeDelta(buf[:0], b, base, where)
		if err != nil {
			return nil, err
		}
		return data, put(b.ID, data)
	})
}

// baseError names the delta whose base could not be read, after reading
// the bases of batch (into bases) failed with err.
func (s *Store) baseError(ctx context.Context, l *Located, batch []deltaRef, bases map[chunker.ID][]byte, depth int, err error) error {
	if ctx.Err() != nil {
		return err
	}
	tried := map[chunker.ID]bool{}
	for _, d := range batch {
		if bases[d.base] != nil || tried[d.base] {
			continue
		}
		tried[d.base] = true
		if _, berr := s.getDepth(ctx, d.base, depth+1); berr != nil {
			where := "the store"
			if info, ok := l.Locate(d.id); ok {
				where = "pack " + info.Pack.String()
			}
			return fmt.Errorf("read chunk %s (stored in %s as a delta of chunk %s): its base cannot be read: %w (run backup-cli verify)", d.id, where, d.base, berr)
		}
	}
	return err
}

// getDepth is Get at a depth of delta chains.
func (s *Store) getDepth(ctx context.Context, id chunker.ID, depth int) ([]byte, error) {
	var data []byte
	err := s.readChunks(ctx, []chunker.ID{id}, depth, sinkOf(func(_ chunker.ID, d []byte) error {
		data = append([]byte(nil), d...)
		return nil
	}))
	return data, err
}

func (s *Store) workers() int {
	if s.readWorkers > 0 {
		return s.readWorkers
	}
	return runtime.GOMAXPROCS(0)
}

// decodeStream runs produce, which sends bodies (valid during the call
// only), and decodes them with several workers. decode gets a reusable
// buffer and returns it (grown).
func (s *Store) decodeStream(ctx context.Context, produce func(send func(ChunkBody) error) error, where string, sink ChunkSink, decode decodeFunc) error {
	workers := s.workers()
	g, ctx := newWorkGroup(ctx)
	defer g.cancel()
	work := make(chan ChunkBody, 4*workers)
	for i := 0; i < workers; i++ {
		g.spawn(func() {
			put, flush := sink()
			var buf []byte
			for b := range work {
				if ctx.Err() != nil {
					continue
				}
				data, err := decode(buf, b, where, put)
				if err != nil {
					g.fail(err)
					continue
				}
				buf = data
			}
			g.flush(ctx, flush)
		})
	}
	err := produce(func(b ChunkBody) error {
		b.Body = append([]byte(nil), b.Body...)
		select {
		case work <- b:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(work)
	if werr := g.wait(); werr != nil {
		return werr
	}
	return err
}

// readFull reads the spans with several workers, calling decode for each
// body.
func (s *Store) readFull(ctx context.Context, spans []readSpan, sink ChunkSink, decode decodeFunc) error {
	workers := s.workers()
	g, ctx := newWorkGroup(ctx)
	defer g.cancel()
	work := make(chan readSpan)
	for i := 0; i < workers; i++ {
		g.spawn(func() {
			put, flush := sink()
			var buf []byte
			for sp := range work {
				err := s.readSpan(ctx, sp, func(b ChunkBody, info ChunkInfo) error {
					data, err := decode(buf, b, "pack "+info.Pack.String(), put)
					if err != nil {
						return err
					}
					buf = data
					return nil
				})
				if err != nil {
					g.fail(err)
				}
			}
			g.flush(ctx, flush)
		})
	}
feed:
	for _, sp := range spans {
		select {
		case work <- sp:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	if err := g.wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// workGroup runs worker goroutines and keeps the first error, cancelling
// the others' context.
type workGroup struct {
	wg     sync.WaitGroup
	once   sync.Once
	err    error
	cancel context.CancelFunc
}

func newWorkGroup(ctx context.Context) (*workGroup, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &workGroup{cancel: cancel}, ctx
}

func (g *workGroup) spawn(fn func()) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn()
	}()
}

// fail records err if it is the first, and cancels the group's context.
func (g *workGroup) fail(err error) {
	g.once.Do(func() { g.err = err; g.cancel() })
}

// flush calls a worker's flush (if any) unless the group failed.
func (g *workGroup) flush(ctx context.Context, flush func() error) {
	if flush == nil || ctx.Err() != nil {
		return
	}
	if err := flush(); err != nil {
		g.fail(err)
	}
}

// wait waits for the workers and returns the first error.
func (g *workGroup) wait() error {
	g.wg.Wait()
	return g.err
}
