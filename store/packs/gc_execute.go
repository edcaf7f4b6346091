package packs

import (
	"context"
	"fmt"

	"github.com/clnbackup/backup/store/chunk"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
)

// Execute carries the plan out: first the new condemned record (writers
// must see it before anything is deleted), then the repacks and the
// consolidation (live chunks written to new packs, durably with their
// indexes, before their old packs go), then the deletions, then the
// superseded condemned records.
func (g *GCPlan) Execute(ctx context.Context) (GCReport, error) {
	if g.opts.DryRun {
		return g.report, fmt.Errorf("gc: a dry run's plan is not executed")
	}
	p, rep := g.p, &g.report
	// Copies condemned now are stamped with the time the record is
	// written, not the time this run started: a writer that started in
	// between, seeing only the older record, may reuse them, and is bound
	// by MaxWriterAge from its own start.
	name, err := writeCondemned(ctx, p.be, p.now(), g.pending)
	if err != nil {
		return *rep, err
	}
	rep.CondemnedRecord = name
	if g.opts.BeforeDelete != nil {
		if err := g.opts.BeforeDelete(ctx); err != nil {
			return *rep, fmt.Errorf("gc: nothing was deleted: %w", err)
		}
	}
	for _, ps := range g.repacks {
		if _, err := g.rewrite(ctx, []*packState{ps}); err != nil {
			return *rep, fmt.Errorf("gc: repack %s: %w", ps.id.Short(), err)
		}
	}
	if len(g.small) > 0 {
		n, err := g.rewrite(ctx, g.small)
		rep.ConsolidatedInto = n
		if err != nil {
			return *rep, fmt.Errorf("gc: consolidate: %w", err)
		}
	}
	for _, ps := range g.deletes {
		if err := g.deletePack(ctx, ps); err != nil {
			return *rep, err
		}
	}
	err = p.be.List(ctx, condemnedPrefix, func(in backend.Info) error {
		if in.Name != name && in.Name <= name {
			return p.be.Delete(ctx, in.Name)
		}
		return nil
	})
	if err != nil {
		return *rep, fmt.Errorf("gc: remove superseded condemned records: %w", err)
	}
	p.ReleaseIndex()
	return *rep, nil
}

// rewrite moves the live chunks of packs (each chunk once, if the packs
// share some) to new packs of the store's pack size, durably with their
// indexes, then deletes the old indexes and packs: a repack of one pack, or
// the consolidation of several small ones. It returns the packs written.
func (g *GCPlan) rewrite(ctx context.Context, packs []*packState) (int, error) {
	p := g.p
	// A chunk with a live full copy in one of the packs is not copied as a
	// delta from another: the full copy is (copyLive skips seen chunks).
	seen := map[chunker.ID]bool{}
	for _, ps := range packs {
		err := g.walkPackIndex(ctx, ps, func(e *chunk.Entry) {
			if isLive, _, _ := g.run.isLive(e, ps.id); isLive && !e.Delta() {
				seen[e.ID] = false
			}
		})
		if err != nil {
			return 0, err
		}
	}
	b := &packBuilder{p: p}
	for _, ps := range packs {
		if err := g.copyLive(ctx, b, ps, seen); err != nil {
			return b.packs, err
		}
	}
	if err := b.flush(ctx); err != nil {
		return b.packs, err
	}
	for _, ps := range packs {
		if err := g.deletePack(ctx, ps); err != nil {
			return b.packs, err
		}
	}
	return b.packs, nil
}

// copyLive reads pack ps and adds its live chunks not in seen to b. Full
// copies are verified against their ids first (a damaged chunk stops gc
// rather than travel on); delta copies travel as stored, with their base
// (which is live too).
func (g *GCPlan) copyLive(ctx context.Context, b *packBuilder, ps *packState, seen map[chunker.ID]bool) error {
	p := g.p
	entries, live, err := g.liveEntries(ctx, ps)
	if err != nil {
		return err
	}
	if err := backend.CheckWhole(packName(ps.id), ps.size, maxPackSize); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	old, err := p.be.Get(ctx, packName(ps.id), 0, ps.size)
	if err != nil {
		return err
	}
	var buf []byte
	for k, e := range entries {
		if !live[k] || seen[e.ID] {
			continue
		}
		if _, hasFull := seen[e.ID]; hasFull && e.Delta() {
			continue // its full copy is rewritten instead
		}
		if int64(e.Offset)+int64(e.Length) > int64(len(old)) {
			return fmt.Errorf("chunk %s lies beyond the end of pack %s; run backup-cli verify", e.ID, ps.id.Short())
		}
		body := old[e.Offset : e.Offset+e.Length]
		if !e.Delta() {
			if buf, err = p.codec.Decode(buf[:0], chunk.Body{ID: e.ID, Kind: e.Kind, Raw: e.Raw, Pack: ps.id, Body: body}, ""); err != nil {
				return err
			}
		}
		seen[e.ID] = true
		if err := b.add(ctx, e, body); err != nil {
			return err
		}
	}
	return nil
}

// packBuilder gathers stored bodies into packs of the store's pack size.
type packBuilder struct {
	p       *Packs
	bodies  []byte
	entries []chunk.Entry
	packs   int
}

func (b *packBuilder) add(ctx context.Context, e chunk.Entry, body []byte) error {
	e.Offset, e.Length = uint32(len(b.bodies)), uint32(len(body))
	b.bodies = append(b.bodies, body...)
	b.entries = append(b.entries, e)
	if len(b.bodies) >= b.p.packSize {
		return b.flush(ctx)
	}
	return nil
}

func (b *packBuilder) flush(ctx context.Context) error {
	if len(b.entries) == 0 {
		return nil
	}
	if _, err := b.p.writePack(ctx, b.bodies, b.entries); err != nil {
		return err
	}
	b.packs++
	b.bodies, b.entries = b.bodies[:0], nil
	return nil
}

// deletePack removes a pack's index first (so no new reader learns of it),
// then the pack.
func (g *GCPlan) deletePack(ctx context.Context, ps *packState) error {
	p := g.p
	if ps.index.Name != "" {
		if err := p.be.Delete(ctx, ps.index.Name); err != nil {
			return fmt.Errorf("gc: delete index %s: %w", ps.index.Name, err)
		}
	}
	if err := p.be.Delete(ctx, packName(ps.id)); err != nil {
		return fmt.Errorf("gc: delete pack %s: %w", ps.id, err)
	}
	return nil
}
