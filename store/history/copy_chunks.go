package history

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
)

// The two ways chunks move between stores (CopyResult.Mode).
const (
	// CopyAsStored: both stores name a chunk by the same id, so manifests
	// are copied as they are and chunk bodies as they are stored (a delta
	// copy as a delta where the destination takes deltas and holds its
	// base full, else decoded and stored full).
	CopyAsStored = "as-stored"
	// CopyReencode: ids or list chunks differ, so every chunk goes through
	// its plaintext (read and verified from the source, named with the
	// destination's id function, compressed again) and manifests are
	// rewritten with the destination's ids and list chunks.
	CopyReencode = "re-encode"
)

// copyMode is the one place that decides how chunks move from src to dst:
// as stored when a chunk has the same id in both and manifests can name the
// same list chunks, else re-encoded through plaintext. idOf is the
// destination's chunk id function for the re-encode path. Encrypted stores
// (format 3) name chunks with keyed ids: between an encrypted and a plain
// store, or two encrypted stores with different master keys, ids differ
// and every chunk is re-encoded (and sealed anew); two stores with the
// same master key share ids and sealed bodies, and copy as stored.
func copyMode(src, dst *store.Store) (reencode bool, reason string, idOf func([]byte) chunker.ID) {
	idOf = dst.ChunkID
	sc, dc := src.Config(), dst.Config()
	sp, dp := sc.Params, dc.Params
	var diffs []string
	if sp.Chunker != dp.Chunker || sp.Hash != dp.Hash || sp.Compression != dp.Compression {
		diffs = append(diffs, fmt.Sprintf("chunking %s/%s/%s vs %s/%s/%s", sp.Chunker, sp.Hash, sp.Compression, dp.Chunker, dp.Hash, dp.Compression))
	}
	if sp.ListEntries != dp.ListEntries {
		diffs = append(diffs, fmt.Sprintf("list_entries %d vs %d", sp.ListEntries, dp.ListEntries))
	}
	if k := keyOf(sc); k != keyOf(dc) {
		diffs = append(diffs, fmt.Sprintf("chunk ids %s vs %s", k, keyOf(dc)))
	}
	if len(diffs) > 0 {
		return true, fmt.Sprint("the stores' chunk ids or list chunks differ (", diffs, ")"), idOf
	}
	if sc.Version != dc.Version {
		return false, fmt.Sprintf("store format %d to %d: same chunk ids; delta copies are stored full where the destination takes no deltas", sc.Version, dc.Version), idOf
	}
	return false, "", idOf
}

// keyOf names how a store's chunk ids are made: plain BLAKE3, or keyed by
// the master key of the given fingerprint.
func keyOf(c store.Config) string {
	if c.Encryption == nil {
		return "plain"
	}
	return "keyed by master key " + c.Encryption.Master
}

// copier copies nodes from src to dst (Copy).
type copier struct {
	src, dst *store.Store
	mode     string
	reason   string
	reencode bool
	idOf     func([]byte) chunker.ID
	// lease is the destination node's lease while it is copied: the
	// fence of every manifest committed.
	lease    *keptLease
	done     int64
	progress func(done int64)
}

func newCopier(src, dst *store.Store) *copier {
	re, reason, idOf := copyMode(src, dst)
	c := &copier{src: src, dst: dst, mode: CopyAsStored, reason: reason, reencode: re, idOf: idOf, progress: func(int64) {}}
	if re {
		c.mode = CopyReencode
	}
	return c
}

// carried is what the previous manifest copied names, known to be in the
// destination: the next manifest looks up and copies only what it adds.
type carried struct {
	// ids maps every chunk the manifest names (source id) to its id in
	// the destination (the same id when copying as stored).
	ids map[chunker.ID]chunker.ID
	// src and dst are the snapshot in either store (re-encoding: a
	// manifest on the same snapshot reuses its rewritten page table).
	src, dst manifest.Snapshot
}

// wanted is a chunk a manifest names that the destination may lack.
type wanted struct {
	id   chunker.ID
	kind chunk.Kind
}

// copyWindow is how many chunks one lookup in the destination covers when
// copying as stored (bodies are not held: about 100 bytes a chunk), and
// reencodeWindow how many plaintext chunks are held at once to be named
// and looked up together (4 MiB of 4 KiB pages).
var copyWindow, reencodeWindow = 16384, 1024

// copyStep is called between the steps of a copy (windows of chunks, the
// read-back, manifests, journal records); tests stop a copy there.
var copyStep = func() {}

// copyManifest copies m's chunks that dst lacks and then stores m (as is,
// or rewritten with the destination's ids), with a writer of its own: each
// manifest commits within the writer age gc allows. prev is what the
// previous manifest copied names (nil: look everything up).
func (c *copier) copyManifest(ctx context.Context, m *manifest.Manifest, prev *carried, nc *NodeCopy) (*carried, error) {
	tab, err := loadPageTable(ctx, c.src, m.Snapshot)
	if err != nil {
		return nil, err
	}
	w, err := c.dst.NewWriter(ctx)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	w.Fence(c.lease.check)
	cur := &carried{ids: map[chunker.ID]chunker.ID{}, src: m.Snapshot}
	var need []wanted
	add := func(id chunker.ID, k chunk.Kind) {
		if _, ok := cur.ids[id]; ok {
			return
		}
		if prev != nil {
			if d, ok := prev.ids[id]; ok {
				cur.ids[id] = d
				return
			}
		}
		cur.ids[id] = chunker.ID{} // set once copied
		need = append(need, wanted{id, k})
	}
	for _, id := range tab {
		add(id, chunk.KindPage)
	}
	for _, ch := range m.Changes {
		add(ch.ID, chunk.KindChange)
	}
	if !c.reencode {
		for _, id := range m.Snapshot.Lists {
			add(id, chunk.KindList)
		}
		for _, id := range m.Snapshot.Patches {
			add(id, chunk.KindPatch)
		}
	}
	written := idSet{}
	if c.reencode {
		err = c.reencodeChunks(ctx, w, need, cur.ids, written, nc)
	} else {
		err = c.storedChunks(ctx, w, need, cur.ids, written, nc)
	}
	if err != nil {
		return nil, err
	}
	out, err := c.rewrite(ctx, w, m, tab, prev, cur)
	if err != nil {
		return nil, err
	}
	return cur, c.commit(ctx, w, out, written, nc)
}

// rewrite is the manifest to store in the destination: m itself when ids
// are the same, else m with the destination's ids and page table.
func (c *copier) rewrite(ctx context.Context, w *store.Writer, m *manifest.Manifest, tab manifest.PageTable, prev, cur *carried) (*manifest.Manifest, error) {
	out := *m
	out.Stats = manifest.Stats{}
	if !c.reencode {
		cur.dst = m.Snapshot
		return &out, nil
	}
	out.Changes = slices.Clone(m.Changes)
	for i := range out.Changes {
		out.Changes[i].ID = cur.ids[out.Changes[i].ID]
	}
	if prev != nil && sameSnapshot(prev.src, m.Snapshot) {
		out.Snapshot = prev.dst
	} else {
		snap := manifest.Snapshot{Version: m.Snapshot.Version, PageSize: m.Snapshot.PageSize, Pages: m.Snapshot.Pages}
		dtab := make(manifest.PageTable, len(tab))
		for i, id := range tab {
			dtab[i] = cur.ids[id]
		}
		// Full list chunks: a patch chain would need the destination's
		// previous page table and chain size, for a path that runs
		// once per store migration.
		if err := storePageTable(ctx, w, c.dst, &snap, dtab, nil, nil, 0); err != nil {
			return nil, err
		}
		out.Snapshot = snap
	}
	cur.dst = out.Snapshot
	return &out, nil
}

// commit makes the chunks of m durable, reads back and verifies those this
// manifest wrote (and, re-encoding, its list chunks), and stores m.
func (c *copier) commit(ctx context.Context, w *store.Writer, m *manifest.Manifest, written idSet, nc *NodeCopy) error {
	if err := w.Flush(ctx); err != nil {
		return err
	}
	copyStep()
	if c.reencode {
		for _, id := range append(slices.Clone(m.Snapshot.Lists), m.Snapshot.Patches...) {
			written[id] = true
		}
	}
	ids := make([]chunker.ID, 0, len(written))
	for id := range written {
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		// Nothing new: the manifest names chunks the destination held.
	} else if err := c.dst.ReadChunks(ctx, ids, func(chunker.ID, []byte) error { return nil }); err != nil {
		return fmt.Errorf("read back the chunks written to %s: %w (nothing names them yet: run the copy again)", c.dst.Location(), err)
	}
	copyStep()
	if _, err := w.Commit(ctx, m); err != nil {
		return err
	}
	ws := w.Stats()
	nc.Manifests++
	nc.Chunks += ws.NewChunks
	nc.ChunksSkipped += ws.ReusedChunks
	nc.Bytes += ws.Added()
	nc.ReadBack += len(ids)
	return nil
}

// storedChunks copies the chunks of need that dst lacks as they are stored
// in src, a window at a time: one lookup in dst, one read of the missing
// bodies from src. Delta copies keep their delta encoding when dst holds
// their base full (looked up after the window's full bodies are flushed),
// else they are decoded and stored full.
func (c *copier) storedChunks(ctx context.Context, w *store.Writer, need []wanted, ids map[chunker.ID]chunker.ID, written idSet, nc *NodeCopy) error {
	for start := 0; start < len(need); start += copyWindow {
		win := need[start:min(len(need), start+copyWindow)]
		kinds := make(map[chunker.ID]chunk.Kind, len(win))
		wids := make([]chunker.ID, len(win))
		for i, x := range win {
			wids[i], kinds[x.id], ids[x.id] = x.id, x.kind, x.id
		}
		l, err := c.dst.Lookup(ctx, wids)
		if err != nil {
			return err
		}
		w.Know(l)
		missing := slices.DeleteFunc(wids, func(id chunker.ID) bool { return l.Has(id) })
		nc.ChunksSkipped += len(win) - len(missing)
		var (
			mu     sync.Mutex
			deltas []chunk.Body
		)
		err = c.src.ReadStored(ctx, missing, func(b chunk.Body) error {
			mu.Lock()
			defer mu.Unlock()
			if b.Base != (chunker.ID{}) {
				b.Body = slices.Clone(b.Body) // valid during the call only
				deltas = append(deltas, b)
				return nil
			}
			return c.putStored(ctx, w, kinds[b.ID], b, written)
		})
		if err != nil {
			return fmt.Errorf("read chunks from %s: %w", c.src.Location(), err)
		}
		if err := c.storedDeltas(ctx, w, deltas, written); err != nil {
			return err
		}
		copyStep()
	}
	return nil
}

func (c *copier) putStored(ctx context.Context, w *store.Writer, kind chunk.Kind, b chunk.Body, written idSet) error {
	isNew, err := w.PutStored(ctx, kind, b)
	if isNew {
		written[b.ID] = true
	}
	return err
}

// storedDeltas stores delta copies read from src: as deltas when dst takes
// them and holds their base full in a copy a writer may rely on, else
// decoded (with their base, read from src) and stored full.
func (c *copier) storedDeltas(ctx context.Context, w *store.Writer, deltas []chunk.Body, written idSet) error {
	if len(deltas) == 0 {
		return nil
	}
	var full []chunker.ID
	if c.dst.DeltasAllowed() {
		if err := w.Flush(ctx); err != nil { // bases this window stored are looked up too
			return err
		}
		bases := make([]chunker.ID, len(deltas))
		for i, d := range deltas {
			bases[i] = d.Base
		}
		bl, err := c.dst.Lookup(ctx, bases)
		if err != nil {
			return err
		}
		for _, d := range deltas {
			if info, ok := bl.Locate(d.Base); ok && bl.Has(d.Base) && info.Base == (chunker.ID{}) {
				if err := c.putStored(ctx, w, chunk.KindPage, d, written); err != nil {
					return err
				}
				continue
			}
			full = append(full, d.ID)
		}
	} else {
		for _, d := range deltas {
			full = append(full, d.ID)
		}
	}
	if len(full) == 0 {
		return nil
	}
	var mu sync.Mutex
	err := c.src.ReadChunks(ctx, full, func(id chunker.ID, data []byte) error {
		mu.Lock()
		defer mu.Unlock()
		isNew, err := w.PutID(ctx, chunk.KindPage, id, data)
		if isNew {
			written[id] = true
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("read delta chunks from %s: %w", c.src.Location(), err)
	}
	return nil
}

// plain is a chunk read from the source, named in the destination.
type plain struct {
	src, dst chunker.ID
	kind     chunk.Kind
	data     []byte
}

// reencodeChunks copies the chunks of need through their plaintext, a
// window at a time: read (and verified) from src, named with dst's id
// function, looked up in dst together, and the missing ones stored. ids
// gets each chunk's destination id.
func (c *copier) reencodeChunks(ctx context.Context, w *store.Writer, need []wanted, ids map[chunker.ID]chunker.ID, written idSet, nc *NodeCopy) error {
	for start := 0; start < len(need); start += reencodeWindow {
		win := need[start:min(len(need), start+reencodeWindow)]
		kinds := make(map[chunker.ID]chunk.Kind, len(win))
		sids := make([]chunker.ID, len(win))
		for i, x := range win {
			sids[i], kinds[x.id] = x.id, x.kind
		}
		var (
			mu  sync.Mutex
			got []plain
		)
		err := c.src.ReadChunks(ctx, sids, func(id chunker.ID, data []byte) error {
			p := plain{src: id, dst: c.idOf(data), kind: kinds[id], data: slices.Clone(data)}
			mu.Lock()
			got = append(got, p)
			mu.Unlock()
			return nil
		})
		if err != nil {
			return fmt.Errorf("read chunks from %s: %w", c.src.Location(), err)
		}
		dids := make([]chunker.ID, len(got))
		for i, p := range got {
			dids[i] = p.dst
		}
		l, err := c.dst.Lookup(ctx, dids)
		if err != nil {
			return err
		}
		w.Know(l)
		for _, p := range got {
			ids[p.src] = p.dst
			if l.Has(p.dst) {
				nc.ChunksSkipped++
				continue
			}
			isNew, err := w.PutID(ctx, p.kind, p.dst, p.data)
			if err != nil {
				return err
			}
			if isNew {
				written[p.dst] = true
			}
		}
		copyStep()
	}
	return nil
}
