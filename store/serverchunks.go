package store

import (
	"context"
	"fmt"
	"slices"

	"github.com/clnbackup/backup/internal/priority"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/chunk"
	"golang.org/x/sync/errgroup"
)

// ChunkService is the chunk side of a store server, as its client sees it
// (store/remote implements it over the wire). The server verifies every
// body it is given against its ID before storing it; the client verifies
// every body it receives.
type ChunkService interface {
	// Missing reports, for each id, whether the server lacks the chunk
	// (or holds it only in a copy gc has condemned): those must be sent.
	Missing(ctx context.Context, ids []chunker.ID) ([]bool, error)
	// PutBodies stores chunks durably (one pack and its index) before
	// returning the bytes the store grew by.
	PutBodies(ctx context.Context, bodies []chunk.Body) (added int64, err error)
	// ReadBodies calls fn with the stored body of every distinct id, in
	// the server's pack order, one at a time; Body is only valid during
	// the call. A missing chunk fails with an error wrapping
	// chunk.ErrMissing.
	ReadBodies(ctx context.Context, ids []chunker.ID, fn func(chunk.Body) error) error
}

// serverChunks is the chunk layer of a client that reaches its chunks
// through a store server's chunk service: the server keeps the packs and
// the index, looks chunks up and dedups what it is sent; the client never
// sees where a chunk is, only whether the server has it.
type serverChunks struct {
	svc   ChunkService
	where string // the server, for messages
}

// Lookup asks the server which chunks it has; the lookup holds no
// locations (the server reads by id).
func (c *serverChunks) Lookup(ctx context.Context, ids []chunker.ID) (chunk.Lookup, error) {
	l := presence{}
	for _, id := range ids {
		l[id] = false
	}
	distinct := make([]chunker.ID, 0, len(l))
	for id := range l {
		distinct = append(distinct, id)
	}
	if len(distinct) == 0 {
		return l, nil
	}
	missing, err := c.missing(ctx, distinct)
	if err != nil {
		return nil, err
	}
	for i, id := range distinct {
		l[id] = !missing[i]
	}
	return l, nil
}

// presence is a store server's answer to a lookup: whether it has each
// chunk (in a copy gc has not condemned), not where.
type presence map[chunker.ID]bool

func (l presence) Known(id chunker.ID) bool { _, ok := l[id]; return ok }
func (l presence) Has(id chunker.ID) bool   { return l[id] }

// Locate finds a chunk the server has, at no location the client sees.
func (l presence) Locate(id chunker.ID) (chunk.Info, bool) { return chunk.Info{}, l[id] }

// Stored notes the chunks a writer has just sent.
func (l presence) Stored(_ chunker.ID, entries []chunk.Entry) {
	for _, e := range entries {
		if _, ok := l[e.ID]; ok {
			l[e.ID] = true
		}
	}
}

func (c *serverChunks) missing(ctx context.Context, ids []chunker.ID) ([]bool, error) {
	missing, err := c.svc.Missing(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("ask store server %s which chunks it lacks: %w", c.where, err)
	}
	if len(missing) != len(ids) {
		return nil, fmt.Errorf("store server %s answered %d of %d chunk lookups", c.where, len(missing), len(ids))
	}
	return missing, nil
}

// ReadBodies streams the bodies from the server and hands them to workers
// goroutines (the server's stream is one connection; decoding is the work
// to share). Delta copies come in the stream like any other body.
func (c *serverChunks) ReadBodies(ctx context.Context, _ chunk.Lookup, ids []chunker.ID, workers int, _ bool, sink chunk.BodySink) ([]chunk.DeltaRef, error) {
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan chunk.Body, 4*max(1, workers))
	for range max(1, workers) {
		g.Go(func() error {
			priority.Join(gctx) // a compaction's decoders run at its priority
			put, flush := sink()
			for b := range work {
				if err := put(b); err != nil {
					return err
				}
			}
			if flush == nil || gctx.Err() != nil {
				return nil
			}
			return flush()
		})
	}
	err := c.svc.ReadBodies(gctx, ids, func(b chunk.Body) error {
		b.Body = slices.Clone(b.Body)
		select {
		case work <- b:
			return nil
		case <-gctx.Done():
			return gctx.Err()
		}
	})
	close(work)
	if werr := g.Wait(); werr != nil {
		return nil, werr
	}
	return nil, err
}

// BeginWrite does nothing: the server keeps gc's condemned record and
// answers each Missing with it.
func (c *serverChunks) BeginWrite(context.Context) error { return nil }

// WritePack sends the server the chunks it lacks, as one pack.
func (c *serverChunks) WritePack(ctx context.Context, b *chunk.Batch) (chunk.Written, error) {
	ids := make([]chunker.ID, len(b.Entries))
	for i, e := range b.Entries {
		ids[i] = e.ID
	}
	missing, err := c.missing(ctx, ids)
	if err != nil {
		return chunk.Written{}, err
	}
	var w chunk.Written
	var send []chunk.Body
	for i, e := range b.Entries {
		if !missing[i] {
			w.Dropped = append(w.Dropped, e)
			continue
		}
		send = append(send, chunk.Body{ID: e.ID, Kind: e.Kind, Raw: e.Raw, Body: b.Bodies[e.Offset : e.Offset+e.Length]})
		w.Entries = append(w.Entries, e)
	}
	if len(send) > 0 {
		added, err := c.svc.PutBodies(ctx, send)
		if err != nil {
			return chunk.Written{}, fmt.Errorf("send %d chunks to store server %s: %w", len(send), c.where, err)
		}
		w.Packs, w.PackBytes = 1, added
	}
	return w, nil
}

// Deltas is false: a store server takes full bodies only (it could not
// check a delta against its id without reading the base).
func (c *serverChunks) Deltas() bool { return false }

// ReleaseIndex does nothing: the server holds the index.
func (c *serverChunks) ReleaseIndex() {}
