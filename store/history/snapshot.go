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
	"slices"
	"sort"
	"sync"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/internal/priority"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/writeback"
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
// snapshot's patch chain (what deciding to patch once more weighs). The
// list and patch chunks are read together (one lookup).
func loadPageTableChain(ctx context.Context, st *store.Store, s manifest.Snapshot) (tab manifest.PageTable, chain int64, err error) {
	var (
		mu      sync.Mutex
		lists   = map[chunker.ID][]chunker.ID{}
		patches = map[chunker.ID][]byte{}
	)
	isPatch := map[chunker.ID]bool{}
	for _, id := range s.Patches {
		isPatch[id] = true
	}
	ids := append(slices.Clone(s.Lists), s.Patches...)
	err = st.ReadChunks(ctx, ids, func(id chunker.ID, data []byte) error {
		if isPatch[id] {
			mu.Lock()
			patches[id] = bytes.Clone(data)
			mu.Unlock()
			return nil
		}
		l, err := manifest.DecodeList(data)
		if err != nil {
			return fmt.Errorf("list chunk %s: %w", id, err)
		}
		mu.Lock()
		lists[id] = l
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("page table of the snapshot at data_version %d (%d list and %d patch chunks): %w", s.Version, len(s.Lists), len(s.Patches), err)
	}
	n := 0
	for _, id := range s.Lists {
		n += len(lists[id])
	}
	// Sized from the lists read (not the manifest's page count, which
	// comes from the store): no regrowth of a 32-byte-a-page table.
	tab = make(manifest.PageTable, 0, n)
	for _, id := range s.Lists {
		tab = append(tab, lists[id]...)
	}
	for _, id := range s.Patches {
		data := patches[id]
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

// snapshotWindow is how many new pages a snapshot looks up at once: the
// lookup costs about 130 bytes a page (the page and its previous version),
// and each window one pass over the store's index objects.
var snapshotWindow = 8192

// deltaBatch is how many new pages have their delta bases read together
// (4 KiB each, held until the batch is stored).
var deltaBatch = 256

// snapshotFile stores the database file at path as a snapshot at the given
// data_version. Pages already in the store are not written again. When prev
// (the node's previous snapshot and its page table) is given, the page IDs
// are stored as a patch on top of it if that is cheaper than new list chunks.
// The caller flushes w before naming the snapshot in a manifest.
//
// The file is read twice: once to hash every page, then, window by window
// of pages the writer does not already know to be stored, to look those up
// together and store the ones the store lacks (each hashed again as it is
// stored, so a page that changed in between is an error, not a wrong name).
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
	ps := &pageStorer{w: w, st: st, f: f, prevTab: prevTab}
	ps.tab = make(manifest.PageTable, 0, fi.Size()/4096)
	h, err := ps.storePages(ctx, fi.Size(), progress)
	if err != nil {
		return manifest.Snapshot{}, fmt.Errorf("snapshot %s: %w", path, err)
	}
	snap.PageSize, snap.Pages = h.PageSize, h.Pages
	if err := storePageTable(ctx, w, st, &snap, ps.tab, prev, prevTab, prevChain); err != nil {
		return manifest.Snapshot{}, fmt.Errorf("snapshot %s: %w", path, err)
	}
	return snap, nil
}

// storePages hashes every page of the file (size bytes) and stores, a
// window at a time, the pages the store lacks.
func (ps *pageStorer) storePages(ctx context.Context, size int64, progress Progress) (chunker.Header, error) {
	var done int64
	h, err := chunker.SplitIDs(ps.f, ps.st.ChunkID, func(p chunker.Page) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		ps.pageSize = int64(len(p.Data))
		ps.tab = append(ps.tab, p.ID)
		if ps.w.Has(p.ID) {
			ps.w.Reused()
		} else {
			ps.window = append(ps.window, p.Index)
			if len(ps.window) == snapshotWindow {
				if err := ps.storeWindow(ctx); err != nil {
					return err
				}
			}
		}
		done += int64(len(p.Data))
		if p.Index%256 == 0 {
			progress.report(done, size)
		}
		return nil
	})
	if err == nil {
		err = ps.storeWindow(ctx)
	}
	if err == nil {
		progress.report(size, size)
	}
	return h, err
}

// storePageTable stores the snapshot's page ids as list chunks, or as a
// patch on the previous snapshot (prev, whose page table is prevTab and
// whose chain of patches weighs prevChain bytes) while the chain stays
// cheaper than the lists it stands for; both are looked up at once, to
// weigh what each would add. Each list is encoded once to name it and again
// to store it, so that the lists (32 bytes a page: 32 MiB at 4 GiB) are
// never held together beside the two page tables.
func storePageTable(ctx context.Context, w *store.Writer, st *store.Store, snap *manifest.Snapshot, tab manifest.PageTable, prev *manifest.Snapshot, prevTab manifest.PageTable, prevChain int64) error {
	n := st.Config().Params.ListEntries
	list := func(i int) []byte { return manifest.EncodeList(tab[i*n : min((i+1)*n, len(tab))]) }
	lists := (len(tab) + n - 1) / n
	ask := make([]chunker.ID, 0, lists+1)
	sizes := make([]int, 0, lists)
	for i := range lists {
		b := list(i)
		ask = append(ask, st.ChunkID(b))
		sizes = append(sizes, len(b))
	}
	var patchBytes []byte
	canPatch := prev != nil && prev.PageSize == snap.PageSize && prev.Pages > 0 && len(prev.Patches) < maxPatches
	if canPatch {
		patchBytes = manifest.EncodePatch(prevTab.Diff(tab))
		ask = append(ask, st.ChunkID(patchBytes))
	}
	l, err := st.Lookup(ctx, ask)
	if err != nil {
		return err
	}
	w.Know(l)
	if canPatch && int64(len(patchBytes))+prevChain <= newListBytes(w, ask[:lists], sizes) {
		id, _, err := w.Put(ctx, chunk.KindPatch, patchBytes)
		if err != nil {
			return fmt.Errorf("store patch chunk: %w", err)
		}
		snap.Lists = prev.Lists
		snap.Patches = append(append([]chunker.ID(nil), prev.Patches...), id)
		return nil
	}
	for i, id := range ask[:lists] {
		if _, err := w.PutID(ctx, chunk.KindList, id, list(i)); err != nil {
			return fmt.Errorf("store list chunk: %w", err)
		}
		snap.Lists = append(snap.Lists, id)
	}
	return nil
}

// pageStorer stores a snapshot's new pages, a window at a time.
type pageStorer struct {
	w        *store.Writer
	st       *store.Store
	f        *os.File
	pageSize int64
	tab      manifest.PageTable // the page ids hashed so far
	prevTab  manifest.PageTable
	window   []uint32 // pages (indexes) to look up and store
	buf      []byte
}

// base is the previous version of page i, if it may be a delta's base.
func (ps *pageStorer) base(i uint32) (chunker.ID, bool) {
	if !ps.st.DeltasAllowed() || int(i) >= len(ps.prevTab) || ps.prevTab[i] == ps.tab[i] {
		return chunker.ID{}, false
	}
	return ps.prevTab[i], true
}

// storeWindow looks up the window's pages, and their previous versions
// (delta bases), and stores the pages the store lacks.
func (ps *pageStorer) storeWindow(ctx context.Context) error {
	if len(ps.window) == 0 {
		return nil
	}
	defer func() { ps.window = ps.window[:0] }()
	ask := make([]chunker.ID, 0, 2*len(ps.window))
	for _, i := range ps.window {
		ask = append(ask, ps.tab[i])
		if b, ok := ps.base(i); ok {
			ask = append(ask, b)
		}
	}
	l, err := ps.st.Lookup(ctx, ask)
	if err != nil {
		return err
	}
	// A previous version stored as a delta stands for its own base (a
	// delta's base is always a full copy): look those up too.
	n := len(ask)
	for _, i := range ps.window {
		if b, ok := ps.base(i); ok {
			if info, found := l.Locate(b); found && info.Base != (chunker.ID{}) {
				ask = append(ask, info.Base)
			}
		}
	}
	if len(ask) > n {
		if l, err = ps.st.Lookup(ctx, ask); err != nil {
			return err
		}
	}
	ps.w.Know(l)
	for start := 0; start < len(ps.window); start += deltaBatch {
		if err := ps.storeBatch(ctx, l, ps.window[start:min(start+deltaBatch, len(ps.window))]); err != nil {
			return err
		}
	}
	return nil
}

// storeBatch stores the pages of batch the store lacks, each as a delta of
// its previous version where that is stored full and the delta pays.
func (ps *pageStorer) storeBatch(ctx context.Context, l chunk.Lookup, batch []uint32) error {
	bases := map[chunker.ID]chunker.ID{} // page -> usable base
	var want []chunker.ID
	for _, i := range batch {
		id := ps.tab[i]
		prev, ok := ps.base(i)
		if !ok || ps.w.Has(id) {
			continue
		}
		if b, ok := ps.w.DeltaBase(prev); ok {
			bases[id] = b
			want = append(want, b)
		}
	}
	var mu sync.Mutex
	baseData := map[chunker.ID][]byte{}
	if len(want) > 0 {
		err := ps.st.ReadLocated(ctx, l, want, func(id chunker.ID, data []byte) error {
			mu.Lock()
			baseData[id] = bytes.Clone(data)
			mu.Unlock()
			return nil
		})
		if err != nil && ctx.Err() != nil {
			return err
		}
		// Otherwise a base that cannot be read only means the pages go
		// in full.
	}
	for _, i := range batch {
		id := ps.tab[i]
		if ps.w.Has(id) {
			ps.w.Reused() // stored already, or earlier in the window
			continue
		}
		if cap(ps.buf) < int(ps.pageSize) {
			ps.buf = make([]byte, ps.pageSize)
		}
		data := ps.buf[:ps.pageSize]
		if _, err := ps.f.ReadAt(data, int64(i)*ps.pageSize); err != nil {
			return fmt.Errorf("read page %d: %w", i+1, err)
		}
		if ps.st.ChunkID(data) != id {
			return fmt.Errorf("page %d of %s changed while it was being stored", i+1, ps.f.Name())
		}
		var err error
		if b, ok := bases[id]; ok && len(baseData[b]) == len(data) {
			_, err = ps.w.PutDelta(ctx, id, data, b, baseData[b])
		} else {
			_, err = ps.w.PutID(ctx, chunk.KindPage, id, data)
		}
		if err != nil {
			return fmt.Errorf("store page %d: %w", i+1, err)
		}
	}
	return nil
}

// newListBytes is what writing the lists (their ids and encoded sizes) as
// list chunks would add to the store: the lists the writer's lookup did
// not find.
func newListBytes(w *store.Writer, ids []chunker.ID, sizes []int) int64 {
	var total int64
	for i, id := range ids {
		if !w.Has(id) {
			total += int64(sizes[i])
		}
	}
	return total
}

// restoreWindow is how many pages a restore fetches with one lookup: 256
// MiB of 4 KiB pages, for about 100 bytes of memory a page (each window
// costs one pass over the store's index objects, for its pages and the
// delta bases of the window before). Larger windows made a 4 GB restore
// slower, the passes saved notwithstanding (docs/benchmark.md).
var restoreWindow = 65536

// windowBytesPerPage is about what a window holds per page: its lookup
// (id, key, location, state) and its ordered page and id lists.
const windowBytesPerPage = 100

// writePages writes a snapshot's pages into f, fetching each distinct chunk
// it needs once. With reuse, f already holds a candidate copy of the
// snapshot (a compaction's cached previous snapshot): every page of it whose
// hash is the page table's id for that page is kept, and only the pages that
// differ or lie beyond its end are fetched. Either way f ends up sized to the
// snapshot and holding exactly the pages the store holds. It returns the
// page bytes fetched from the store and those kept from f.
func writePages(ctx context.Context, st *store.Store, f *os.File, s manifest.Snapshot, tab manifest.PageTable, reuse bool, progress Progress) (fetched, kept int64, err error) {
	return writePagesBehind(ctx, st, f, nil, s, tab, reuse, progress)
}

// writePagesBehind is writePages that tells sb (nil: none) of every write,
// for a restore that syncs the file behind its writes.
func writePagesBehind(ctx context.Context, st *store.Store, f *os.File, sb *syncBehind, s manifest.Snapshot, tab manifest.PageTable, reuse bool, progress Progress) (fetched, kept int64, err error) {
	total := s.Size()
	var need []uint32 // pages to fetch, by index
	if reuse {
		if need, kept, err = checkPages(ctx, f, s, tab, st.ChunkID, progress); err != nil {
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
	// A window of pages at a time (bounding the lookup), in order of their
	// chunk id, so that each fetched chunk finds its pages by binary
	// search (no per-page map). Windows are planned ahead by one goroutine,
	// one pass over the store's index objects each: the pass that looks up
	// a window's chunks also looks up the delta bases of the window before
	// (store.PlanNextRead). So while window N is read, the pass for window
	// N+2 runs, completing window N+1's plan.
	type window struct {
		order []uint32
		plan  *store.ReadPlan
		err   error
	}
	windowIDs := func(start int) ([]uint32, []chunker.ID) {
		order := need[start:min(start+restoreWindow, len(need))]
		sort.Slice(order, func(a, b int) bool { return bytes.Compare(tab[order[a]][:], tab[order[b]][:]) < 0 })
		ids := make([]chunker.ID, 0, len(order))
		for i, p := range order {
			if i == 0 || tab[p] != tab[order[i-1]] {
				ids = append(ids, tab[p])
			}
		}
		return order, ids
	}
	// The planner ends before this returns (the store may close then).
	pctx, cancel := context.WithCancel(ctx)
	var planner sync.WaitGroup
	defer planner.Wait()
	defer cancel()
	next := make(chan window)
	planner.Go(func() {
		priority.Join(pctx) // a compaction's rebuild plans at its priority
		send := func(w window) bool {
			select {
			case next <- w:
				return true
			case <-pctx.Done():
				return false
			}
		}
		var pending *window // planned, its bases not looked up yet
		for start := 0; ; start += restoreWindow {
			var w *window
			var ids []chunker.ID
			if start < len(need) {
				w = &window{}
				w.order, ids = windowIDs(start)
			}
			var prev *store.ReadPlan
			if pending != nil {
				prev = pending.plan
			}
			plan, err := st.PlanNextRead(pctx, prev, ids)
			if err != nil {
				send(window{err: err})
				return
			}
			if pending != nil && !send(*pending) {
				return
			}
			if w == nil {
				return
			}
			w.plan, pending = plan, w
		}
	})
	done := kept
	var mu sync.Mutex
	for start := 0; start < len(need) && err == nil; start += restoreWindow {
		win := <-next
		if win.err != nil {
			return fetched, kept, win.err
		}
		order := win.order
		err = st.ReadPlanned(ctx, win.plan, func() (func(chunker.ID, []byte) error, func() error) {
			// Each reading goroutine writes runs of adjacent pages with
			// one call (chunks come in pack order, which is mostly page
			// order).
			w := pageRun{f: f, pageSize: int64(s.PageSize), sb: sb}
			put := func(id chunker.ID, data []byte) error {
				if uint32(len(data)) != s.PageSize {
					return fmt.Errorf("chunk %s is %d bytes, not a %d-byte page", id, len(data), s.PageSize)
				}
				first := sort.Search(len(order), func(i int) bool { return bytes.Compare(tab[order[i]][:], id[:]) >= 0 })
				n := int64(0)
				for i := first; i < len(order) && tab[order[i]] == id; i++ {
					if err := w.add(int64(order[i]), data); err != nil {
						return err
					}
					n++
				}
				mu.Lock()
				fetched += int64(len(data))
				done += n * int64(s.PageSize)
				progress.report(done, total)
				mu.Unlock()
				return nil
			}
			return put, w.flush
		})
	}
	return fetched, kept, err
}

// pageRun gathers adjacent pages to write them to f with one call.
type pageRun struct {
	f        *os.File
	sb       *syncBehind // told of every write (nil: none, and the writes are paced: a compaction beside db_writes)
	pageSize int64
	first    int64 // page index of buf's first page
	buf      []byte
}

// maxPageRun bounds one write (and the buffer of each reading goroutine).
const maxPageRun = 256 << 10

// add writes page i (data), now or with the run it extends.
func (r *pageRun) add(i int64, data []byte) error {
	if len(r.buf) > 0 && (i != r.first+int64(len(r.buf))/r.pageSize || len(r.buf)+len(data) > maxPageRun) {
		if err := r.flush(); err != nil {
			return err
		}
	}
	if len(r.buf) == 0 {
		r.first = i
	}
	r.buf = append(r.buf, data...)
	return nil
}

// flush writes the pages gathered.
func (r *pageRun) flush() error {
	if len(r.buf) == 0 {
		return nil
	}
	n := int64(len(r.buf)) / r.pageSize
	write := func() error { _, err := r.f.WriteAt(r.buf, r.first*r.pageSize); return err }
	if r.sb == nil {
		// A compaction's rebuild, beside a node's db_writes: paced.
		write = func() error { return writeback.Write(r.f, r.buf, r.first*r.pageSize) }
	}
	if err := write(); err != nil {
		return fmt.Errorf("write pages %d to %d to %s: %w", r.first+1, r.first+n, r.f.Name(), err)
	}
	if err := r.sb.wrote(int64(len(r.buf))); err != nil {
		return fmt.Errorf("write pages to %s: %w", r.f.Name(), err)
	}
	r.buf = r.buf[:0]
	return nil
}

// checkPages reads the pages f holds within the snapshot's size and returns
// the indexes of the snapshot's pages that f lacks or holds with another
// hash, and the bytes of the pages that match.
func checkPages(ctx context.Context, f *os.File, s manifest.Snapshot, tab manifest.PageTable, idOf func([]byte) chunker.ID, progress Progress) (need []uint32, kept int64, err error) {
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
			if idOf(buf[i*ps:(i+1)*ps]) == tab[start+i] {
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
