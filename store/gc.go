package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/backend"
)

// Garbage collection while writers keep writing (see docs/design.md, "gc").
//
// The danger every deduplicating store meets: a writer finds a chunk already
// stored and skips writing it; gc, not yet seeing a manifest that names the
// chunk, deletes it; the writer then commits a manifest naming a chunk that
// is gone. We prevent it in two phases:
//
//  1. A gc run condemns every chunk copy that no manifest names, in packs
//     older than the grace period, by writing a condemned record; it
//     deletes nothing it has not condemned at least a grace period before.
//  2. Writers load the newest condemned record when they start and never
//     reuse a condemned copy: they store the chunk again. A writer that
//     started before the record existed may reuse a condemned copy, but it
//     must commit within MaxWriterAge (Writer.CheckAge), which is shorter
//     than the grace period; so its manifest exists when the deleting run
//     marks, and the copy is rescued.
//
// A run also re-reads the manifests just before deleting. A pack that no
// index names is condemned the same way (a copy with a zero chunk id) and
// deleted only if it still has no index a grace period later: its mtime is
// the backend's clock, not the store's, and cannot prove that no writer is
// between writing the pack and writing its index.

const (
	condemnedPrefix = "gc/condemned/"
	gcLockName      = "gc/running"
	condemnedMagic  = "CLNCOND1"
	condemnedEntry  = 2*chunker.IDSize + 8
)

// GCOptions tune a gc run.
type GCOptions struct {
	// Grace is how long an unreferenced chunk stays condemned before it is
	// deleted, and how old a pack must be before gc touches it. It must be
	// at least twice the store's MaxWriterAge (default 24h).
	Grace time.Duration
	// RepackBelow: a pack whose live share of bytes is below it, and whose
	// other chunks may all be deleted, is rewritten (default 0.5).
	RepackBelow float64
	// ConsolidateBelow: packs smaller than this many bytes (0: the store's
	// pack size; negative: none) that gc may rewrite (old enough, and every
	// dead chunk in them deletable) are consolidated when there are at least
	// two: their live chunks are rewritten together into full packs, the
	// same way a repack rewrites one pack, and the old packs deleted. Each
	// compaction leaves one partial pack (and its index); consolidation
	// keeps the store's object count proportional to its size.
	ConsolidateBelow int64
	// DryRun reports what would be done and changes nothing.
	DryRun bool
	// Progress, if set, is told about packs examined.
	Progress func(done, total int64)
}

// GCReport says what a gc run did and why it kept what it kept.
type GCReport struct {
	Nodes        int `json:"nodes"`
	Manifests    int `json:"manifests"`
	LiveChunks   int `json:"live_chunks"`
	Packs        int `json:"packs"`
	StoredChunks int `json:"stored_chunks"`
	// DeletedPacks were entirely unreferenced; RepackedPacks had their live
	// chunks rewritten to new packs first.
	DeletedPacks  int `json:"deleted_packs"`
	RepackedPacks int `json:"repacked_packs"`
	// ConsolidatedPacks were small packs whose live chunks were rewritten
	// together into ConsolidatedInto new packs.
	ConsolidatedPacks int   `json:"consolidated_packs"`
	ConsolidatedInto  int   `json:"consolidated_into"`
	DeletedChunks     int   `json:"deleted_chunks"`
	ReclaimedBytes    int64 `json:"reclaimed_bytes"`
	RewrittenBytes    int64 `json:"rewritten_bytes"`
	// Kept, by reason.
	YoungChunks    int `json:"kept_young_chunks"`
	NewlyCondemned int `json:"newly_condemned_chunks"`
	WaitingChunks  int `json:"kept_condemned_chunks"`
	BlockedChunks  int `json:"kept_dead_chunks_in_live_packs"`
	RescuedChunks  int `json:"rescued_chunks"`
	// WaitingPacks are packs without an index (a writer died between the
	// pack and its index, or is writing it right now): like unreferenced
	// chunks, they are condemned first and deleted a grace period later.
	WaitingPacks    int           `json:"kept_unindexed_packs"`
	RecheckedAdded  int           `json:"manifests_found_on_recheck"`
	DryRun          bool          `json:"dry_run"`
	Grace           time.Duration `json:"grace_ns"`
	CondemnedRecord string        `json:"condemned_record,omitempty"`
}

// Lines describes the report for people.
func (r GCReport) Lines() []string {
	verb := ""
	if r.DryRun {
		verb = "would be "
	}
	return []string{
		fmt.Sprintf("%d nodes, %d manifests reference %d chunks; the store holds %d chunk copies in %d packs", r.Nodes, r.Manifests, r.LiveChunks, r.StoredChunks, r.Packs),
		fmt.Sprintf("%sdeleted: %d packs entirely unreferenced, %d chunks, %s reclaimed", verb, r.DeletedPacks, r.DeletedChunks, fmtBytes(r.ReclaimedBytes)),
		fmt.Sprintf("%srepacked: %d packs, consolidated: %d small packs into %d (%s of live chunks rewritten)", verb, r.RepackedPacks, r.ConsolidatedPacks, r.ConsolidatedInto, fmtBytes(r.RewrittenBytes)),
		fmt.Sprintf("kept: %d chunks younger than the grace period (%s)", r.YoungChunks, r.Grace),
		fmt.Sprintf("kept: %d unreferenced chunks %scondemned now, %d condemned less than the grace period ago (deleted by a later gc)", r.NewlyCondemned, verb, r.WaitingChunks),
		fmt.Sprintf("kept: %d unreferenced chunks in packs that are mostly live; %d condemned chunks referenced again (rescued); %d packs without an index condemned less than the grace period ago", r.BlockedChunks, r.RescuedChunks, r.WaitingPacks),
	}
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// packState is what gc keeps of one pack between its passes over the
// indexes: not the pack's entries (a store has millions), which each pass
// reads again.
type packState struct {
	id        chunker.ID
	index     string
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

// isLive says whether a copy (entry e of pack) is kept: its chunk is named
// by a manifest (or is a live delta's base), unless the copy is condemned
// and the chunk has a fresh full copy elsewhere.
func (r *gcRun) isLive(e *indexEntry, pack chunker.ID) (live, wasCondemned bool, when time.Time) {
	when, wasCondemned = r.prev.lookup(chunkCopy{e.ID, pack})
	return r.live.has(e.ID) && !(wasCondemned && r.fresh[e.ID]), wasCondemned, when
}

// GC reclaims chunks that no manifest of any node references, safely while
// writers keep writing (see the comment at the top of this file).
func (s *Store) GC(ctx context.Context, opts GCOptions) (GCReport, error) {
	if opts.Grace == 0 {
		opts.Grace = 24 * time.Hour
	}
	if opts.RepackBelow == 0 {
		opts.RepackBelow = 0.5
	}
	if opts.ConsolidateBelow == 0 {
		opts.ConsolidateBelow = int64(s.cfg.Params.PackSize)
	}
	rep := GCReport{DryRun: opts.DryRun, Grace: opts.Grace}
	if opts.Grace < 2*s.maxWriterAge {
		return rep, fmt.Errorf("gc grace period %s is too short: it must be at least twice the writers' limit of %s", opts.Grace, s.maxWriterAge)
	}
	if !opts.DryRun {
		release, err := s.gcLock(ctx, opts.Grace)
		if err != nil {
			return rep, err
		}
		defer release()
	}
	now := s.now()
	prev, _, err := s.newestCondemned(ctx)
	if err != nil {
		return rep, err
	}
	prevIndex := newCondemnedIndex(prev)
	packs, orphans, scan, err := s.scanPacks(ctx, now, opts.Grace, prevIndex)
	if err != nil {
		return rep, err
	}
	for _, p := range packs {
		rep.StoredChunks += p.entries
	}
	// Mark after the scan: a manifest committed since names chunks in the
	// packs scanned (and those are the only ones gc touches) or in newer
	// ones. List and patch chunks are found through the scanned indexes,
	// so gc never loads the store's whole chunk index.
	find := scan.finder
	live := &liveSet{}
	seen := map[string]bool{}
	if err := s.mark(ctx, find, live, seen, &rep); err != nil {
		return rep, err
	}
	// Re-read the manifests just before deciding: one committed since the
	// mark may name chunks we are about to condemn or delete.
	before := rep.Manifests
	if err := s.mark(ctx, find, live, seen, &rep); err != nil {
		return rep, err
	}
	rep.RecheckedAdded = rep.Manifests - before
	// A live delta needs its base: the base of every delta copy is kept
	// (see markBases).
	markBases(live, scan.bases, find.deltas)
	scan.bases = nil
	rep.LiveChunks = live.len()

	rep.Packs = len(packs)
	// A live chunk whose condemned copy has a fresh copy elsewhere (a writer
	// stored it again rather than reuse the condemned one) needs only the
	// fresh copy: the condemned one goes on its way to deletion. Only a
	// full copy replaces a condemned one: a delta copy may not stand for a
	// chunk that is (or may become) the base of other deltas, which must
	// stay one full chunk away. (The scan noted which condemned chunks have
	// a full copy that is not condemned.)
	run := &gcRun{live: live, prev: prevIndex, fresh: map[chunker.ID]bool{}}
	for i := range prev.len() {
		if c, _ := prev.at(i); c.id != (chunker.ID{}) && live.has(c.id) {
			run.fresh[c.id] = scan.freshFull[c.id]
		}
	}
	scan.freshFull = nil
	// pending is the next condemned record, in its stored form: every
	// unreferenced copy that is not deleted now stays on it (when 0:
	// condemned now).
	// (Sized for the copies not live: growing it by doubling would hold
	// it twice at the end.)
	pending := newCondemnedRecord(max(rep.StoredChunks-rep.LiveChunks, prev.len()) + len(orphans))
	var deletes, repacks, small []*packState
	var smallDead int
	var smallDeadBytes int64
	for i, p := range packs {
		if opts.Progress != nil {
			opts.Progress(int64(i+1), int64(len(packs)))
		}
		eligible, blocked := 0, 0
		var deadBytes int64
		err := s.walkPackIndex(ctx, p, func(e *indexEntry) {
			c := chunkCopy{e.ID, p.id}
			isLive, wasCondemned, when := run.isLive(e, p.id)
			if isLive {
				p.liveBytes += int64(e.Length)
				if wasCondemned {
					rep.RescuedChunks++
				}
				return
			}
			switch {
			case p.young:
				rep.YoungChunks++
				blocked++
			case !wasCondemned:
				pending.add(c, 0)
				rep.NewlyCondemned++
				blocked++
			case now.Sub(when) < opts.Grace:
				pending.add(c, when.UnixNano())
				rep.WaitingChunks++
				blocked++
			default:
				// Condemned a grace period ago: deleted by this
				// run, or later if its pack is mostly live. It
				// stays in the new record either way: a writer
				// that loads that record while the copy is still
				// there must not take it for a live one.
				pending.add(c, when.UnixNano())
				eligible++
				deadBytes += int64(e.Length)
			}
		})
		if err != nil {
			return rep, err
		}
		canConsolidate := blocked == 0 && !p.young && p.size < opts.ConsolidateBelow && p.entries > 0
		switch {
		case eligible == 0 && !canConsolidate:
		case eligible == p.entries && eligible > 0:
			deletes = append(deletes, p)
			rep.DeletedChunks += eligible
			rep.ReclaimedBytes += p.size
		case blocked == 0 && float64(p.liveBytes) < opts.RepackBelow*float64(p.liveBytes+deadBytes):
			repacks = append(repacks, p)
			rep.DeletedChunks += eligible
			rep.ReclaimedBytes += p.size - p.liveBytes
			rep.RewrittenBytes += p.liveBytes
		case canConsolidate:
			// A small pack whose dead chunks (if any) may all go: a
			// candidate for consolidation (below).
			small = append(small, p)
			smallDead += eligible
			smallDeadBytes += p.size - p.liveBytes
		default:
			// Dead chunks wait in a mostly live pack; they stay
			// condemned so a later run can repack the pack.
			rep.BlockedChunks += eligible
		}
	}
	// A pack without an index is deleted only if it was already without
	// one a grace period ago (the record holds it as a copy with a zero
	// chunk id). Its mtime alone cannot tell: the backend's clock is not
	// the store's, and a writer may be between the pack and its index.
	for _, o := range orphans {
		marker := chunkCopy{pack: o.id}
		when, marked := prev.lookup(marker)
		if !marked {
			pending.add(marker, 0)
			rep.WaitingPacks++
			continue
		}
		if now.Sub(when) < opts.Grace {
			pending.add(marker, when.UnixNano())
			rep.WaitingPacks++
			continue
		}
		deletes = append(deletes, o)
		rep.ReclaimedBytes += o.size
	}
	if len(small) >= 2 {
		rep.ConsolidatedPacks = len(small)
		rep.DeletedChunks += smallDead
		rep.ReclaimedBytes += smallDeadBytes
		for _, p := range small {
			rep.RewrittenBytes += p.liveBytes
		}
	} else {
		small = nil
	}
	rep.DeletedPacks, rep.RepackedPacks = len(deletes), len(repacks)
	if opts.DryRun {
		return rep, nil
	}
	// The new condemned record first: writers must see it before we act.
	// Copies condemned now are stamped with the time the record is
	// written, not the time this run started: a writer that started in
	// between, seeing only the older record, may reuse them, and is bound
	// by MaxWriterAge from its own start.
	name, err := s.writeCondemned(ctx, s.now(), pending)
	if err != nil {
		return rep, err
	}
	rep.CondemnedRecord = name
	for _, p := range repacks {
		if err := s.repack(ctx, run, p); err != nil {
			return rep, err
		}
	}
	if len(small) > 0 {
		n, err := s.consolidate(ctx, run, small)
		if err != nil {
			return rep, err
		}
		rep.ConsolidatedInto = n
	}
	for _, p := range deletes {
		if err := s.deletePack(ctx, p); err != nil {
			return rep, err
		}
	}
	// Older condemned records are superseded by the one just written.
	err = s.be.List(ctx, condemnedPrefix, func(in backend.Info) error {
		if in.Name != name && in.Name <= name {
			return s.be.Delete(ctx, in.Name)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("gc: remove superseded condemned records: %w", err)
	}
	s.ReleaseIndex()
	return rep, nil
}

// chunkFinder reads the list and patch chunks mark needs. It knows where
// they are from the indexes gc scanned, and on a miss reads the indexes
// written since (a manifest committed during the run); only the chunks of
// those kinds are kept, a few per thousand pages.
type chunkFinder struct {
	s       *Store
	at      map[chunker.ID]ChunkInfo
	scanned map[string]bool
	// read are the list and patch chunks marked already.
	read map[chunker.ID]bool
	// deltas are the delta copies in indexes written since the scan.
	deltas []deltaRef
}

func newChunkFinder(s *Store) *chunkFinder {
	return &chunkFinder{s: s, at: map[chunker.ID]ChunkInfo{}, scanned: map[string]bool{}, read: map[chunker.ID]bool{}}
}

// add notes where entry e of pack is, if it is a list or patch chunk.
func (f *chunkFinder) add(pack chunker.ID, e *indexEntry) {
	if e.Kind == KindList || e.Kind == KindPatch {
		f.at[e.ID] = ChunkInfo{Pack: pack, Kind: e.Kind, Offset: e.Offset, Length: e.Length, Raw: e.Raw}
	}
}

func (f *chunkFinder) get(ctx context.Context, id chunker.ID) ([]byte, error) {
	info, ok := f.at[id]
	if !ok {
		if err := f.scanNew(ctx); err != nil {
			return nil, err
		}
		if info, ok = f.at[id]; !ok {
			// Not stored as a list or patch chunk: look it up the
			// ordinary way.
			return f.s.Get(ctx, id)
		}
	}
	body, err := f.s.be.Get(ctx, packName(info.Pack), int64(info.Offset), int64(info.Length))
	if err != nil {
		return nil, fmt.Errorf("read chunk %s from pack %s: %w", id, info.Pack, err)
	}
	return f.s.decodeInto(make([]byte, 0, info.Raw), id, info, body)
}

// scanNew reads the index objects written since the scan.
func (f *chunkFinder) scanNew(ctx context.Context) error {
	err := f.s.be.List(ctx, "index/", func(in backend.Info) error {
		if f.scanned[in.Name] {
			return nil
		}
		pack, entries, err := f.s.readIndex(ctx, in.Name)
		if errors.Is(err, backend.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		f.scanned[in.Name] = true
		for k := range entries {
			f.add(pack, &entries[k])
		}
		for _, e := range entries {
			if e.delta() {
				f.deltas = append(f.deltas, deltaRef{e.ID, e.Base})
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	return nil
}

// mark adds the chunks named by every manifest not yet in seen to live.
func (s *Store) mark(ctx context.Context, find *chunkFinder, live *liveSet, seen map[string]bool, rep *GCReport) error {
	nodes, err := s.Nodes(ctx)
	if err != nil {
		return err
	}
	rep.Nodes = len(nodes)
	for _, node := range nodes {
		seqs, err := s.ManifestSeqs(ctx, node)
		if err != nil {
			return err
		}
		for _, seq := range seqs {
			key := manifestName(node, seq)
			if seen[key] {
				continue
			}
			m, err := s.Manifest(ctx, node, seq)
			if errors.Is(err, backend.ErrNotFound) {
				continue // forgotten meanwhile: it names nothing any more
			}
			if err != nil {
				return fmt.Errorf("gc: %w (gc stops rather than guess what a damaged manifest names; run backup-cli verify)", err)
			}
			seen[key] = true
			rep.Manifests++
			if err := markManifest(ctx, find, m, live); err != nil {
				return fmt.Errorf("gc: manifest %d of node %q: %w", seq, node, err)
			}
		}
	}
	return nil
}

// markBases adds to live the base of every delta copy in the store, live
// or not: bases (the scan's) and extra (copies in indexes written since).
// A base goes only once no copy needs it, so every stored chunk stays
// readable (verify checks that) and a dead delta that a writer reuses
// before gc condemns it always finds its base. A dead delta keeps its base
// until its own pack is repacked or deleted; the next run frees the base.
// Writers make deltas of full copies only, so bases have no bases.
func markBases(live *liveSet, bases []uint64, extra []deltaRef) {
	for _, k := range bases {
		live.addKey(k)
	}
	for _, d := range extra {
		live.add(d.base)
	}
}

// liveSet holds the chunks manifests name, by the first 8 bytes of their
// ids, in a sorted slice: 8 bytes a chunk (a map would take three times
// that). Two chunks that share those bytes (about one pair in 2^64) are
// both kept: the set can only err towards keeping garbage, never towards
// deleting a live chunk.
type liveSet struct {
	keys []uint64
	// clean is how many of keys are sorted and distinct; the rest were
	// added since.
	clean int
	// find locates keys once they are all clean.
	find keyIndex
}

func liveKey(id chunker.ID) uint64 { return binary.LittleEndian.Uint64(id[:8]) }

func (l *liveSet) add(id chunker.ID) { l.addKey(liveKey(id)) }

func (l *liveSet) addKey(k uint64) {
	l.keys = append(l.keys, k)
	// Manifests name the same pages over and over: fold the repeats in
	// whenever the additions outgrow the set.
	if len(l.keys) >= 2*l.clean+1<<16 {
		l.compact()
	}
}

func (l *liveSet) compact() {
	if l.clean == len(l.keys) && l.find.keys != nil {
		return
	}
	slices.Sort(l.keys)
	l.keys = slices.Compact(l.keys)
	l.clean = len(l.keys)
	l.find = newKeyIndex(l.keys)
}

func (l *liveSet) has(id chunker.ID) bool {
	l.compact()
	_, ok := l.find.search(liveKey(id))
	return ok
}

func (l *liveSet) len() int {
	l.compact()
	return len(l.keys)
}

func markManifest(ctx context.Context, find *chunkFinder, m *manifest.Manifest, live *liveSet) error {
	for _, c := range m.Changes {
		live.add(c.ID)
	}
	for _, id := range m.Snapshot.Lists {
		if find.read[id] {
			continue // lists shared by manifests are read once
		}
		data, err := find.get(ctx, id)
		if err != nil {
			return err
		}
		ids, err := manifest.DecodeList(data)
		if err != nil {
			return fmt.Errorf("list chunk %s: %w", id, err)
		}
		for _, p := range ids {
			live.add(p)
		}
		live.add(id)
		find.read[id] = true
	}
	for _, id := range m.Snapshot.Patches {
		if find.read[id] {
			continue
		}
		data, err := find.get(ctx, id)
		if err != nil {
			return err
		}
		p, err := manifest.DecodePatch(data)
		if err != nil {
			return fmt.Errorf("patch chunk %s: %w", id, err)
		}
		for _, e := range p.Entries {
			live.add(e.ID)
		}
		live.add(id)
		find.read[id] = true
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
func (s *Store) scanPacks(ctx context.Context, now time.Time, grace time.Duration, prev *condemnedIndex) (packs, orphans []*packState, scan *gcScan, err error) {
	infos := map[chunker.ID]backend.Info{}
	err = s.be.List(ctx, "packs/", func(in backend.Info) error {
		if id, err := chunker.ParseID(in.Name[strings.LastIndexByte(in.Name, '/')+1:]); err == nil {
			infos[id] = in
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("gc: list packs: %w", err)
	}
	scan = &gcScan{finder: newChunkFinder(s), freshFull: map[chunker.ID]bool{}}
	indexed := map[chunker.ID]bool{}
	err = s.be.List(ctx, "index/", func(in backend.Info) error {
		data, err := s.readIndexData(ctx, in.Name)
		if err != nil {
			return err
		}
		var pack chunker.ID
		n := 0
		_, err = walkIndex(data, -1, func(int) { pack = packOf(data) }, func(e *indexEntry) {
			n++
			scan.finder.add(pack, e)
			if e.delta() {
				scan.bases = append(scan.bases, liveKey(e.Base))
			}
			if !e.delta() && prev.hasID(e.ID) && !prev.has(chunkCopy{e.ID, pack}) {
				scan.freshFull[e.ID] = true
			}
		})
		if err != nil {
			return fmt.Errorf("index %s: %w", in.Name, err)
		}
		scan.finder.scanned[in.Name] = true
		pi, ok := infos[pack]
		if !ok {
			// A writer may have written the pack and its index
			// since the packs were listed.
			var err error
			pi, err = s.be.Stat(ctx, packName(pack))
			if errors.Is(err, backend.ErrNotFound) {
				return fmt.Errorf("index %s names pack %s, which is missing: run backup-cli verify", in.Name, pack)
			}
			if err != nil {
				return err
			}
		}
		young := now.Sub(pi.ModTime) < grace || now.Sub(in.ModTime) < grace
		packs = append(packs, &packState{id: pack, index: in.Name, size: pi.Size, young: young, entries: n})
		indexed[pack] = true
		return nil
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

// walkPackIndex reads pack p's index again and calls fn with each entry.
func (s *Store) walkPackIndex(ctx context.Context, p *packState, fn func(e *indexEntry)) error {
	data, err := s.readIndexData(ctx, p.index)
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	if _, err := walkIndex(data, -1, nil, fn); err != nil {
		return fmt.Errorf("gc: index %s: %w", p.index, err)
	}
	return nil
}

// liveEntries reads pack p's index again and returns its entries, and
// which of them the run keeps.
func (s *Store) liveEntries(ctx context.Context, run *gcRun, p *packState) ([]indexEntry, []bool, error) {
	var entries []indexEntry
	var live []bool
	err := s.walkPackIndex(ctx, p, func(e *indexEntry) {
		isLive, _, _ := run.isLive(e, p.id)
		entries = append(entries, *e)
		live = append(live, isLive)
	})
	return entries, live, err
}

// repack writes a pack's live chunks to a new pack (durably, with its index)
// and then deletes the old index and pack.
func (s *Store) repack(ctx context.Context, run *gcRun, p *packState) error {
	// Not NewWriter: putAlways needs no lookups, and a store server's
	// index would be reloaded each time (the previous repack deleted an
	// index).
	w, err := s.newWriter(s.now())
	if err != nil {
		return err
	}
	defer w.Close()
	if err := s.rewriteLive(ctx, w, run, p, nil); err != nil {
		return err
	}
	if err := w.Flush(ctx); err != nil {
		return fmt.Errorf("gc: repack %s: %w", p.id.Short(), err)
	}
	return s.deletePack(ctx, p)
}

// consolidate is repack for several small packs at once: their live chunks
// (each once, if packs share some) go to new packs of the store's pack
// size, durably with their indexes, before the old indexes and packs are
// deleted. It returns the number of packs written.
func (s *Store) consolidate(ctx context.Context, run *gcRun, packs []*packState) (int, error) {
	w, err := s.newWriter(s.now())
	if err != nil {
		return 0, err
	}
	defer w.Close()
	// A chunk with a live full copy in one of the packs is not copied as a
	// delta from another: the full copy is (rewriteLive skips seen chunks).
	seen := map[chunker.ID]bool{}
	for _, p := range packs {
		err := s.walkPackIndex(ctx, p, func(e *indexEntry) {
			if isLive, _, _ := run.isLive(e, p.id); isLive && !e.delta() {
				seen[e.ID] = false
			}
		})
		if err != nil {
			return 0, err
		}
	}
	for _, p := range packs {
		if err := s.rewriteLive(ctx, w, run, p, seen); err != nil {
			return w.stats.Packs, err
		}
	}
	if err := w.Flush(ctx); err != nil {
		return w.stats.Packs, fmt.Errorf("gc: consolidate: %w", err)
	}
	for _, p := range packs {
		if err := s.deletePack(ctx, p); err != nil {
			return w.stats.Packs, err
		}
	}
	return w.stats.Packs, nil
}

// rewriteLive reads pack p and puts its live chunks into w (those not in
// seen, when seen is not nil), flushing w whenever it holds a full pack.
func (s *Store) rewriteLive(ctx context.Context, w *Writer, run *gcRun, p *packState, seen map[chunker.ID]bool) error {
	entries, live, err := s.liveEntries(ctx, run, p)
	if err != nil {
		return err
	}
	old, err := s.be.Get(ctx, packName(p.id), 0, -1)
	if err != nil {
		return fmt.Errorf("gc: repack %s: %w", p.id.Short(), err)
	}
	for k, e := range entries {
		if !live[k] || seen[e.ID] {
			continue
		}
		if _, hasFull := seen[e.ID]; hasFull && e.delta() {
			continue // its full copy is rewritten instead
		}
		if int64(e.Offset)+int64(e.Length) > int64(len(old)) {
			return fmt.Errorf("gc: repack %s: chunk %s lies beyond the end of the pack; run backup-cli verify", p.id.Short(), e.ID)
		}
		if e.delta() {
			// Copied as stored, with its base (which is live too).
			w.putRaw(e, old[e.Offset:e.Offset+e.Length])
		} else {
			info := ChunkInfo{Pack: p.id, Kind: e.Kind, Offset: e.Offset, Length: e.Length, Raw: e.Raw}
			data, err := s.decodeInto(nil, e.ID, info, old[e.Offset:e.Offset+e.Length])
			if err != nil {
				return fmt.Errorf("gc: repack: %w", err)
			}
			w.putAlways(e.Kind, e.ID, data)
		}
		if seen != nil {
			seen[e.ID] = true
		}
		if len(w.bodies) >= s.cfg.Params.PackSize {
			if err := w.Flush(ctx); err != nil {
				return fmt.Errorf("gc: repack %s: %w", p.id.Short(), err)
			}
		}
	}
	return nil
}

// deletePack removes a pack's index first (so no new reader learns of it),
// then the pack.
func (s *Store) deletePack(ctx context.Context, p *packState) error {
	if p.index != "" {
		if err := s.be.Delete(ctx, p.index); err != nil {
			return fmt.Errorf("gc: delete index %s: %w", p.index, err)
		}
	}
	if err := s.be.Delete(ctx, packName(p.id)); err != nil {
		return fmt.Errorf("gc: delete pack %s: %w", p.id, err)
	}
	return nil
}

// gcLock makes sure one gc runs at a time; a lock older than the grace
// period is stale (its gc died) and is taken over.
func (s *Store) gcLock(ctx context.Context, grace time.Duration) (func(), error) {
	host, _ := os.Hostname()
	data, _ := json.Marshal(map[string]any{"host": host, "pid": os.Getpid(), "started": s.now().UTC()})
	for try := 0; try < 2; try++ {
		err := s.be.PutIfAbsent(ctx, gcLockName, data)
		if err == nil {
			return func() { s.be.Delete(context.Background(), gcLockName) }, nil
		}
		if !errors.Is(err, backend.ErrExists) {
			return nil, fmt.Errorf("gc: take the gc lock: %w", err)
		}
		in, serr := s.be.Stat(ctx, gcLockName)
		if serr != nil {
			continue
		}
		if s.now().Sub(in.ModTime) < grace {
			held, _ := s.be.Get(ctx, gcLockName, 0, -1)
			return nil, fmt.Errorf("another gc is running on store %s (%s, since %s); if it died, remove the object %s", s.Location(), strings.TrimSpace(string(held)), in.ModTime.UTC().Format(time.RFC3339), gcLockName)
		}
		if err := s.be.Delete(ctx, gcLockName); err != nil {
			return nil, fmt.Errorf("gc: remove stale gc lock: %w", err)
		}
	}
	return nil, fmt.Errorf("gc: could not take the gc lock of store %s", s.Location())
}

// newestCondemned loads the newest condemned record (each gc run writes the
// whole set of pending copies; older records are superseded).
func (s *Store) newestCondemned(ctx context.Context) (condemnedSet, string, error) {
	set, name, _, err := s.readNewestCondemned(ctx, func(string) bool { return false })
	return set, name, err
}

// readNewestCondemned is newestCondemned, except that it does not read the
// record (and read is false) when have(name) says the caller has it.
func (s *Store) readNewestCondemned(ctx context.Context, have func(string) bool) (set condemnedSet, name string, read bool, err error) {
	var newest string
	var data []byte
	for try := 0; ; try++ {
		newest = ""
		err := s.be.List(ctx, condemnedPrefix, func(in backend.Info) error {
			if in.Name > newest {
				newest = in.Name
			}
			return nil
		})
		if err != nil {
			return nil, "", false, fmt.Errorf("list condemned records: %w", err)
		}
		if newest == "" {
			return nil, "", false, nil
		}
		if have(newest) {
			return nil, newest, false, nil
		}
		data, err = s.be.Get(ctx, newest, 0, -1)
		if errors.Is(err, backend.ErrNotFound) && try < 10 {
			continue // a gc wrote a newer record and removed this one
		}
		if err != nil {
			return nil, "", false, fmt.Errorf("read condemned record %s: %w", newest, err)
		}
		break
	}
	set, err = decodeCondemned(data)
	if err != nil {
		return nil, "", false, fmt.Errorf("condemned record %s: %w", newest, err)
	}
	return set, newest, true, nil
}

// loadCondemned makes writers of this Store see the newest condemned record.
func (s *Store) loadCondemned(ctx context.Context) error {
	set, name, read, err := s.readNewestCondemned(ctx, func(name string) bool {
		s.mu.RLock()
		defer s.mu.RUnlock()
		return s.condemnedLoaded[name]
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !read || s.condemnedLoaded[name] {
		return nil
	}
	s.condemned = set
	s.condemnedLoaded = map[string]bool{name: true}
	return nil
}

// condemnedRecord is a condemned record being built, in its stored form
// (so that a store's millions of condemned copies are held once, at 72
// bytes each).
type condemnedRecord struct{ b []byte }

func newCondemnedRecord(sizeHint int) *condemnedRecord {
	b := make([]byte, 12, 12+sizeHint*condemnedEntry)
	copy(b, condemnedMagic)
	return &condemnedRecord{b}
}

// add adds a copy condemned at when (unix nanoseconds; 0: when the record
// is written).
func (r *condemnedRecord) add(c chunkCopy, when int64) {
	r.b = append(r.b, c.id[:]...)
	r.b = append(r.b, c.pack[:]...)
	r.b = binary.BigEndian.AppendUint64(r.b, uint64(when))
}

// recordEntries sorts a record's entries by chunk id and pack.
type recordEntries []byte

func (e recordEntries) Len() int { return len(e) / condemnedEntry }
func (e recordEntries) Less(i, j int) bool {
	const k = 2 * chunker.IDSize
	return bytes.Compare(e[i*condemnedEntry:i*condemnedEntry+k], e[j*condemnedEntry:j*condemnedEntry+k]) < 0
}
func (e recordEntries) Swap(i, j int) {
	var t [condemnedEntry]byte
	a, b := e[i*condemnedEntry:(i+1)*condemnedEntry], e[j*condemnedEntry:(j+1)*condemnedEntry]
	copy(t[:], a)
	copy(a, b)
	copy(b, t[:])
}

// writeCondemned writes the record, sorted by chunk id and pack; copies
// without a time are stamped with now.
func (s *Store) writeCondemned(ctx context.Context, now time.Time, r *condemnedRecord) (string, error) {
	b := r.b
	entries := recordEntries(b[12:])
	binary.BigEndian.PutUint32(b[8:12], uint32(entries.Len()))
	for i := range entries.Len() {
		t := entries[i*condemnedEntry+2*chunker.IDSize : (i+1)*condemnedEntry]
		if binary.BigEndian.Uint64(t) == 0 {
			binary.BigEndian.PutUint64(t, uint64(now.UnixNano()))
		}
	}
	sort.Sort(entries)
	name := condemnedPrefix + fmt.Sprintf("%020d", now.UnixNano())
	if err := s.be.PutIfAbsent(ctx, name, b); err != nil {
		return "", fmt.Errorf("gc: write condemned record: %w", err)
	}
	return name, nil
}

// condemnedSet is the entries of a condemned record as stored (chunk id,
// pack id, u64 unix nanoseconds: condemnedEntry bytes each), sorted by chunk
// id. Looked up in place, it costs its 72 bytes per copy and no more: gc and
// every writer hold the newest one, and a store may have millions of
// condemned copies.
type condemnedSet []byte

func decodeCondemned(b []byte) (condemnedSet, error) {
	if len(b) < 12 || string(b[:8]) != condemnedMagic {
		return nil, errors.New("not a condemned record")
	}
	n := binary.BigEndian.Uint32(b[8:12])
	if uint64(len(b)-12) != uint64(n)*condemnedEntry {
		return nil, fmt.Errorf("%d entries do not match %d bytes", n, len(b)-12)
	}
	set := condemnedSet(b[12:])
	for i := 1; i < set.len(); i++ {
		if bytes.Compare(set.id(i-1), set.id(i)) > 0 {
			return nil, fmt.Errorf("entry %d is out of order (damaged record)", i)
		}
	}
	return set, nil
}

func (c condemnedSet) len() int { return len(c) / condemnedEntry }

func (c condemnedSet) id(i int) []byte {
	return c[i*condemnedEntry : i*condemnedEntry+chunker.IDSize]
}

// at returns entry i.
func (c condemnedSet) at(i int) (chunkCopy, time.Time) {
	var cc chunkCopy
	e := c[i*condemnedEntry : (i+1)*condemnedEntry]
	copy(cc.id[:], e)
	copy(cc.pack[:], e[chunker.IDSize:])
	return cc, time.Unix(0, int64(binary.BigEndian.Uint64(e[2*chunker.IDSize:])))
}

// lookup returns when the copy was condemned, if it is.
func (c condemnedSet) lookup(cc chunkCopy) (time.Time, bool) {
	n := c.len()
	i := sort.Search(n, func(i int) bool { return bytes.Compare(c.id(i), cc.id[:]) >= 0 })
	for ; i < n && bytes.Equal(c.id(i), cc.id[:]); i++ {
		o := i*condemnedEntry + chunker.IDSize
		if bytes.Equal(c[o:o+chunker.IDSize], cc.pack[:]) {
			return time.Unix(0, int64(binary.BigEndian.Uint64(c[o+chunker.IDSize:]))), true
		}
	}
	return time.Time{}, false
}

// condemnedIndex is a condemned set with the first 8 bytes of each id in a
// slice of their own (8 bytes more per copy), so that gc, which asks about
// every chunk copy in the store, finds copies without comparing whole ids
// along a binary search.
type condemnedIndex struct {
	condemnedSet
	find keyIndex // of the ids' first 8 bytes, in order, as the set is
}

func newCondemnedIndex(c condemnedSet) *condemnedIndex {
	keys := make([]uint64, c.len())
	for i := range keys {
		keys[i] = binary.BigEndian.Uint64(c.id(i))
	}
	return &condemnedIndex{c, newKeyIndex(keys)}
}

// lookup is condemnedSet.lookup through the key index.
func (c *condemnedIndex) lookup(cc chunkCopy) (time.Time, bool) {
	i, ok := c.find.search(idKey(cc.id))
	if !ok {
		return time.Time{}, false
	}
	for ; i < c.len() && bytes.Equal(c.id(i), cc.id[:]); i++ {
		o := i*condemnedEntry + chunker.IDSize
		if bytes.Equal(c.condemnedSet[o:o+chunker.IDSize], cc.pack[:]) {
			return time.Unix(0, int64(binary.BigEndian.Uint64(c.condemnedSet[o+chunker.IDSize:]))), true
		}
	}
	return time.Time{}, false
}

// has is condemnedSet.has through the key index.
func (c *condemnedIndex) has(cc chunkCopy) bool {
	_, ok := c.lookup(cc)
	return ok
}

// hasID is condemnedSet.hasID through the key index.
func (c *condemnedIndex) hasID(id chunker.ID) bool {
	i, ok := c.find.search(idKey(id))
	for ; ok && i < c.len() && c.find.keys[i] == idKey(id); i++ {
		if bytes.Equal(c.id(i), id[:]) {
			return true
		}
	}
	return false
}

// hasID reports whether some copy of chunk id is condemned.
func (c condemnedSet) hasID(id chunker.ID) bool {
	n := c.len()
	i := sort.Search(n, func(i int) bool { return bytes.Compare(c.id(i), id[:]) >= 0 })
	return i < n && bytes.Equal(c.id(i), id[:])
}

func (c condemnedSet) has(cc chunkCopy) bool {
	_, ok := c.lookup(cc)
	return ok
}
