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
	if err := s.LoadIndex(ctx); err != nil {
		return nil, err
	}
	data, err := s.get(ctx, id)
	if stale(err) {
		if rerr := s.Refresh(ctx); rerr != nil {
			return nil, err
		}
		data, err = s.get(ctx, id)
	}
	return data, err
}

// stale reports whether a read failed in a way a fresher index may avoid.
func stale(err error) bool {
	return errors.Is(err, ErrChunkMissing) || errors.Is(err, backend.ErrNotFound)
}

func (s *Store) get(ctx context.Context, id chunker.ID) ([]byte, error) {
	loc, ok := s.Locate(id)
	if !ok {
		return nil, fmt.Errorf("read chunk %s: %w", id, ErrChunkMissing)
	}
	body, err := s.be.Get(ctx, packName(loc.Pack), int64(loc.Offset), int64(loc.Length))
	if err != nil {
		return nil, fmt.Errorf("read chunk %s from pack %s: %w", id, loc.Pack, err)
	}
	return s.decodeInto(make([]byte, 0, loc.Raw), id, loc, body)
}

// decodeInto decompresses a chunk body into dst (reusing its capacity) and
// verifies it against its id.
func (s *Store) decodeInto(dst []byte, id chunker.ID, loc ChunkInfo, body []byte) ([]byte, error) {
	data, err := s.dec.DecodeAll(body, dst)
	if err != nil {
		return nil, fmt.Errorf("read chunk %s from pack %s: %w: cannot decompress (%v); run backup-cli verify", id, loc.Pack, ErrCorrupt, err)
	}
	if uint32(len(data)) != loc.Raw || chunker.Sum(data) != id {
		return nil, fmt.Errorf("read chunk %s from pack %s: %w: hash mismatch; run backup-cli verify", id, loc.Pack, ErrCorrupt)
	}
	return data, nil
}

// ReadChunks fetches many chunks efficiently: grouped by pack, in few large
// reads, decompressed and verified by several workers. fn is called once per
// distinct id, from several goroutines at once; the data is only valid during
// the call. The first error stops the reading and is returned. Memory is one
// small entry per distinct id plus one read span per worker.
func (s *Store) ReadChunks(ctx context.Context, ids []chunker.ID, fn func(id chunker.ID, data []byte) error) error {
	if err := s.LoadIndex(ctx); err != nil {
		return err
	}
	type want struct {
		id  chunker.ID
		loc location
	}
	wants := make([]want, 0, len(ids))
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
				return err
			}
			// Indexed since we loaded the index: start over.
			if _, ok := s.Locate(id); ok {
				return s.ReadChunks(ctx, ids, fn)
			}
			return fmt.Errorf("read chunk %s: %w", id, ErrChunkMissing)
		}
		wants = append(wants, want{id, loc})
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
	// Cut the sorted chunks into spans read with one request each.
	const maxGap, maxSpan = 256 << 10, 8 << 20
	type span struct {
		pack       chunker.ID
		start, end int64
		lo, hi     int // wants[lo:hi]
	}
	var spans []span
	for i, w := range wants {
		start, end := int64(w.loc.offset), int64(w.loc.offset)+int64(w.loc.length)
		if k := len(spans) - 1; k >= 0 && wants[spans[k].lo].loc.pack == w.loc.pack && start-spans[k].end <= maxGap && end-spans[k].start <= maxSpan {
			spans[k].end = max(spans[k].end, end)
			spans[k].hi = i + 1
			continue
		}
		spans = append(spans, span{pack: packs[w.loc.pack], start: start, end: end, lo: i, hi: i + 1})
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan span)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	workers := s.readWorkers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for sp := range work {
				raw, err := s.be.Get(ctx, packName(sp.pack), sp.start, sp.end-sp.start)
				if errors.Is(err, backend.ErrNotFound) {
					// gc deleted the pack since the index was
					// loaded: read its chunks where they are now.
					for _, w := range wants[sp.lo:sp.hi] {
						data, err := s.Get(ctx, w.id)
						if err == nil {
							err = fn(w.id, data)
						}
						if err != nil {
							fail(err)
							break
						}
					}
					continue
				}
				if err != nil {
					fail(fmt.Errorf("read pack %s: %w", sp.pack, err))
					continue
				}
				for _, w := range wants[sp.lo:sp.hi] {
					o := int64(w.loc.offset) - sp.start
					info := ChunkInfo{Pack: sp.pack, Kind: w.loc.kind, Offset: w.loc.offset, Length: w.loc.length, Raw: w.loc.raw}
					var data []byte
					data, err = s.decodeInto(buf[:0], w.id, info, raw[o:o+int64(w.loc.length)])
					if err == nil {
						buf = data
						err = fn(w.id, data)
					}
					if err != nil {
						fail(err)
						break
					}
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
