package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"

	"github.com/clnbackup/backup/chunker"
)

// ErrChunkMissing is returned (wrapped) for a chunk the index does not know.
var ErrChunkMissing = errors.New("chunk not in the store")

// ErrCorrupt is returned (wrapped) when stored bytes do not match their name.
var ErrCorrupt = errors.New("stored data is damaged")

// Get returns a chunk's bytes, verified against its ID.
func (s *Store) Get(ctx context.Context, id chunker.ID) ([]byte, error) {
	if err := s.LoadIndex(ctx); err != nil {
		return nil, err
	}
	loc, ok := s.Locate(id)
	if !ok {
		return nil, fmt.Errorf("read chunk %s: %w", id, ErrChunkMissing)
	}
	body, err := s.be.Get(ctx, packName(loc.Pack), int64(loc.Offset), int64(loc.Length))
	if err != nil {
		return nil, fmt.Errorf("read chunk %s from pack %s: %w", id, loc.Pack, err)
	}
	return s.decode(id, loc, body)
}

func (s *Store) decode(id chunker.ID, loc ChunkInfo, body []byte) ([]byte, error) {
	data, err := s.dec.DecodeAll(body, make([]byte, 0, loc.Raw))
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
// the call. The first error stops the reading and is returned.
func (s *Store) ReadChunks(ctx context.Context, ids []chunker.ID, fn func(id chunker.ID, data []byte) error) error {
	if err := s.LoadIndex(ctx); err != nil {
		return err
	}
	type want struct {
		id  chunker.ID
		loc ChunkInfo
	}
	byPack := map[chunker.ID][]want{}
	seen := make(map[chunker.ID]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		loc, ok := s.Locate(id)
		if !ok {
			return fmt.Errorf("read chunk %s: %w", id, ErrChunkMissing)
		}
		byPack[loc.Pack] = append(byPack[loc.Pack], want{id, loc})
	}
	// Cut each pack's wanted chunks into spans read with one request.
	const maxGap, maxSpan = 256 << 10, 8 << 20
	type span struct {
		pack  chunker.ID
		start int64
		end   int64
		items []want
	}
	var spans []span
	packs := make([]chunker.ID, 0, len(byPack))
	for p := range byPack {
		packs = append(packs, p)
	}
	sort.Slice(packs, func(i, j int) bool { return string(packs[i][:]) < string(packs[j][:]) })
	for _, p := range packs {
		items := byPack[p]
		sort.Slice(items, func(i, j int) bool { return items[i].loc.Offset < items[j].loc.Offset })
		var cur *span
		for _, it := range items {
			start, end := int64(it.loc.Offset), int64(it.loc.Offset)+int64(it.loc.Length)
			if cur == nil || start-cur.end > maxGap || end-cur.start > maxSpan {
				spans = append(spans, span{pack: p, start: start, end: end})
				cur = &spans[len(spans)-1]
			}
			if end > cur.end {
				cur.end = end
			}
			cur.items = append(cur.items, it)
		}
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
	workers := runtime.GOMAXPROCS(0)
	if workers < 2 {
		workers = 2
	}
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sp := range work {
				buf, err := s.be.Get(ctx, packName(sp.pack), sp.start, sp.end-sp.start)
				if err != nil {
					fail(fmt.Errorf("read pack %s: %w", sp.pack, err))
					continue
				}
				for _, it := range sp.items {
					o := int64(it.loc.Offset) - sp.start
					data, err := s.decode(it.id, it.loc, buf[o:o+int64(it.loc.Length)])
					if err == nil {
						err = fn(it.id, data)
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
