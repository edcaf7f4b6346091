package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"github.com/klauspost/compress/zstd"
)

// Writer adds chunks to the store. It skips every chunk the store already
// holds, compresses the others into a pack, and on Flush writes the pack and
// then its index, each durably. Whether the store holds a chunk is answered
// by the lookup the caller gave it (Know), else by the store's loaded
// index; a chunk neither knows is looked up when its pack is flushed, and
// dropped from the pack if the store has it, so no chunk is stored twice.
// A chunk is readable by others, and may be named by a manifest, only
// after the Flush that wrote it returned.
// A Writer is not safe for concurrent use; use one per goroutine.
type Writer struct {
	s       *Store
	enc     *zstd.Encoder
	denc    *zstd.Encoder // for deltas (PutDelta), made on first use
	bodies  []byte
	scratch []byte
	entries []indexEntry
	pending map[chunker.ID]bool
	stats   WriteStats
	started time.Time
	// stored reports chunks the caller knows the store keeps (see Assume).
	stored func(chunker.ID) bool
	// known is the caller's lookup of the chunks it is about to put (Know).
	known *Located
	// unchecked are the chunks put that neither known nor a loaded index
	// answered for: Flush looks them up before writing the pack.
	unchecked []chunker.ID
}

// WriteStats counts what a writer did.
type WriteStats struct {
	NewChunks    int
	ReusedChunks int
	// NewRawBytes is the uncompressed size of the new chunks.
	NewRawBytes int64
	// DeltaChunks are the new chunks stored as deltas (PutDelta).
	DeltaChunks int
	// PackBytes and IndexBytes are the bytes written as packs and indexes.
	PackBytes  int64
	IndexBytes int64
	Packs      int
}

// Added is the bytes the writer added to the store.
func (w WriteStats) Added() int64 { return w.PackBytes + w.IndexBytes }

// NewWriter starts a writer. With the whole index loaded, it first loads
// indexes other writers added, so their chunks are reused rather than
// written again; otherwise it loads only gc's newest condemned record (the
// caller looks up the chunks it puts: Store.Lookup and Know).
func (s *Store) NewWriter(ctx context.Context) (*Writer, error) {
	// The age limit counts from before the condemned record is read: the
	// writer relies on that record from then on.
	started := s.now()
	var err error
	switch {
	case s.remoteChunks != nil:
		// The server keeps the index and the condemned record.
	case s.isIndexed():
		err = s.Refresh(ctx)
	default:
		err = s.loadCondemned(ctx)
	}
	if err != nil {
		return nil, err
	}
	return s.newWriter(started)
}

// newWriter starts a writer without refreshing the index (gc's repack
// stores chunks whether or not the store has them).
func (s *Store) newWriter(started time.Time) (*Writer, error) {
	enc, err := s.encoder()
	if err != nil {
		return nil, fmt.Errorf("start chunk writer: %w", err)
	}
	return &Writer{s: s, enc: enc, pending: map[chunker.ID]bool{}, started: started}, nil
}

// ErrWriterTooOld is returned (wrapped) by CheckAge.
var ErrWriterTooOld = errors.New("writer ran longer than the store allows")

// CheckAge must be called just before committing a manifest that names
// chunks this writer reused: gc keeps a condemned chunk for its grace period,
// which is longer than MaxWriterAge, so a writer younger than that can rely
// on every chunk it found in the store.
func (w *Writer) CheckAge() error {
	if age := w.s.now().Sub(w.started); age > w.s.maxWriterAge {
		return fmt.Errorf("%w: %s since it looked up chunks (limit %s); retry the operation", ErrWriterTooOld, age.Round(time.Second), w.s.maxWriterAge)
	}
	return nil
}

// Assume tells the writer that the store holds, and gc keeps, every chunk
// for which stored returns true: the chunks the node's newest manifest
// names (gc never collects those; forget never removes a node's newest
// manifest). Such chunks are neither looked up nor sent, which keeps a
// compaction through a store server from asking about every page.
func (w *Writer) Assume(stored func(chunker.ID) bool) { w.stored = stored }

// Know gives the writer a lookup of the chunks it is about to put (made
// after NewWriter): it answers whether the store has them, and records the
// chunks the writer stores. It replaces the lookup given before.
func (w *Writer) Know(l *Located) { w.known = l }

// Reused counts a chunk the caller did not put because Has said the writer
// would skip it (for the statistics).
func (w *Writer) Reused() { w.stats.ReusedChunks++ }

// Put adds data as a chunk of the given kind and returns its ID; isNew says
// whether it was new to the store.
func (w *Writer) Put(ctx context.Context, kind Kind, data []byte) (id chunker.ID, isNew bool, err error) {
	id = chunker.Sum(data)
	isNew, err = w.PutID(ctx, kind, id, data)
	return id, isNew, err
}

// PutID is Put for a caller that already has the chunk's ID (the chunker
// computes it). id must be chunker.Sum(data).
func (w *Writer) PutID(ctx context.Context, kind Kind, id chunker.ID, data []byte) (isNew bool, err error) {
	if w.enc == nil {
		return false, errors.New("chunk writer is closed")
	}
	if len(data) > MaxChunkSize {
		return false, fmt.Errorf("chunk %s of %d bytes exceeds the %d-byte limit", id.Short(), len(data), MaxChunkSize)
	}
	if w.Has(id) {
		w.stats.ReusedChunks++
		return false, nil
	}
	start := len(w.bodies)
	w.bodies = w.enc.EncodeAll(data, w.bodies)
	return true, w.added(ctx, indexEntry{ID: id, Kind: kind, Offset: uint32(start), Length: uint32(len(w.bodies) - start), Raw: uint32(len(data))})
}

// added records the entry of a body just appended to the pack, and closes
// the pack once it reached the store's pack size.
func (w *Writer) added(ctx context.Context, e indexEntry) error {
	w.entries = append(w.entries, e)
	w.pending[e.ID] = true
	if w.s.remoteChunks == nil && !w.known.Known(e.ID) && !w.s.isIndexed() {
		w.unchecked = append(w.unchecked, e.ID)
	}
	if w.s.remoteChunks == nil {
		// Through a server, Flush counts what the server lacked.
		w.stats.NewChunks++
		w.stats.NewRawBytes += int64(e.Raw)
	}
	if len(w.bodies) >= w.s.cfg.Params.PackSize {
		return w.Flush(ctx)
	}
	return nil
}

// Has reports whether the writer would skip the chunk: put already, known
// stored (Assume), or held by the store in a copy gc has not condemned (as
// the lookup given to Know, or else the loaded index, says).
func (w *Writer) Has(id chunker.ID) bool {
	if w.pending[id] || (w.stored != nil && w.stored(id)) {
		return true
	}
	if w.known.Known(id) {
		return w.known.Has(id)
	}
	return w.s.Has(id)
}

// Locate says where the store keeps a chunk, and whether the copy is one a
// writer may rely on (not condemned), as the lookup given to Know or else
// the loaded index says.
func (w *Writer) Locate(id chunker.ID) (info ChunkInfo, ok, usable bool) {
	if w.known.Known(id) {
		info, ok = w.known.Locate(id)
		return info, ok, w.known.Has(id)
	}
	info, ok = w.s.Locate(id)
	return info, ok, w.s.Has(id)
}

// deltaMaxShare: PutDelta stores a delta only if it is smaller than this
// share of the page's plain body; otherwise the page is stored full (which
// also re-bases a page that drifted far from its base).
const deltaMaxShare = 0.7

// PutDelta is PutID for a page chunk whose previous version is base
// (baseData its full bytes): a new page is stored as a zstd delta against
// base when that is clearly smaller than the page alone. It stores the page
// full whenever deltas are not allowed: a version-1 store, a store server
// client without full access, a base the store does not hold (or holds only
// in a copy gc condemned), or a base that is itself stored as a delta (a
// delta's base is always a full copy, so reading one needs one more chunk).
func (w *Writer) PutDelta(ctx context.Context, id chunker.ID, data []byte, base chunker.ID, baseData []byte) (isNew bool, err error) {
	if w.enc == nil {
		return false, errors.New("chunk writer is closed")
	}
	if w.Has(id) {
		w.stats.ReusedChunks++
		return false, nil
	}
	if !w.s.DeltasAllowed() || base == id || len(data) > MaxChunkSize {
		return w.PutID(ctx, KindPage, id, data)
	}
	if info, _, usable := w.Locate(base); !usable || info.Base != (chunker.ID{}) || chunker.Sum(baseData) != base {
		return w.PutID(ctx, KindPage, id, data)
	}
	if w.denc == nil {
		// A page and its base fit a 128 KiB window (pages are at most
		// 64 KiB); the default window would cost ~30 MB of tables.
		// SpeedFastest: setting the base as dictionary costs 37 µs a
		// page against 250 µs for SpeedDefault, and the deltas are as
		// small (0.102x vs 0.102x the pages' plain frames on the 50 MB
		// benchmark).
		if w.denc, err = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithWindowSize(1<<17), zstd.WithLowerEncoderMem(true)); err != nil {
			return false, fmt.Errorf("start delta writer: %w", err)
		}
	}
	// The base is the raw dictionary, with no dictionary id in the frame.
	if err := w.denc.ResetWithOptions(nil, zstd.WithEncoderDictRaw(0, baseData)); err != nil {
		return false, fmt.Errorf("compress page %s against %s: %w", id.Short(), base.Short(), err)
	}
	w.scratch = w.enc.EncodeAll(data, w.scratch[:0])
	start := len(w.bodies)
	w.bodies = w.denc.EncodeAll(data, w.bodies)
	e := indexEntry{ID: id, Kind: KindPage, Offset: uint32(start), Length: uint32(len(w.bodies) - start), Raw: uint32(len(data)), Base: base}
	if float64(e.Length) >= deltaMaxShare*float64(len(w.scratch)) {
		w.bodies = append(w.bodies[:start], w.scratch...)
		e.Length, e.Base = uint32(len(w.scratch)), chunker.ID{}
	} else {
		w.stats.DeltaChunks++
	}
	return true, w.added(ctx, e)
}

// Flush makes every chunk put so far durable: the pack, then its index.
func (w *Writer) Flush(ctx context.Context) error {
	if len(w.entries) == 0 {
		return nil
	}
	if w.s.remoteChunks != nil {
		return w.flushRemote(ctx)
	}
	if err := w.dropStored(ctx); err != nil {
		return err
	}
	if len(w.entries) == 0 {
		w.bodies = w.bodies[:0]
		clear(w.pending)
		return nil
	}
	pack := buildPack(w.s.indexVersion(), w.bodies, w.entries)
	packID := chunker.Sum(pack)
	if err := w.s.be.PutIfAbsent(ctx, packName(packID), pack); err != nil && !errors.Is(err, backend.ErrExists) {
		return fmt.Errorf("write pack %s to store %s: %w", packID.Short(), w.s.Location(), err)
	}
	idx := encodeIndex(w.s.indexVersion(), packID, w.entries)
	idxName := indexName(chunker.Sum(idx))
	if err := w.s.be.PutIfAbsent(ctx, idxName, idx); err != nil && !errors.Is(err, backend.ErrExists) {
		return fmt.Errorf("write index of pack %s to store %s: %w", packID.Short(), w.s.Location(), err)
	}
	if w.s.isIndexed() {
		w.s.addIndex(idxName, packID, w.entries)
	}
	if w.known != nil {
		w.known.stored(packID, w.entries)
	}
	w.stats.Packs++
	w.stats.PackBytes += int64(len(pack))
	w.stats.IndexBytes += int64(len(idx))
	w.bodies = w.bodies[:0]
	w.entries = nil
	clear(w.pending)
	return nil
}

// dropStored looks up the chunks put that no lookup had answered for, and
// takes those the store holds (in a copy gc has not condemned) out of the
// pack: another writer stored them, or they were never looked up.
func (w *Writer) dropStored(ctx context.Context) error {
	if len(w.unchecked) == 0 {
		return nil
	}
	l, err := w.s.Lookup(ctx, w.unchecked)
	if err != nil {
		return err
	}
	w.unchecked = w.unchecked[:0]
	if !slices.ContainsFunc(w.entries, func(e indexEntry) bool { return l.Has(e.ID) }) {
		return nil
	}
	kept := w.entries[:0]
	bodies := w.scratch[:0]
	for _, e := range w.entries {
		if l.Has(e.ID) {
			w.stats.NewChunks--
			w.stats.NewRawBytes -= int64(e.Raw)
			w.stats.ReusedChunks++
			if e.delta() {
				w.stats.DeltaChunks--
			}
			continue
		}
		start := len(bodies)
		bodies = append(bodies, w.bodies[e.Offset:e.Offset+e.Length]...)
		e.Offset = uint32(start)
		kept = append(kept, e)
	}
	w.entries = kept
	w.bodies, w.scratch = bodies, w.bodies
	return nil
}

// flushRemote sends the server the chunks it lacks, as one pack.
func (w *Writer) flushRemote(ctx context.Context) error {
	ids := make([]chunker.ID, len(w.entries))
	for i, e := range w.entries {
		ids[i] = e.ID
	}
	missing, err := w.s.remoteChunks.Missing(ctx, ids)
	if err != nil {
		return fmt.Errorf("ask store server %s which chunks it lacks: %w", w.s.Location(), err)
	}
	if len(missing) != len(ids) {
		return fmt.Errorf("store server %s answered %d of %d chunk lookups", w.s.Location(), len(missing), len(ids))
	}
	var send []ChunkBody
	for i, e := range w.entries {
		if !missing[i] {
			w.stats.ReusedChunks++
			continue
		}
		send = append(send, ChunkBody{ID: e.ID, Kind: e.Kind, Raw: e.Raw, Body: w.bodies[e.Offset : e.Offset+e.Length]})
		w.stats.NewChunks++
		w.stats.NewRawBytes += int64(e.Raw)
	}
	if len(send) > 0 {
		added, err := w.s.remoteChunks.PutBodies(ctx, send)
		if err != nil {
			return fmt.Errorf("send %d chunks to store server %s: %w", len(send), w.s.Location(), err)
		}
		w.stats.Packs++
		w.stats.PackBytes += added
	}
	w.bodies = w.bodies[:0]
	w.entries = nil
	clear(w.pending)
	return nil
}

// Stats returns what the writer did so far.
func (w *Writer) Stats() WriteStats { return w.stats }

// Close releases the writer. Chunks not flushed are dropped.
func (w *Writer) Close() {
	if w.enc != nil {
		w.s.putEncoder(w.enc)
		w.enc = nil
	}
	if w.denc != nil {
		w.denc.Close()
		w.denc = nil
	}
}

// putAlways stores a chunk even if the store has it (gc's repack moves live
// chunks out of a pack it is about to delete).
func (w *Writer) putAlways(kind Kind, id chunker.ID, data []byte) {
	start := len(w.bodies)
	w.bodies = w.enc.EncodeAll(data, w.bodies)
	w.entries = append(w.entries, indexEntry{ID: id, Kind: kind, Offset: uint32(start), Length: uint32(len(w.bodies) - start), Raw: uint32(len(data))})
	w.pending[id] = true
	w.stats.NewChunks++
	w.stats.NewRawBytes += int64(len(data))
}

// putRaw stores a chunk's stored body as it is, even if the store has the
// chunk (gc's repack moves delta copies with their base id, without
// decoding them).
func (w *Writer) putRaw(e indexEntry, body []byte) {
	start := len(w.bodies)
	w.bodies = append(w.bodies, body...)
	e.Offset = uint32(start)
	e.Length = uint32(len(body))
	w.entries = append(w.entries, e)
	w.pending[e.ID] = true
	w.stats.NewChunks++
	w.stats.NewRawBytes += int64(e.Raw)
}
