package packs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"

	"github.com/clnbackup/backup/internal/priority"

	"github.com/clnbackup/backup/store/chunk"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"golang.org/x/sync/errgroup"
)

// readSpan is a run of chunks of one pack read with one request.
type readSpan struct {
	pack       chunker.ID
	bases      []chunker.ID // the bases table of the lookup planned from
	start, end int64
	wants      []wantChunk
}

type wantChunk struct {
	id  chunker.ID
	loc location
}

// Spans are merged across gaps of at most maxSpanGap bytes into reads of at
// most maxSpan bytes: one request instead of many, at the cost of reading
// the gaps.
const maxSpanGap, maxSpan = 256 << 10, 4 << 20

// plan groups the chunks ids (each once; all must have been found by the
// lookup l) into spans of few large reads, in pack order. With skipDeltas,
// chunks whose copy is a delta are returned apart instead.
func (l *Located) plan(ids []chunker.ID, skipDeltas bool) ([]readSpan, []chunk.DeltaRef, error) {
	if l == nil {
		l = newLocated(nil)
	}
	wants := make([]wantChunk, 0, len(ids))
	var deltas []chunk.DeltaRef
	for _, id := range ids {
		i := l.find(id)
		if i < 0 || l.state[i] == locAbsent {
			return nil, nil, fmt.Errorf("read chunk %s: %w", id, chunk.ErrMissing)
		}
		loc := l.locs[i]
		if skipDeltas && loc.base != 0 {
			deltas = append(deltas, chunk.DeltaRef{ID: id, Base: l.bases[loc.base]})
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
	var spans []readSpan
	lo := 0
	for i, w := range wants {
		start, end := int64(w.loc.offset), int64(w.loc.offset)+int64(w.loc.length)
		if k := len(spans) - 1; k >= 0 && spans[k].wants[0].loc.pack == w.loc.pack && start-spans[k].end <= maxSpanGap && end-spans[k].start <= maxSpan {
			spans[k].end = max(spans[k].end, end)
			spans[k].wants = wants[lo : i+1]
			continue
		}
		lo = i
		spans = append(spans, readSpan{pack: l.packs[w.loc.pack], bases: l.bases, start: start, end: end, wants: wants[i : i+1]})
	}
	return spans, deltas, nil
}

// plan is l.plan, looking the chunks up again if l lacks one (gc may have
// moved it since l was made).
func (p *Packs) plan(ctx context.Context, l *Located, ids []chunker.ID, skipDeltas bool) ([]readSpan, []chunk.DeltaRef, error) {
	spans, deltas, err := l.plan(ids, skipDeltas)
	if errors.Is(err, chunk.ErrMissing) || l == nil {
		if l, err = p.lookupToRead(ctx, ids); err == nil {
			spans, deltas, err = l.plan(ids, skipDeltas)
		}
	}
	return spans, deltas, err
}

// ReadBodies reads the spans of ids with workers goroutines (see
// ChunkLayer). With deltasLater, delta copies are not read but returned.
func (p *Packs) ReadBodies(ctx context.Context, lookup chunk.Lookup, ids []chunker.ID, workers int, deltasLater bool, sink chunk.BodySink) ([]chunk.DeltaRef, error) {
	l, _ := lookup.(*Located) // another layer's lookup says nothing of packs
	spans, later, err := p.plan(ctx, l, ids, deltasLater)
	if err != nil {
		return nil, err
	}
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan readSpan)
	for range max(1, workers) {
		g.Go(func() error {
			// A compaction's workers run at its low priority.
			priority.Join(gctx)
			// A mapped span's bytes fault if its file shrinks: readSpan
			// recovers that into an error.
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			put, flush := sink()
			// The worker's span buffer, when the backend reads into one.
			buf := spanBufs.Get().(*[]byte)
			defer spanBufs.Put(buf)
			for sp := range work {
				if err := p.readSpan(gctx, sp, buf, put); err != nil {
					return err
				}
			}
			if flush == nil || gctx.Err() != nil {
				return nil
			}
			return flush()
		})
	}
feed:
	for _, sp := range spans {
		select {
		case work <- sp:
		case <-gctx.Done():
			break feed
		}
	}
	close(work)
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return later, ctx.Err()
}

// spanBufs keeps span buffers (up to maxSpan bytes each) between reads: a
// restore makes thousands of small reads of delta bases and deltas, and a
// new zeroed buffer for each cost it a fifth of its CPU. The pool lets the
// garbage collector drop them when reads stop (an idle plugin stays small).
var spanBufs = sync.Pool{New: func() any { return new([]byte) }}

// bufferedGetter is a backend that can read into the caller's buffer (the
// local one): a read then allocates nothing.
type bufferedGetter interface {
	GetInto(ctx context.Context, name string, off, length int64, buf []byte) ([]byte, error)
}

// spanMapper is a backend that can map a span of an object into memory
// (the local one on unix): a read then copies nothing. The bytes fault if
// the file shrinks while they are mapped, so readers of them run with
// debug.SetPanicOnFault (ReadBodies' workers) and recoverFault.
type spanMapper interface {
	MapSpan(ctx context.Context, name string, off, length int64) (data []byte, unmap func(), err error)
}

// recoverFault turns a fault on sp's mapped bytes (its pack file shrank
// under the read: a store host changed a pack, which no writer of ours
// does) into the read's error; any other panic goes on.
func recoverFault(sp readSpan, err *error) {
	r := recover()
	if r == nil {
		return
	}
	if f, ok := r.(interface{ Addr() uintptr }); ok {
		*err = fmt.Errorf("read pack %s: %w: the file shrank while it was read (fault at %#x); run backup-cli verify", sp.pack, chunk.ErrCorrupt, f.Addr())
		return
	}
	panic(r)
}

// readSpan hands put the stored body of every chunk of sp, mapped where the
// backend can map, else read into *buf where it can read into a buffer
// (the bodies are valid during put only). If gc
// deleted the pack since it was looked up, it reads each chunk where it is
// now.
func (p *Packs) readSpan(ctx context.Context, sp readSpan, buf *[]byte, put func(chunk.Body) error) (err error) {
	var raw []byte
	if m, ok := p.be.(spanMapper); ok {
		var unmap func()
		if raw, unmap, err = m.MapSpan(ctx, packName(sp.pack), sp.start, sp.end-sp.start); err == nil {
			defer unmap()
			defer recoverFault(sp, &err)
		}
	} else if g, ok := p.be.(bufferedGetter); ok {
		if raw, err = g.GetInto(ctx, packName(sp.pack), sp.start, sp.end-sp.start, *buf); err == nil {
			*buf = raw
		}
	} else {
		raw, err = p.be.Get(ctx, packName(sp.pack), sp.start, sp.end-sp.start)
	}
	if errors.Is(err, backend.ErrNotFound) {
		for _, w := range sp.wants {
			b, err := p.getBody(ctx, w.id)
			if err != nil {
				return err
			}
			if err := put(b); err != nil {
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
		b := chunk.Body{ID: w.id, Kind: w.loc.kind, Raw: w.loc.raw, Base: sp.bases[w.loc.base], Pack: sp.pack, Body: raw[o : o+int64(w.loc.length)]}
		if err := put(b); err != nil {
			return err
		}
	}
	return nil
}

// getBody reads one chunk's stored body where the store has it now. gc
// indexes the chunks it moves before it deletes their old pack, so a fresh
// lookup finds them, unless gc deleted the pack just after the lookup: then
// once more.
func (p *Packs) getBody(ctx context.Context, id chunker.ID) (chunk.Body, error) {
	for try := 0; ; try++ {
		if p.isIndexed() {
			if err := p.Refresh(ctx); err != nil {
				return chunk.Body{}, err
			}
		}
		l, err := p.lookupToRead(ctx, []chunker.ID{id})
		if err != nil {
			return chunk.Body{}, err
		}
		loc, ok := l.Locate(id)
		if !ok {
			return chunk.Body{}, fmt.Errorf("read chunk %s: %w", id, chunk.ErrMissing)
		}
		body, err := p.be.Get(ctx, packName(loc.Pack), int64(loc.Offset), int64(loc.Length))
		if errors.Is(err, backend.ErrNotFound) && try < 3 {
			continue
		}
		if err != nil {
			return chunk.Body{}, fmt.Errorf("read chunk %s from pack %s: %w", id, loc.Pack, err)
		}
		return chunk.Body{ID: id, Kind: loc.Kind, Raw: loc.Raw, Base: loc.Base, Pack: loc.Pack, Body: body}, nil
	}
}

// Get reads one chunk, verified against its id, for the store-wide work
// that reads few chunks (gc's marking of list and patch chunks).
func (p *Packs) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	return p.getDepth(ctx, id, 0)
}

func (p *Packs) getDepth(ctx context.Context, id chunker.ID, depth int) ([]byte, error) {
	b, err := p.getBody(ctx, id)
	if err != nil {
		return nil, err
	}
	if b.Base == (chunker.ID{}) {
		return p.codec.Decode(nil, b, "")
	}
	if depth >= chunk.MaxDeltaDepth {
		return nil, fmt.Errorf("read chunk %s: %w: a chain of more than %d delta copies (base %s); run backup-cli verify", id, chunk.ErrCorrupt, chunk.MaxDeltaDepth, b.Base)
	}
	base, err := p.getDepth(ctx, b.Base, depth+1)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s: its base chunk %s: %w", id, b.Base, err)
	}
	return p.codec.DecodeDelta(nil, b, base, "")
}
