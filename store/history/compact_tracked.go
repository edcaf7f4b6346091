package history

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

// replayTracked applies m's sealed changes to the database at path (which
// holds m's snapshot) and returns the data_version reached and the 1-based
// numbers of every page the replay may have written (replay.OpenTracking).
func replayTracked(ctx context.Context, st *store.Store, m *manifest.Manifest, path string) (uint32, []uint32, error) {
	db, err := replay.OpenTracking(path)
	if err != nil {
		return 0, nil, err
	}
	version := m.Snapshot.Version
	err = forEachChange(ctx, st, m, false, func(r journal.Record) error {
		if err := db.ApplyTracked(ctx, r); err != nil {
			return err
		}
		version = r.Version
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, nil, err
	}
	changed, _ := db.ChangedPages()
	return version, changed, nil
}

// trackPages is false only in a test comparing with full rehashing.
var trackPages = true

// maxReadRun bounds one read of adjacent changed pages.
const maxReadRun = 1 << 20

// snapshotTracked is snapshotFile for a file that held exactly the previous
// snapshot (page table prevTab) before a replay that wrote only the pages
// in changed (1-based, sorted): only those and the pages past the previous
// end are read and hashed; every other page keeps its id from prevTab. It
// also returns the new page table (nil when it fell back to snapshotFile:
// no tracked pages, or a new page size).
func snapshotTracked(ctx context.Context, w *store.Writer, st *store.Store, path string, version uint32, prev *manifest.Snapshot, prevTab manifest.PageTable, prevChain int64, changed []uint32, progress Progress) (manifest.Snapshot, manifest.PageTable, error) {
	f, err := os.Open(path)
	if err != nil {
		return manifest.Snapshot{}, nil, fmt.Errorf("snapshot %s: %w", path, err)
	}
	defer f.Close()
	snap := manifest.Snapshot{Version: version}
	h, n, err := trackedHeader(f)
	if err != nil || (n == 0 && changed != nil) {
		return snap, manifest.PageTable{}, err
	}
	if !trackPages || changed == nil || (len(prevTab) > 0 && h.PageSize != prev.PageSize) {
		snap, err := snapshotFile(ctx, w, st, path, version, prev, prevTab, prevChain, progress)
		return snap, nil, err
	}
	ps := &pageStorer{w: w, st: st, f: f, pageSize: int64(h.PageSize), prevTab: prevTab}
	ps.tab = make(manifest.PageTable, n)
	copy(ps.tab, prevTab)
	read := pagesToRead(changed, len(prevTab), n)
	for range int(n) - len(read) {
		w.Reused() // unchanged: stored with the previous snapshot
	}
	if err := ps.hashPages(ctx, read, progress); err != nil {
		return manifest.Snapshot{}, nil, fmt.Errorf("snapshot %s: %w", path, err)
	}
	snap.PageSize, snap.Pages = h.PageSize, n
	if err := storePageTable(ctx, w, st, &snap, ps.tab, prev, prevTab, prevChain); err != nil {
		return manifest.Snapshot{}, nil, fmt.Errorf("snapshot %s: %w", path, err)
	}
	return snap, ps.tab, nil
}

// trackedHeader reads the file's header and page count, with the checks
// chunker.Split makes: whole pages, and the header's page count when it
// is valid.
func trackedHeader(f *os.File) (chunker.Header, uint32, error) {
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return chunker.Header{}, 0, err
	}
	var first [chunker.HeaderSize]byte
	if _, err := f.ReadAt(first[:], 0); err != nil {
		return chunker.Header{}, 0, fmt.Errorf("read database header: %w", err)
	}
	h, err := chunker.ParseHeader(first[:])
	if err != nil {
		return h, 0, err
	}
	size := fi.Size()
	if size%int64(h.PageSize) != 0 || size/int64(h.PageSize) > math.MaxUint32 {
		return h, 0, fmt.Errorf("database is truncated or too large: %d bytes is not a whole number of %d-byte pages", size, h.PageSize)
	}
	n := uint32(size / int64(h.PageSize))
	if binary.BigEndian.Uint32(first[92:96]) == binary.BigEndian.Uint32(first[24:28]) && h.Pages != 0 && h.Pages != n {
		return h, 0, fmt.Errorf("database is truncated or damaged: its header says %d pages, the file has %d", h.Pages, n)
	}
	return h, n, nil
}

// pagesToRead merges the changed pages (1-based, sorted) within the new
// size n and the pages from the previous end on into sorted 0-based
// indexes.
func pagesToRead(changed []uint32, prevPages int, n uint32) []uint32 {
	var out []uint32
	for _, p := range changed {
		if p >= 1 && p <= n && int64(p-1) < int64(prevPages) && (len(out) == 0 || out[len(out)-1] != p-1) {
			out = append(out, p-1)
		}
	}
	for i := uint32(min(int64(prevPages), int64(n))); i < n; i++ {
		out = append(out, i)
	}
	return out
}

// hashPages reads and hashes the pages at the sorted indexes, a run of
// adjacent ones at a time, setting their ids in the page table and storing,
// a window at a time, those the store lacks.
func (ps *pageStorer) hashPages(ctx context.Context, read []uint32, progress Progress) error {
	size := int64(len(read)) * ps.pageSize
	buf := make([]byte, max(ps.pageSize, maxReadRun/ps.pageSize*ps.pageSize))
	maxRun := len(buf) / int(ps.pageSize)
	for start := 0; start < len(read); {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := start + 1
		for end < len(read) && end-start < maxRun && read[end] == read[end-1]+1 {
			end++
		}
		data := buf[:int64(end-start)*ps.pageSize]
		if _, err := ps.f.ReadAt(data, int64(read[start])*ps.pageSize); err != nil {
			return fmt.Errorf("read pages %d to %d: %w", read[start]+1, read[end-1]+1, err)
		}
		for k, i := range read[start:end] {
			id := ps.st.ChunkID(data[int64(k)*ps.pageSize : int64(k+1)*ps.pageSize])
			ps.tab[i] = id
			if ps.w.Has(id) {
				ps.w.Reused()
				continue
			}
			ps.window = append(ps.window, i)
			if len(ps.window) == snapshotWindow {
				if err := ps.storeWindow(ctx); err != nil {
					return err
				}
			}
		}
		start = end
		progress.report(int64(start)*ps.pageSize, size)
	}
	if err := ps.storeWindow(ctx); err != nil {
		return err
	}
	progress.report(size, size)
	return nil
}
