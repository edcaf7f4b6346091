package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/chunk"
)

// ReadStored hands fn the stored body of every distinct id as the chunk
// layer keeps it: compressed, and possibly a delta (its Base set). It is
// for a copy to a store with the same chunk ids (history.Copy), which
// stores bodies as they are instead of decompressing and compressing them
// again. Bodies are NOT verified here: the copy reads back and verifies
// what it wrote before a manifest names it. fn may be called from several
// goroutines at once; the body's bytes are valid during the call only. A chunk the store does not
// hold fails the read, wrapping chunk.ErrMissing.
func (s *Store) ReadStored(ctx context.Context, ids []chunker.ID, fn func(chunk.Body) error) error {
	if len(ids) == 0 {
		return nil
	}
	l, err := s.chunks.Lookup(ctx, ids)
	if err != nil {
		return err
	}
	sink := func() (func(chunk.Body) error, func() error) { return fn, nil }
	later, err := s.chunks.ReadBodies(ctx, l, ids, s.reader.workers, false, sink)
	if err != nil {
		return err
	}
	if len(later) > 0 {
		// Asked for no deltas later: a layer that still set some aside
		// breaks its contract.
		return fmt.Errorf("read stored chunks from %s: the chunk layer left %d delta copies unread", s.Location(), len(later))
	}
	return nil
}

// errBodyDelta is returned (wrapped) by PutStored for a delta body the
// store takes no deltas for.
var errBodyDelta = errors.New("the store takes no delta copies")

// PutStored adds a chunk whose stored body comes from another store with
// the same chunk ids, as it is (no decompression): b.ID must name its
// bytes, and a delta body (b.Base set) needs a store that takes deltas and
// a base the caller found stored full in this store, in a copy a writer may
// rely on (Writer.DeltaBase says which). A full body is decompressed and
// checked against its id before it is taken (the other store's bytes are
// not trusted); a delta body cannot be without its base's bytes, so the
// caller reads the chunks back (ReadChunks, which verifies every one)
// before it commits a manifest naming them. isNew says whether the chunk
// was new to the store.
func (w *Writer) PutStored(ctx context.Context, kind chunk.Kind, b chunk.Body) (isNew bool, err error) {
	if w.enc == nil {
		return false, errors.New("chunk writer is closed")
	}
	if b.Raw > chunk.MaxSize {
		return false, fmt.Errorf("chunk %s of %d bytes exceeds the %d-byte limit", b.ID.Short(), b.Raw, chunk.MaxSize)
	}
	if b.Base != (chunker.ID{}) && (!w.s.DeltasAllowed() || kind != chunk.KindPage) {
		return false, fmt.Errorf("store chunk %s as a delta of %s in %s: %w", b.ID.Short(), b.Base.Short(), w.s.Location(), errBodyDelta)
	}
	if w.Has(b.ID) {
		w.stats.ReusedChunks++
		return false, nil
	}
	if b.Base == (chunker.ID{}) {
		data, err := w.s.codec.Decode(w.scratch[:0], b, "the store copied from")
		if err != nil {
			return false, err
		}
		w.scratch = data
	}
	start := len(w.bodies)
	w.bodies = append(w.bodies, b.Body...)
	return true, w.added(ctx, chunk.Entry{ID: b.ID, Kind: kind, Offset: uint32(start), Length: uint32(len(b.Body)), Raw: b.Raw, Base: b.Base})
}
