package packs

import (
	"context"
	"errors"
	"fmt"

	"github.com/clnbackup/backup/store/chunk"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
)

// BeginWrite readies the packs for a writer that starts now. With the whole
// index loaded, it loads indexes other writers added, so their chunks are
// reused rather than written again; otherwise only gc's newest condemned
// record (the writer looks up the chunks it puts).
func (p *Packs) BeginWrite(ctx context.Context) error {
	if p.isIndexed() {
		return p.Refresh(ctx)
	}
	return p.loadCondemned(ctx)
}

// WritePack drops from b the chunks the store holds in a copy gc has not
// condemned (among those no lookup answered for), then writes the pack and
// then its index, each durably.
func (p *Packs) WritePack(ctx context.Context, b *chunk.Batch) (chunk.Written, error) {
	bodies, kept, dropped, err := p.dropStored(ctx, b)
	if err != nil || len(kept) == 0 {
		return chunk.Written{Dropped: dropped}, err
	}
	w, err := p.writePack(ctx, bodies, kept)
	w.Dropped = dropped
	return w, err
}

// writePack writes bodies and their entries as a new pack and its index,
// whether or not the store holds the chunks (gc's repack moves live chunks
// out of packs it deletes).
func (p *Packs) writePack(ctx context.Context, bodies []byte, entries []chunk.Entry) (chunk.Written, error) {
	pack := buildPack(p.indexVersion, bodies, entries)
	packID := chunker.Sum(pack)
	if err := p.be.PutIfAbsent(ctx, packName(packID), pack); err != nil && !errors.Is(err, backend.ErrExists) {
		return chunk.Written{}, fmt.Errorf("write pack %s to store %s: %w", packID.Short(), p.be.Location(), err)
	}
	idx := encodeIndex(p.indexVersion, packID, entries)
	idxName := indexName(chunker.Sum(idx))
	if err := p.be.PutIfAbsent(ctx, idxName, idx); err != nil && !errors.Is(err, backend.ErrExists) {
		return chunk.Written{}, fmt.Errorf("write index of pack %s to store %s: %w", packID.Short(), p.be.Location(), err)
	}
	if p.isIndexed() {
		p.addIndex(idxName, packID, entries)
	}
	return chunk.Written{Entries: entries, Pack: packID, Packs: 1, PackBytes: int64(len(pack)), IndexBytes: int64(len(idx))}, nil
}

// dropStored looks up the chunks of b no lookup had answered for, and
// leaves out those the store holds in a copy gc has not condemned: another
// writer stored them, or they were never looked up. It returns the bodies
// and entries that remain.
func (p *Packs) dropStored(ctx context.Context, b *chunk.Batch) ([]byte, []chunk.Entry, []chunk.Entry, error) {
	if len(b.Unchecked) == 0 {
		return b.Bodies, b.Entries, nil, nil
	}
	l, err := p.Lookup(ctx, b.Unchecked)
	if err != nil {
		return nil, nil, nil, err
	}
	var dropped []chunk.Entry
	kept := make([]chunk.Entry, 0, len(b.Entries))
	bodies := make([]byte, 0, len(b.Bodies))
	for _, e := range b.Entries {
		if l.Has(e.ID) {
			dropped = append(dropped, e)
			continue
		}
		start := len(bodies)
		bodies = append(bodies, b.Bodies[e.Offset:e.Offset+e.Length]...)
		e.Offset = uint32(start)
		kept = append(kept, e)
	}
	if len(dropped) == 0 {
		return b.Bodies, b.Entries, nil, nil
	}
	return bodies, kept, dropped, nil
}

// Missing reports, for each id, whether the store lacks the chunk or holds
// it only in a copy gc has condemned (a writer must then store it anew): a
// store server's answer to its clients. It loads index objects other
// writers added first.
func (p *Packs) Missing(ctx context.Context, ids []chunker.ID) ([]bool, error) {
	if err := p.Refresh(ctx); err != nil {
		return nil, err
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		out[i] = !p.has(id)
	}
	return out, nil
}

// PutBodies stores compressed chunk bodies a client sent, the ones the
// store lacks, as one pack and its index, durably, and returns the bytes
// added. A store never holds data under a name it does not hash to, nor
// under a kind its content denies, so each body it keeps is first
// decompressed and checked against its id and declared kind. The work is
// bounded by what the request declares, checked before any is done: at
// most chunk.MaxSize bytes a body and chunk.MaxBatchRaw for the distinct
// ones; bodies
// already stored, or repeated, are skipped without being decompressed; a
// body never inflates past its declared size; ctx is checked between
// bodies (a store server cancels it when its client goes away); and at most
// DecodeSlots requests decompress at once, whatever the number of clients.
func (p *Packs) PutBodies(ctx context.Context, bodies []chunk.Body) (int64, error) {
	var raw int64
	distinct := make(map[chunker.ID]bool, len(bodies))
	for i, b := range bodies {
		if !b.Kind.Valid() {
			return 0, fmt.Errorf("chunk %d (%s): %w: unknown kind %d", i, b.ID.Short(), chunk.ErrBad, b.Kind)
		}
		if b.Base != (chunker.ID{}) {
			return 0, fmt.Errorf("chunk %d (%s): %w: a delta body (against %s); a store server takes full chunk bodies only", i, b.ID.Short(), chunk.ErrBad, b.Base.Short())
		}
		if b.Raw > chunk.MaxSize {
			return 0, fmt.Errorf("chunk %d (%s): %w: it declares %d bytes uncompressed, over the %d-byte chunk limit", i, b.ID.Short(), chunk.ErrBad, b.Raw, chunk.MaxSize)
		}
		// Repeats cost nothing (skipped below): only distinct bodies
		// count.
		if !distinct[b.ID] {
			distinct[b.ID] = true
			raw += int64(b.Raw)
		}
	}
	if raw > chunk.MaxBatchRaw {
		return 0, fmt.Errorf("%d chunk bodies: %w: they declare %d bytes uncompressed, over the %d bytes one request may carry; send them in smaller batches (a client of the same release does)", len(bodies), chunk.ErrBad, raw, chunk.MaxBatchRaw)
	}
	if err := p.Refresh(ctx); err != nil {
		return 0, err
	}
	todo := make([]int, 0, len(bodies))
	seen := map[chunker.ID]bool{}
	for i, b := range bodies {
		if seen[b.ID] || p.has(b.ID) {
			continue
		}
		seen[b.ID] = true
		todo = append(todo, i)
	}
	if len(todo) == 0 {
		return 0, nil
	}
	select {
	case p.decodeSlots <- struct{}{}:
	case <-ctx.Done():
		return 0, fmt.Errorf("store %d chunk bodies: waiting for a decompression slot: %w", len(todo), ctx.Err())
	}
	defer func() { <-p.decodeSlots }()
	var buf []byte
	size := 0
	for n, i := range todo {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("store chunk bodies: stopped after checking %d of %d: %w", n, len(todo), err)
		}
		b := bodies[i]
		if p.codec.Keyless() {
			// A keyless server checks the envelope only.
			if err := p.codec.CheckSealed(b); err != nil {
				return 0, fmt.Errorf("chunk %d: %w: %v", i, chunk.ErrBad, err)
			}
			size += len(b.Body)
			continue
		}
		data, err := p.codec.Decode(buf[:0], b, "client")
		if err != nil {
			return 0, fmt.Errorf("chunk %d: %w: %v", i, chunk.ErrBad, err)
		}
		if p.checkContent != nil {
			if err := p.checkContent(b.Kind, data); err != nil {
				return 0, fmt.Errorf("chunk %d (%s): %w: declared a %s chunk, but %v", i, b.ID.Short(), chunk.ErrBad, b.Kind, err)
			}
		}
		buf = data
		size += len(b.Body)
	}
	packed := make([]byte, 0, size)
	entries := make([]chunk.Entry, 0, len(todo))
	for _, i := range todo {
		b := bodies[i]
		entries = append(entries, chunk.Entry{ID: b.ID, Kind: b.Kind, Offset: uint32(len(packed)), Length: uint32(len(b.Body)), Raw: b.Raw})
		packed = append(packed, b.Body...)
	}
	w, err := p.writePack(ctx, packed, entries)
	return w.PackBytes + w.IndexBytes, err
}
