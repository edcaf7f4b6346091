package packs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/clnbackup/backup/store/chunk"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
)

// chunkFinder reads the list and patch chunks mark needs. It knows where
// they are from the indexes gc scanned, and on a miss reads the indexes
// written since (a manifest committed during the run); only the chunks of
// those kinds are kept, a few per thousand pages.
type chunkFinder struct {
	p       *Packs
	at      map[chunker.ID]chunk.Info
	scanned map[string]bool
	// deltas are the delta copies in indexes written since the scan.
	deltas []chunk.DeltaRef
}

func newChunkFinder(p *Packs) *chunkFinder {
	return &chunkFinder{p: p, at: map[chunker.ID]chunk.Info{}, scanned: map[string]bool{}}
}

// add notes where entry e of pack is, if it is a list or patch chunk.
func (f *chunkFinder) add(pack chunker.ID, e *chunk.Entry) {
	if e.Kind == chunk.KindList || e.Kind == chunk.KindPatch {
		f.at[e.ID] = chunk.Info{Pack: pack, Kind: e.Kind, Offset: e.Offset, Length: e.Length, Raw: e.Raw}
	}
}

// get reads a chunk mark asks for, verified against its id.
func (f *chunkFinder) get(ctx context.Context, id chunker.ID) ([]byte, error) {
	info, ok := f.at[id]
	if !ok {
		if err := f.scanNew(ctx); err != nil {
			return nil, err
		}
		if info, ok = f.at[id]; !ok {
			// Not stored as a list or patch chunk: look it up the
			// ordinary way.
			return f.p.Get(ctx, id)
		}
	}
	body, err := f.p.be.Get(ctx, packName(info.Pack), int64(info.Offset), int64(info.Length))
	if err != nil {
		return nil, fmt.Errorf("read chunk %s from pack %s: %w", id, info.Pack, err)
	}
	return f.p.codec.Decode(nil, chunk.Body{ID: id, Kind: info.Kind, Raw: info.Raw, Pack: info.Pack, Body: body}, "")
}

// scanNew reads the index objects written since the scan.
func (f *chunkFinder) scanNew(ctx context.Context) error {
	_, err := f.p.eachIndex(ctx, indexVisitor{
		skip: func(in backend.Info) bool { return f.scanned[in.Name] },
		entry: func(pack chunker.ID, e *chunk.Entry) {
			f.add(pack, e)
			if e.Delta() {
				f.deltas = append(f.deltas, chunk.DeltaRef{ID: e.ID, Base: e.Base})
			}
		},
		done: func(in backend.Info, _ chunker.ID, _ int) error {
			f.scanned[in.Name] = true
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	return nil
}

// gcScan is what gc's first pass over the indexes collects besides the
// packs.
type gcScan struct {
	// finder knows where the list and patch chunks are.
	finder *chunkFinder
	// bases are the base ids (first 8 bytes) of every delta copy.
	bases []uint64
	// freshFull: for chunks with a copy in the previous condemned record,
	// whether they have a full copy that is not condemned.
	freshFull map[chunker.ID]bool
}

// scanPacks reads every index and pairs it with its pack's age and size.
// orphans are packs older than the grace period that no index names (a
// writer died between writing a pack and its index). It keeps no entries,
// only what the scan collects.
func (g *GCPlan) scanPacks(ctx context.Context, now time.Time, grace time.Duration, prev *condemnedIndex) (packs, orphans []*packState, scan *gcScan, err error) {
	p := g.p
	infos, err := p.listPacks(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("gc: %w", err)
	}
	scan = &gcScan{finder: newChunkFinder(p), freshFull: map[chunker.ID]bool{}}
	indexed := map[chunker.ID]bool{}
	_, err = p.eachIndex(ctx, indexVisitor{
		entry: func(pack chunker.ID, e *chunk.Entry) {
			scan.finder.add(pack, e)
			if e.Delta() {
				scan.bases = append(scan.bases, idKey(e.Base))
			}
			if !e.Delta() && prev.hasID(e.ID) && !prev.has(chunkCopy{e.ID, pack}) {
				scan.freshFull[e.ID] = true
			}
		},
		done: func(in backend.Info, pack chunker.ID, n int) error {
			scan.finder.scanned[in.Name] = true
			pi, ok := infos[pack]
			if !ok {
				// A writer may have written the pack and its index
				// since the packs were listed.
				var err error
				if pi, err = p.be.Stat(ctx, packName(pack)); errors.Is(err, backend.ErrNotFound) {
					return fmt.Errorf("index %s names pack %s, which is missing: run backup-cli verify", in.Name, pack)
				} else if err != nil {
					return err
				}
			}
			// An exclusive run has no young packs: no writer commits
			// during it (GCOptions.Exclusive).
			young := !g.opts.Exclusive && (now.Sub(pi.ModTime) < grace || now.Sub(in.ModTime) < grace)
			packs = append(packs, &packState{id: pack, index: in, size: pi.Size, young: young, entries: n})
			indexed[pack] = true
			return nil
		},
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("gc: %w", err)
	}
	for id, in := range infos {
		if !indexed[id] && now.Sub(in.ModTime) >= grace {
			orphans = append(orphans, &packState{id: id, size: in.Size})
		}
	}
	return packs, orphans, scan, nil
}

// walkPackIndex reads pack ps's index again and calls fn with each entry.
func (g *GCPlan) walkPackIndex(ctx context.Context, ps *packState, fn func(e *chunk.Entry)) error {
	p := g.p
	data, err := p.readIndexData(ctx, ps.index)
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	if _, err := walkIndex(data, -1, nil, fn); err != nil {
		return fmt.Errorf("gc: index %s: %w", ps.index.Name, err)
	}
	return nil
}

// liveEntries reads pack ps's index again and returns its entries, and
// which of them the run keeps.
func (g *GCPlan) liveEntries(ctx context.Context, ps *packState) ([]chunk.Entry, []bool, error) {
	var entries []chunk.Entry
	var live []bool
	err := g.walkPackIndex(ctx, ps, func(e *chunk.Entry) {
		isLive, _, _ := g.run.isLive(e, ps.id)
		entries = append(entries, *e)
		live = append(live, isLive)
	})
	return entries, live, err
}
