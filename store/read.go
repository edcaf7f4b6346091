package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
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

// getBody reads one chunk's stored body, refreshing the index once if the
// chunk or its pack is not where the index said.
func (s *Store) getBody(ctx context.Context, id chunker.ID) (ChunkBody, ChunkInfo, error) {
	b, loc, err := s.getBodyOnce(ctx, id)
	if stale(err) {
		if rerr := s.Refresh(ctx); rerr != nil {
			return ChunkBody{}, ChunkInfo{}, err
		}
		b, loc, err = s.getBodyOnce(ctx, id)
	}
	return b, loc, err
}

func (s *Store) getBodyOnce(ctx context.Context, id chunker.ID) (ChunkBody, ChunkInfo, error) {
	loc, ok := s.Locate(id)
	if !ok {
		return ChunkBody{}, loc, fmt.Errorf("read chunk %s: %w", id, ErrChunkMissing)
	}
	body, err := s.be.Get(ctx, packName(loc.Pack), int64(loc.Offset), int64(loc.Length))
	if err != nil {
		return ChunkBody{}, loc, fmt.Errorf("read chunk %s from pack %s: %w", id, loc.Pack, err)
	}
	return ChunkBody{ID: id, Kind: loc.Kind, Raw: loc.Raw, Body: body}, loc, nil
}

// decodeInto decompresses the body of chunk id stored at loc into dst
// (reusing its capacity) and verifies it against its id.
func (s *Store) decodeInto(dst []byte, id chunker.ID, loc ChunkInfo, body []byte) ([]byte, error) {
	return s.decodeBody(dst, ChunkBody{ID: id, Kind: loc.Kind, Raw: loc.Raw, Body: body}, "pack "+loc.Pack.String())
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
	start, end int64
	wants      []wantChunk
}

type wantChunk struct {
	id  chunker.ID
	loc location
}

// planReads locates ids (each once) and groups them into spans of few large
// reads, in pack order.
func (s *Store) planReads(ctx context.Context, ids []chunker.ID) ([]readSpan, error) {
	if err := s.LoadIndex(ctx); err != nil {
		return nil, err
	}
	wants := make([]wantChunk, 0, len(ids))
	// Pack numbers index the packs slice of the same hold of the lock: a
	// Refresh may start the index over and number packs anew. (The slice
	// is only appended to until then, so holding it is enough.)
	var packs []chunker.ID
	s.mu.RLock()
	for _, id := range ids {
		loc, ok := s.chunks[id]
		if !ok {
			s.mu.RUnlock()
			if err := s.Refresh(ctx); err != nil {
				return nil, err
			}
			// Indexed since we loaded the index: start over.
			if _, ok := s.Locate(id); ok {
				return s.planReads(ctx, ids)
			}
			return nil, fmt.Errorf("read chunk %s: %w", id, ErrChunkMissing)
		}
		wants = append(wants, wantChunk{id, loc})
	}
	packs = s.packs
	s.mu.RUnlock()
	sort.Slice(wants, func(i, j int) bool {
		a, b := wants[i].loc, wants[j].loc
		if a.pack != b.pack {
			return a.pack < b.pack
		}
		return a.offset < b.offset
	})
	// Drop repeated ids (adjacent now: one id has one location).
	n := 0
	for i, w := range wants {
		if i == 0 || w.id != wants[n-1].id {
			wants[n] = w
			n++
		}
	}
	wants = wants[:n]
	const maxGap, maxSpan = 256 << 10, 8 << 20
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
		spans = append(spans, readSpan{pack: packs[w.loc.pack], start: start, end: end, wants: wants[i : i+1]})
	}
	return spans, nil
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
		info := ChunkInfo{Pack: sp.pack, Kind: w.loc.kind, Offset: w.loc.offset, Length: w.loc.length, Raw: w.loc.raw}
		b := ChunkBody{ID: w.id, Kind: w.loc.kind, Raw: w.loc.raw, Body: raw[o : o+int64(w.loc.length)]}
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
	if s.remoteChunks != nil {
		return s.remoteChunks.ReadBodies(ctx, ids, fn)
	}
	spans, err := s.planReads(ctx, ids)
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

// ReadChunks fetches many chunks efficiently: grouped by pack, in few large
// reads, decompressed and verified by several workers. fn is called once per
// distinct id, from several goroutines at once; the data is only valid during
// the call. The first error stops the reading and is returned. Memory is one
// small entry per distinct id plus one read span per worker.
func (s *Store) ReadChunks(ctx context.Context, ids []chunker.ID, fn func(id chunker.ID, data []byte) error) error {
	workers := s.readWorkers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	if s.remoteChunks != nil {
		// The server streams bodies; workers decompress and verify.
		work := make(chan ChunkBody, 4*workers)
		for i := 0; i < workers; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var buf []byte
				for b := range work {
					data, err := s.decodeBody(buf[:0], b, "store server "+s.Location())
					if err == nil {
						buf = data
						err = fn(b.ID, data)
					}
					if err != nil {
						fail(err)
					}
				}
			}()
		}
		err := s.remoteChunks.ReadBodies(ctx, ids, func(b ChunkBody) error {
			b.Body = append([]byte(nil), b.Body...)
			select {
			case work <- b:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		close(work)
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
		return err
	}

	spans, err := s.planReads(ctx, ids)
	if err != nil {
		return err
	}
	work := make(chan readSpan)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for sp := range work {
				err := s.readSpan(ctx, sp, func(b ChunkBody, info ChunkInfo) error {
					data, err := s.decodeBody(buf[:0], b, "pack "+info.Pack.String())
					if err != nil {
						return err
					}
					buf = data
					return fn(b.ID, data)
				})
				if err != nil {
					fail(err)
				}
			}
		}()
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
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
