package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/internal/memlimit"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/klauspost/compress/zstd"
)

// Writer adds chunks to the store and commits the manifests that name
// them. It skips every chunk the store already holds, compresses the others
// into a pack, and on Flush hands the pack to the chunk layer, which stores
// it durably. Whether the store holds a chunk is answered by the lookup the
// caller gave it (Know); a chunk no lookup answered for is checked by the
// chunk layer when its pack is flushed, and dropped from the pack if the
// store has it, so no chunk is stored twice. A chunk is readable by others,
// and may be named by a manifest, only after the Flush that wrote it
// returned. A Writer is not safe for concurrent use; use one per goroutine.
type Writer struct {
	s       *Store
	enc     *zstd.Encoder
	denc    *zstd.Encoder // for deltas (PutDelta), made on first use
	bodies  []byte
	scratch []byte
	entries []chunk.Entry
	pending map[chunker.ID]bool
	stats   WriteStats
	started time.Time
	// stored reports chunks the caller knows the store keeps (see Assume).
	stored func(chunker.ID) bool
	// known is the caller's lookup of the chunks it is about to put (Know).
	known chunk.Lookup
	// unchecked are the chunks put that known did not answer for.
	unchecked []chunker.ID
	// fence is checked just before the manifest is written (Fence).
	fence func() error
	// release gives back the memory reserved for the pack buffer.
	release func()
}

// WriteStats counts what a writer stored.
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

// NewWriter starts a writer. From now on it relies on what the chunk layer
// knows of gc's condemned copies (see gc.go), for at most MaxWriterAge.
func (s *Store) NewWriter(ctx context.Context) (*Writer, error) {
	// The age limit counts from before the condemned record is read: the
	// writer relies on that record from then on.
	started := s.now()
	if err := s.chunks.BeginWrite(ctx); err != nil {
		return nil, err
	}
	enc, err := s.codec.Encoder()
	if err != nil {
		return nil, fmt.Errorf("start chunk writer: %w", err)
	}
	// The pack being filled is held until it is flushed: up to a pack
	// and the chunk that closed it. Without the reservation a compaction
	// of a large database, whose page tables are reserved, ran the
	// collector without pause once its pack buffer filled.
	release := memlimit.Reserve(int64(s.cfg.Params.PackSize) + writerSlack)
	return &Writer{s: s, enc: enc, pending: map[chunker.ID]bool{}, started: started, release: release}, nil
}

// writerSlack is what a writer holds beside its pack: the chunk that
// closes a pack (a change chunk is at most 256 KiB; a page 64 KiB),
// compression scratch and the pack's entries.
const writerSlack = 1 << 20

// ErrWriterTooOld is returned (wrapped) by Commit when the writer ran too
// long to rely on the chunks it found in the store.
var ErrWriterTooOld = errors.New("writer ran longer than the store allows")

// checkAge enforces gc's side of the bargain: gc keeps a condemned chunk
// for its grace period, which is longer than MaxWriterAge, so a writer
// younger than that can rely on every chunk it found in the store.
func (w *Writer) checkAge() error {
	if age := w.s.now().Sub(w.started); age > w.s.maxWriterAge {
		return fmt.Errorf("%w: %s since it looked up chunks (limit %s); retry the operation", ErrWriterTooOld, age.Round(time.Second), w.s.maxWriterAge)
	}
	return nil
}

// Commit makes a restore point: it flushes every chunk put, records the
// writer's statistics in m, checks that the writer may still rely on the
// chunks it reused (its age), and stores m under its node's sequence
// number. Everything m names must have been put through this writer or be
// known stored (Assume). It returns m's encoded size, and fails with
// ErrManifestExists if the number is taken.
func (w *Writer) Commit(ctx context.Context, m *manifest.Manifest) (int64, error) {
	if err := w.Flush(ctx); err != nil {
		return 0, err
	}
	ws := w.Stats()
	m.Stats = manifest.Stats{AddedBytes: ws.Added(), NewChunks: ws.NewChunks, ReusedChunks: ws.ReusedChunks}
	if err := w.checkAge(); err != nil {
		return 0, err
	}
	if w.fence != nil {
		if err := w.fence(); err != nil {
			return 0, err
		}
	}
	return putManifest(ctx, w.s, m)
}

// Fence makes Commit call check just before it writes the manifest, and
// commit nothing if check fails. history sets it to the node's lease check
// (LeaseHolder.Check): a writer whose lease expired may have been
// overtaken by gc --exclusive, which deletes every chunk no manifest names
// with no grace period, so the chunks this writer reused may be gone.
func (w *Writer) Fence(check func() error) { w.fence = check }

// Assume tells the writer that the store holds, and gc keeps, every chunk
// for which stored returns true: the chunks the node's newest manifest
// names (gc never collects those; forget never removes a node's newest
// manifest). Such chunks are neither looked up nor sent, which keeps a
// compaction through a store server from asking about every page.
func (w *Writer) Assume(stored func(chunker.ID) bool) { w.stored = stored }

// Know gives the writer a lookup of the chunks it is about to put (made
// after NewWriter): it answers whether the store has them, and records the
// chunks the writer stores. It replaces the lookup given before.
func (w *Writer) Know(l chunk.Lookup) { w.known = l }

// Reused counts a chunk the caller did not put because Has said the writer
// would skip it (for the statistics).
func (w *Writer) Reused() { w.stats.ReusedChunks++ }

// Put adds data as a chunk of the given kind and returns its ID; isNew says
// whether it was new to the store.
func (w *Writer) Put(ctx context.Context, kind chunk.Kind, data []byte) (id chunker.ID, isNew bool, err error) {
	id = w.s.codec.ID(data)
	isNew, err = w.PutID(ctx, kind, id, data)
	return id, isNew, err
}

// PutID is Put for a caller that already has the chunk's ID (the chunker
// computes it). id must be the store's id of data (Store.ChunkID).
func (w *Writer) PutID(ctx context.Context, kind chunk.Kind, id chunker.ID, data []byte) (isNew bool, err error) {
	if w.enc == nil {
		return false, errors.New("chunk writer is closed")
	}
	if len(data) > chunk.MaxSize {
		return false, fmt.Errorf("chunk %s of %d bytes exceeds the %d-byte limit", id.Short(), len(data), chunk.MaxSize)
	}
	if w.Has(id) {
		w.stats.ReusedChunks++
		return false, nil
	}
	start := len(w.bodies)
	if w.s.codec.Sealed() {
		w.scratch = w.enc.EncodeAll(data, w.scratch[:0])
		w.bodies = w.s.codec.SealBody(w.bodies, w.scratch, id)
	} else {
		w.bodies = w.enc.EncodeAll(data, w.bodies)
	}
	return true, w.added(ctx, chunk.Entry{ID: id, Kind: kind, Offset: uint32(start), Length: uint32(len(w.bodies) - start), Raw: uint32(len(data))})
}

// added records the entry of a body just appended to the pack, and closes
// the pack once it reached the store's pack size.
func (w *Writer) added(ctx context.Context, e chunk.Entry) error {
	w.entries = append(w.entries, e)
	w.pending[e.ID] = true
	if w.known == nil || !w.known.Known(e.ID) {
		w.unchecked = append(w.unchecked, e.ID)
	}
	if len(w.bodies) >= w.s.cfg.Params.PackSize {
		return w.Flush(ctx)
	}
	return nil
}

// Has reports whether the writer would skip the chunk: put already, known
// stored (Assume), or held by the store in a copy gc has not condemned, as
// the lookup given to Know says. A chunk that lookup did not cover is not
// known to be stored (Flush finds out).
func (w *Writer) Has(id chunker.ID) bool {
	return w.pending[id] || (w.stored != nil && w.stored(id)) || (w.known != nil && w.known.Has(id))
}

// Locate says where the store keeps a chunk, and whether the copy is one a
// writer may rely on (not condemned), as the lookup given to Know says.
func (w *Writer) Locate(id chunker.ID) (info chunk.Info, ok, usable bool) {
	if w.known == nil {
		return chunk.Info{}, false, false
	}
	info, ok = w.known.Locate(id)
	return info, ok, w.known.Has(id)
}

// DeltaBase is the chunk a new version of a page may be stored as a delta
// against, given the page's previous version prev: prev itself when it is
// stored full in a copy the writer may rely on; prev's own base when prev
// is a delta (a delta's base is always a full copy, so reading a delta
// never needs more than one more chunk). ok is false when the store takes
// no deltas or no such full copy is known (the lookup given to Know must
// cover prev, and prev's base when prev is a delta).
func (w *Writer) DeltaBase(prev chunker.ID) (base chunker.ID, ok bool) {
	if !w.s.DeltasAllowed() {
		return chunker.ID{}, false
	}
	info, _, usable := w.Locate(prev)
	if usable && info.Base != (chunker.ID{}) {
		prev = info.Base
		info, _, usable = w.Locate(prev)
	}
	return prev, usable && info.Base == (chunker.ID{})
}

// deltaMaxShare: PutDelta stores a delta only if it is smaller than this
// share of the page's plain body; otherwise the page is stored full (which
// also re-bases a page that drifted far from its base).
const deltaMaxShare = 0.7

// PutDelta is PutID for a page chunk whose delta base is base (from
// DeltaBase; baseData its full bytes): the page is stored as a zstd delta
// against base when that is clearly smaller than the page alone, and full
// otherwise, or when base is not what DeltaBase allows.
func (w *Writer) PutDelta(ctx context.Context, id chunker.ID, data []byte, base chunker.ID, baseData []byte) (isNew bool, err error) {
	if w.enc == nil {
		return false, errors.New("chunk writer is closed")
	}
	if w.Has(id) {
		w.stats.ReusedChunks++
		return false, nil
	}
	if b, ok := w.DeltaBase(base); !ok || b != base || base == id || len(data) > chunk.MaxSize || w.s.codec.ID(baseData) != base {
		return w.PutID(ctx, chunk.KindPage, id, data)
	}
	if w.denc == nil {
		// A page and its base fit a 128 KiB window (pages are at most 64
		// KiB); the default window would cost tens of MB of tables.
		// SpeedFastest: setting the base as dictionary is several times
		// cheaper than at SpeedDefault, for deltas as small (see
		// docs/benchmark.md, "Page deltas").
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
	full := len(w.scratch)
	w.scratch = w.denc.EncodeAll(data, w.scratch)
	body, e := w.scratch[full:], chunk.Entry{ID: id, Kind: chunk.KindPage, Raw: uint32(len(data)), Base: base}
	if float64(len(body)) >= deltaMaxShare*float64(full) {
		body, e.Base = w.scratch[:full], chunker.ID{}
	}
	start := len(w.bodies)
	w.bodies = w.s.codec.SealBody(w.bodies, body, id)
	e.Offset, e.Length = uint32(start), uint32(len(w.bodies)-start)
	return true, w.added(ctx, e)
}

// Flush makes every chunk put so far durable: the chunk layer stores the
// pack (and, for packs, then its index).
func (w *Writer) Flush(ctx context.Context) error {
	if len(w.entries) == 0 {
		return nil
	}
	res, err := w.s.chunks.WritePack(ctx, &chunk.Batch{Bodies: w.bodies, Entries: w.entries, Unchecked: w.unchecked})
	if err != nil {
		return err
	}
	for _, e := range res.Entries {
		w.stats.NewChunks++
		w.stats.NewRawBytes += int64(e.Raw)
		if e.Delta() {
			w.stats.DeltaChunks++
		}
	}
	w.stats.ReusedChunks += len(res.Dropped)
	w.stats.Packs += res.Packs
	w.stats.PackBytes += res.PackBytes
	w.stats.IndexBytes += res.IndexBytes
	if w.known != nil && len(res.Entries) > 0 {
		w.known.Stored(res.Pack, res.Entries)
	}
	w.bodies = w.bodies[:0]
	w.entries = nil
	w.unchecked = w.unchecked[:0]
	clear(w.pending)
	return nil
}

// Stats returns what the writer stored so far (chunks still pending count
// once they are flushed).
func (w *Writer) Stats() WriteStats { return w.stats }

// Close releases the writer. Chunks not flushed are dropped.
func (w *Writer) Close() {
	if w.release != nil {
		w.release()
		w.release = nil
	}
	if w.enc != nil {
		w.s.codec.PutEncoder(w.enc)
		w.enc = nil
	}
	if w.denc != nil {
		w.denc.Close()
		w.denc = nil
	}
}
