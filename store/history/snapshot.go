// Package history keeps each node's restore points in the store: it takes
// snapshots of a database as page chunks, seals journal records into change
// chunks, writes manifests (the commit points), compacts, and restores any
// restore point or data_version to a checked SQLite file. The plugin and
// backup-cli both work through it; it is the only package that combines the
// store, the manifest format, the journal and SQLite replay.
package history

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
)

// Progress receives how far a long operation is: done of total bytes.
// It may be nil.
type Progress func(done, total int64)

func (p Progress) report(done, total int64) {
	if p != nil {
		p(done, total)
	}
}

// maxPatches bounds a snapshot's patch chain, and so the chunks a restore
// must read before it knows the page table.
const maxPatches = 64

// loadPageTable reads a snapshot's list and patch chunks into its page table.
func loadPageTable(ctx context.Context, st *store.Store, s manifest.Snapshot) (manifest.PageTable, error) {
	tab, _, err := loadPageTableChain(ctx, st, s)
	return tab, err
}

// loadPageTableChain is loadPageTable that also returns the bytes of the
// snapshot's patch chain (what deciding to patch once more weighs).
func loadPageTableChain(ctx context.Context, st *store.Store, s manifest.Snapshot) (tab manifest.PageTable, chain int64, err error) {
	for i, id := range s.Lists {
		data, err := st.Get(ctx, id)
		if err != nil {
			return nil, 0, fmt.Errorf("list chunk %d of %d: %w", i+1, len(s.Lists), err)
		}
		ids, err := manifest.DecodeList(data)
		if err != nil {
			return nil, 0, fmt.Errorf("list chunk %s: %w", id, err)
		}
		tab = append(tab, ids...)
	}
	for i, id := range s.Patches {
		data, err := st.Get(ctx, id)
		if err != nil {
			return nil, 0, fmt.Errorf("patch chunk %d of %d: %w", i+1, len(s.Patches), err)
		}
		chain += int64(len(data))
		p, err := manifest.DecodePatch(data)
		if err != nil {
			return nil, 0, fmt.Errorf("patch chunk %s: %w", id, err)
		}
		tab.Apply(p)
	}
	if err := tab.Check(s.Pages); err != nil {
		return nil, 0, fmt.Errorf("snapshot at data_version %d: %w", s.Version, err)
	}
	return tab, chain, nil
}

// snapshotFile stores the database file at path as a snapshot at the given
// data_version. Pages already in the store are not written again. When prev
// (the node's previous snapshot and its page table) is given, the page IDs
// are stored as a patch on top of it if that is cheaper than new list chunks.
// The caller flushes w before naming the snapshot in a manifest.
func snapshotFile(ctx context.Context, w *store.Writer, st *store.Store, path string, version uint32, prev *manifest.Snapshot, prevTab manifest.PageTable, prevChain int64, progress Progress) (manifest.Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return manifest.Snapshot{}, fmt.Errorf("snapshot %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return manifest.Snapshot{}, fmt.Errorf("snapshot %s: %w", path, err)
	}
	snap := manifest.Snapshot{Version: version}
	if fi.Size() == 0 {
		return snap, nil
	}
	tab := make(manifest.PageTable, 0, fi.Size()/4096)
	var done int64
	h, err := chunker.Split(f, func(p chunker.Page) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := putPage(ctx, w, st, p, prevTab); err != nil {
			return fmt.Errorf("store page %d: %w", p.Index+1, err)
		}
		tab = append(tab, p.ID)
		done += int64(len(p.Data))
		if p.Index%256 == 0 {
			progress.report(done, fi.Size())
		}
		return nil
	})
	if err != nil {
		return manifest.Snapshot{}, fmt.Errorf("snapshot %s: %w", path, err)
	}
	progress.report(fi.Size(), fi.Size())
	snap.PageSize, snap.Pages = h.PageSize, h.Pages

	if prev != nil && prev.PageSize == snap.PageSize && prev.Pages > 0 && len(prev.Patches) < maxPatches {
		patch := prevTab.Diff(tab)
		patchBytes := manifest.EncodePatch(patch)
		// Patch while the chain stays cheaper than rewriting the lists it
		// stands for; then rebase onto fresh list chunks.
		chain := int64(len(patchBytes)) + prevChain
		if chain <= newListBytes(st, tab, st.Config().Params.ListEntries) {
			id, _, err := w.Put(ctx, store.KindPatch, patchBytes)
			if err != nil {
				return manifest.Snapshot{}, fmt.Errorf("store patch chunk: %w", err)
			}
			snap.Lists = prev.Lists
			snap.Patches = append(append([]chunker.ID(nil), prev.Patches...), id)
			return snap, nil
		}
	}
	n := st.Config().Params.ListEntries
	for start := 0; start < len(tab); start += n {
		end := min(start+n, len(tab))
		id, _, err := w.Put(ctx, store.KindList, manifest.EncodeList(tab[start:end]))
		if err != nil {
			return manifest.Snapshot{}, fmt.Errorf("store list chunk: %w", err)
		}
		snap.Lists = append(snap.Lists, id)
	}
	return snap, nil
}

// putPage stores one page. A new page whose previous version (prevTab) is
// in the store goes in as a delta against that version, or against its
// base if it is a delta itself (PutDelta decides whether the delta is worth
// it, and stores the page full where deltas are not allowed).
func putPage(ctx context.Context, w *store.Writer, st *store.Store, p chunker.Page, prevTab manifest.PageTable) error {
	if !st.DeltasAllowed() || int(p.Index) >= len(prevTab) || prevTab[p.Index] == p.ID || w.Has(p.ID) {
		_, err := w.PutID(ctx, store.KindPage, p.ID, p.Data)
		return err
	}
	base := prevTab[p.Index]
	if info, ok := st.Locate(base); ok && info.Base != (chunker.ID{}) {
		base = info.Base
	}
	baseData, err := st.Get(ctx, base)
	if err != nil || len(baseData) != len(p.Data) {
		// No usable base: the page goes in full.
		_, err := w.PutID(ctx, store.KindPage, p.ID, p.Data)
		return err
	}
	_, err = w.PutDelta(ctx, p.ID, p.Data, base, baseData)
	return err
}

// newListBytes is what writing tab as full list chunks would add to the
// store (through a store server, where Has is unknown, all of them).
func newListBytes(st *store.Store, tab manifest.PageTable, n int) int64 {
	var total int64
	for start := 0; start < len(tab); start += n {
		end := min(start+n, len(tab))
		b := manifest.EncodeList(tab[start:end])
		if !st.Has(chunker.Sum(b)) {
			total += int64(len(b))
		}
	}
	return total
}

// writePages writes a snapshot's pages into f, fetching each distinct chunk
// it needs once. With reuse, f already holds a candidate copy of the
// snapshot (a compaction's cached previous snapshot): every page of it whose
// hash is the page table's id for that page is kept, and only the pages that
// differ or lie beyond its end are fetched. Either way f ends up sized to the
// snapshot and holding exactly the pages the store holds. It returns the
// page bytes fetched from the store and those kept from f.
func writePages(ctx context.Context, st *store.Store, f *os.File, s manifest.Snapshot, tab manifest.PageTable, reuse bool, progress Progress) (fetched, kept int64, err error) {
	total := s.Size()
	var need []uint32 // pages to fetch, by index
	if reuse {
		if need, kept, err = checkPages(ctx, f, s, tab, progress); err != nil {
			return 0, 0, err
		}
	} else {
		need = make([]uint32, len(tab))
		for i := range need {
			need[i] = uint32(i)
		}
	}
	if err := f.Truncate(total); err != nil {
		return 0, 0, fmt.Errorf("size %s: %w", f.Name(), err)
	}
	if len(need) == 0 {
		progress.report(total, total)
		return 0, kept, nil
	}
	// Pages in order of their chunk id, so that each fetched chunk finds
	// its pages by binary search (no per-page map).
	order := need
	sort.Slice(order, func(a, b int) bool { return bytes.Compare(tab[order[a]][:], tab[order[b]][:]) < 0 })
	ids := make([]chunker.ID, 0, len(order))
	for i, p := range order {
		if i == 0 || tab[p] != tab[order[i-1]] {
			ids = append(ids, tab[p])
		}
	}
	done := kept
	var mu sync.Mutex
	err = st.ReadChunks(ctx, ids, func(id chunker.ID, data []byte) error {
		if uint32(len(data)) != s.PageSize {
			return fmt.Errorf("chunk %s is %d bytes, not a %d-byte page", id, len(data), s.PageSize)
		}
		first := sort.Search(len(order), func(i int) bool { return bytes.Compare(tab[order[i]][:], id[:]) >= 0 })
		n := int64(0)
		for i := first; i < len(order) && tab[order[i]] == id; i++ {
			if _, err := f.WriteAt(data, int64(order[i])*int64(s.PageSize)); err != nil {
				return fmt.Errorf("write page %d to %s: %w", order[i]+1, f.Name(), err)
			}
			n++
		}
		mu.Lock()
		fetched += int64(len(data))
		done += n * int64(s.PageSize)
		progress.report(done, total)
		mu.Unlock()
		return nil
	})
	return fetched, kept, err
}

// checkPages reads the pages f holds within the snapshot's size and returns
// the indexes of the snapshot's pages that f lacks or holds with another
// hash, and the bytes of the pages that match.
func checkPages(ctx context.Context, f *os.File, s manifest.Snapshot, tab manifest.PageTable, progress Progress) (need []uint32, kept int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	ps := int64(s.PageSize)
	have := min(fi.Size(), s.Size()) / ps // whole pages f holds
	buf := make([]byte, max(ps, (1<<20)/ps*ps))
	for start := int64(0); start < have; {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		n := min(int64(len(buf))/ps, have-start)
		if _, err := f.ReadAt(buf[:n*ps], start*ps); err != nil {
			return nil, 0, fmt.Errorf("read %s: %w", f.Name(), err)
		}
		for i := range n {
			if chunker.Sum(buf[i*ps:(i+1)*ps]) == tab[start+i] {
				kept += ps
			} else {
				need = append(need, uint32(start+i))
			}
		}
		start += n
		progress.report(kept, s.Size())
	}
	for i := have; i < int64(len(tab)); i++ {
		need = append(need, uint32(i))
	}
	return need, kept, nil
}
