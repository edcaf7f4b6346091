package packs

import (
	"context"
	"fmt"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
)

// Marker finds the chunks a store's restore points need, for gc: it calls
// use with each, reading the list and patch chunks it must through get
// (which knows where they are from gc's scan). gc calls it twice, the
// second time just before deciding, so that manifests committed since the
// first call are seen: a Marker remembers what it has marked and marks
// only what is new. It returns the nodes and manifests it knows of.
type Marker func(ctx context.Context, get func(context.Context, chunker.ID) ([]byte, error), use func(chunker.ID)) (MarkCount, error)

// MarkCount is what a Marker has marked.
type MarkCount struct {
	Nodes, Manifests int
}

// GCPlan is what one gc run decided: the next condemned record, and the
// packs to repack, consolidate and delete. A plan made for execution holds
// the store's gc lock until Close.
type GCPlan struct {
	p       *Packs
	opts    GCOptions
	report  GCReport
	run     *gcRun
	pending *condemnedRecord
	deletes []*packState
	repacks []*packState
	small   []*packState // consolidated together (at least two)
	release func()
}

// packState is what gc keeps of one pack between its passes over the
// indexes: not the pack's entries (a store has millions), which each pass
// reads again.
type packState struct {
	id        chunker.ID
	index     backend.Info // its index object as listed; Name "" for an orphan
	size      int64
	young     bool
	entries   int
	liveBytes int64
}

// gcRun is what one gc run decided about liveness, for the passes that
// re-read the indexes.
type gcRun struct {
	live  *liveSet
	prev  *condemnedIndex
	fresh map[chunker.ID]bool
}

// isLive says whether a copy (entry e of pack) is kept: its chunk is needed
// (marked, or a delta's base), unless the copy is condemned and the chunk
// has a fresh full copy elsewhere.
func (r *gcRun) isLive(e *chunk.Entry, pack chunker.ID) (live, wasCondemned bool, when time.Time) {
	when, wasCondemned = r.prev.lookup(chunkCopy{e.ID, pack})
	return r.live.has(e.ID) && !(wasCondemned && r.fresh[e.ID]), wasCondemned, when
}

// GC plans a gc run with the chunks mark finds live and, unless it is a dry
// run, executes the plan.
func (p *Packs) GC(ctx context.Context, opts GCOptions, mark Marker) (GCReport, error) {
	plan, err := p.PlanGC(ctx, opts, mark)
	if err != nil {
		return plan.Report(), err
	}
	defer plan.Close()
	if opts.DryRun {
		return plan.Report(), nil
	}
	return plan.Execute(ctx)
}

// PlanGC decides what a gc run does (see the top of gc.go): it scans every
// index, has mark find the live chunks, and sorts every unreferenced copy
// into deleted now, condemned now, or kept waiting. Unless opts.DryRun, the
// plan holds the gc lock until Close. On error the plan holds no lock, and
// its report what was found so far.
func (p *Packs) PlanGC(ctx context.Context, opts GCOptions, mark Marker) (*GCPlan, error) {
	opts = p.gcDefaults(opts)
	g := &GCPlan{p: p, opts: opts, report: GCReport{DryRun: opts.DryRun, Exclusive: opts.Exclusive, Grace: opts.Grace}, release: func() {}}
	if opts.Grace < 2*p.maxWriterAge {
		return g, fmt.Errorf("gc grace period %s is too short: it must be at least twice the writers' limit of %s", opts.Grace, p.maxWriterAge)
	}
	if !opts.DryRun {
		release, err := g.gcLock(ctx, opts.Grace)
		if err != nil {
			return g, err
		}
		g.release = release
	}
	if err := g.plan(ctx, mark); err != nil {
		g.Close()
		return g, err
	}
	return g, nil
}

func (p *Packs) gcDefaults(opts GCOptions) GCOptions {
	if opts.Grace == 0 {
		opts.Grace = 24 * time.Hour
	}
	if opts.RepackBelow == 0 {
		opts.RepackBelow = 0.5
	}
	if opts.ConsolidateBelow == 0 {
		opts.ConsolidateBelow = int64(p.packSize)
	}
	return opts
}

// Report is what the plan does (or, executed, did).
func (g *GCPlan) Report() GCReport { return g.report }

// Close releases the gc lock, if the plan holds it.
func (g *GCPlan) Close() {
	g.release()
	g.release = func() {}
}

func (g *GCPlan) plan(ctx context.Context, mark Marker) error {
	now := g.p.now()
	prev, _, err := newestCondemned(ctx, g.p.be)
	if err != nil {
		return err
	}
	prevIndex := newCondemnedIndex(prev)
	packs, orphans, scan, err := g.scanPacks(ctx, now, g.opts.Grace, prevIndex)
	if err != nil {
		return err
	}
	for _, ps := range packs {
		g.report.StoredChunks += ps.entries
	}
	live, err := g.markLive(ctx, mark, scan)
	if err != nil {
		return err
	}
	g.report.Packs = len(packs)
	// A live chunk whose condemned copy has a fresh copy elsewhere (a writer
	// stored it again rather than reuse the condemned one) needs only the
	// fresh copy: the condemned one goes on its way to deletion. Only a
	// full copy replaces a condemned one: a delta copy may not stand for a
	// chunk that is (or may become) the base of other deltas, which must
	// stay one full chunk away. (The scan noted which condemned chunks have
	// a full copy that is not condemned.)
	g.run = &gcRun{live: live, prev: prevIndex, fresh: map[chunker.ID]bool{}}
	for i := range prev.len() {
		if c, _ := prev.at(i); c.id != (chunker.ID{}) && live.has(c.id) {
			g.run.fresh[c.id] = scan.freshFull[c.id]
		}
	}
	scan.freshFull = nil
	// pending is the next condemned record, in its stored form: every
	// unreferenced copy that is not deleted now stays on it. (Sized for
	// the copies not live: growing it by doubling would hold it twice at
	// the end.)
	g.pending = newCondemnedRecord(max(g.report.StoredChunks-g.report.LiveChunks, prev.len()) + len(orphans))
	if err := g.sortPacks(ctx, now, packs); err != nil {
		return err
	}
	g.sortOrphans(now, prevIndex, orphans)
	g.report.DeletedPacks, g.report.RepackedPacks = len(g.deletes), len(g.repacks)
	return nil
}

// markLive has mark find the live chunks, twice: after the scan (a
// manifest committed since names chunks in the packs scanned, the only
// ones gc touches, or in newer ones), and again just before deciding (a
// manifest committed since the first mark may name chunks about to be
// condemned or deleted). Then it adds every delta copy's base.
func (g *GCPlan) markLive(ctx context.Context, mark Marker, scan *gcScan) (*liveSet, error) {
	live := &liveSet{}
	count, err := mark(ctx, scan.finder.get, live.add)
	if err != nil {
		return nil, err
	}
	before := count.Manifests
	if count, err = mark(ctx, scan.finder.get, live.add); err != nil {
		return nil, err
	}
	g.report.Nodes, g.report.Manifests = count.Nodes, count.Manifests
	g.report.RecheckedAdded = count.Manifests - before
	markBases(live, scan.bases, scan.finder.deltas)
	scan.bases = nil
	g.report.LiveChunks = live.len()
	return live, nil
}

// markBases adds to live the base of every delta copy in the store, live
// or not: bases (the scan's) and extra (copies in indexes written since).
// A base goes only once no copy needs it, so every stored chunk stays
// readable (verify checks that) and a dead delta that a writer reuses
// before gc condemns it always finds its base. A dead delta keeps its base
// until its own pack is repacked or deleted; the next run frees the base.
// Writers make deltas of full copies only, so bases have no bases.
func markBases(live *liveSet, bases []uint64, extra []chunk.DeltaRef) {
	for _, k := range bases {
		live.addKey(k)
	}
	for _, d := range extra {
		live.add(d.Base)
	}
}

// packVerdict is what one pack's unreferenced copies allow.
type packVerdict struct {
	eligible, blocked int   // copies deletable now; copies that must wait
	deadBytes         int64 // bytes of the eligible copies
}

// sortPacks decides, pack by pack, which are deleted, repacked or
// consolidated, and puts every unreferenced copy on the next record.
func (g *GCPlan) sortPacks(ctx context.Context, now time.Time, packs []*packState) error {
	var smallDead int
	var smallDeadBytes int64
	rep := &g.report
	for i, ps := range packs {
		if g.opts.Progress != nil {
			g.opts.Progress(int64(i+1), int64(len(packs)))
		}
		v, err := g.judge(ctx, now, ps)
		if err != nil {
			return err
		}
		canConsolidate := v.blocked == 0 && !ps.young && ps.size < g.opts.ConsolidateBelow && ps.entries > 0
		switch {
		case v.eligible == 0 && !canConsolidate:
		case v.eligible == ps.entries && v.eligible > 0:
			g.deletes = append(g.deletes, ps)
			rep.DeletedChunks += v.eligible
			rep.ReclaimedBytes += ps.size
		case v.blocked == 0 && float64(ps.liveBytes) < g.opts.RepackBelow*float64(ps.liveBytes+v.deadBytes):
			g.repacks = append(g.repacks, ps)
			rep.DeletedChunks += v.eligible
			rep.ReclaimedBytes += ps.size - ps.liveBytes
			rep.RewrittenBytes += ps.liveBytes
		case canConsolidate:
			// A small pack whose dead chunks (if any) may all go: a
			// candidate for consolidation (below).
			g.small = append(g.small, ps)
			smallDead += v.eligible
			smallDeadBytes += ps.size - ps.liveBytes
		default:
			// Dead chunks wait in a mostly live pack; they stay
			// condemned so a later run can repack the pack.
			rep.BlockedChunks += v.eligible
		}
	}
	if len(g.small) < 2 {
		g.small = nil
		return nil
	}
	rep.ConsolidatedPacks = len(g.small)
	rep.DeletedChunks += smallDead
	rep.ReclaimedBytes += smallDeadBytes
	for _, ps := range g.small {
		rep.RewrittenBytes += ps.liveBytes
	}
	return nil
}

// judge reads one pack's index again and sorts its copies: live ones add
// to its live bytes; unreferenced ones go on the next condemned record,
// deletable if condemned a grace period ago.
func (g *GCPlan) judge(ctx context.Context, now time.Time, ps *packState) (packVerdict, error) {
	var v packVerdict
	rep := &g.report
	err := g.walkPackIndex(ctx, ps, func(e *chunk.Entry) {
		c := chunkCopy{e.ID, ps.id}
		isLive, wasCondemned, when := g.run.isLive(e, ps.id)
		if isLive {
			ps.liveBytes += int64(e.Length)
			if wasCondemned {
				rep.RescuedChunks++
			}
			return
		}
		switch {
		case g.opts.Exclusive:
			// No writer can come to name it (GCOptions.Exclusive):
			// deleted now, and on the new record like every copy
			// deleted (stamped now if it was not condemned before).
			var stamp int64
			if wasCondemned {
				stamp = when.UnixNano()
			}
			g.pending.add(c, stamp)
			v.eligible++
			v.deadBytes += int64(e.Length)
		case ps.young:
			rep.YoungChunks++
			v.blocked++
		case !wasCondemned:
			g.pending.add(c, 0) // stamped when the record is written
			rep.NewlyCondemned++
			v.blocked++
		case now.Sub(when) < g.opts.Grace:
			g.pending.add(c, when.UnixNano())
			rep.WaitingChunks++
			v.blocked++
		default:
			// Condemned a grace period ago: deleted by this run, or
			// later if its pack is mostly live. It stays in the new
			// record either way: a writer that loads that record while
			// the copy is still there must not take it for a live one.
			g.pending.add(c, when.UnixNano())
			v.eligible++
			v.deadBytes += int64(e.Length)
		}
	})
	return v, err
}

// sortOrphans decides about packs without an index: one is deleted only if
// it was already without one a grace period ago (the record holds it as a
// copy with a zero chunk id). Its mtime alone cannot tell: the backend's
// clock is not the store's, and a writer may be between the pack and its
// index.
func (g *GCPlan) sortOrphans(now time.Time, prev *condemnedIndex, orphans []*packState) {
	for _, o := range orphans {
		marker := chunkCopy{pack: o.id}
		when, marked := prev.lookup(marker)
		switch {
		case !marked:
			g.pending.add(marker, 0)
			g.report.WaitingPacks++
		case now.Sub(when) < g.opts.Grace:
			g.pending.add(marker, when.UnixNano())
			g.report.WaitingPacks++
		default:
			g.deletes = append(g.deletes, o)
			g.report.ReclaimedBytes += o.size
		}
	}
}
