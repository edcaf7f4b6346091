package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
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
// A run also re-reads the manifests just before deleting.

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
	DeletedPacks   int   `json:"deleted_packs"`
	RepackedPacks  int   `json:"repacked_packs"`
	DeletedChunks  int   `json:"deleted_chunks"`
	ReclaimedBytes int64 `json:"reclaimed_bytes"`
	RewrittenBytes int64 `json:"rewritten_bytes"`
	// Kept, by reason.
	YoungChunks     int           `json:"kept_young_chunks"`
	NewlyCondemned  int           `json:"newly_condemned_chunks"`
	WaitingChunks   int           `json:"kept_condemned_chunks"`
	BlockedChunks   int           `json:"kept_dead_chunks_in_live_packs"`
	RescuedChunks   int           `json:"rescued_chunks"`
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
		fmt.Sprintf("%srepacked: %d packs (%s of live chunks rewritten)", verb, r.RepackedPacks, fmtBytes(r.RewrittenBytes)),
		fmt.Sprintf("kept: %d chunks younger than the grace period (%s)", r.YoungChunks, r.Grace),
		fmt.Sprintf("kept: %d unreferenced chunks %scondemned now, %d condemned less than the grace period ago (deleted by a later gc)", r.NewlyCondemned, verb, r.WaitingChunks),
		fmt.Sprintf("kept: %d unreferenced chunks in packs that are mostly live; %d condemned chunks referenced again (rescued)", r.BlockedChunks, r.RescuedChunks),
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

// packState is what gc knows of one pack.
type packState struct {
	id        chunker.ID
	index     string
	size      int64
	young     bool
	entries   []indexEntry
	live      []bool
	liveBytes int64
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
	live := map[chunker.ID]struct{}{}
	seen := map[string]bool{}
	if err := s.mark(ctx, live, seen, &rep); err != nil {
		return rep, err
	}
	prev, _, err := s.newestCondemned(ctx)
	if err != nil {
		return rep, err
	}
	packs, orphans, err := s.scanPacks(ctx, now, opts.Grace)
	if err != nil {
		return rep, err
	}
	// Re-read the manifests just before deciding: one committed since the
	// mark may name chunks we are about to condemn or delete.
	before := rep.Manifests
	if err := s.mark(ctx, live, seen, &rep); err != nil {
		return rep, err
	}
	rep.RecheckedAdded = rep.Manifests - before
	rep.LiveChunks = len(live)

	rep.Packs = len(packs)
	// A live chunk whose condemned copy has a fresh copy elsewhere (a writer
	// stored it again rather than reuse the condemned one) needs only the
	// fresh copy: the condemned one goes on its way to deletion.
	fresh := map[chunker.ID]bool{}
	for c := range prev {
		if _, ok := live[c.id]; ok {
			fresh[c.id] = false
		}
	}
	for _, p := range packs {
		for _, e := range p.entries {
			if _, watched := fresh[e.ID]; watched {
				if _, condemned := prev[chunkCopy{e.ID, p.id}]; !condemned {
					fresh[e.ID] = true
				}
			}
		}
	}
	pending := map[chunkCopy]time.Time{}
	var deletes, repacks []*packState
	for i, p := range packs {
		if opts.Progress != nil {
			opts.Progress(int64(i+1), int64(len(packs)))
		}
		rep.StoredChunks += len(p.entries)
		p.live = make([]bool, len(p.entries))
		eligible, blocked := 0, 0
		var deadBytes int64
		for k, e := range p.entries {
			c := chunkCopy{e.ID, p.id}
			when, wasCondemned := prev[c]
			if _, ok := live[e.ID]; ok && !(wasCondemned && fresh[e.ID]) {
				p.live[k] = true
				p.liveBytes += int64(e.Length)
				if wasCondemned {
					rep.RescuedChunks++
				}
				continue
			}
			switch {
			case p.young:
				rep.YoungChunks++
				blocked++
			case !wasCondemned:
				pending[c] = now
				rep.NewlyCondemned++
				blocked++
			case now.Sub(when) < opts.Grace:
				pending[c] = when
				rep.WaitingChunks++
				blocked++
			default:
				eligible++
				deadBytes += int64(e.Length)
			}
		}
		switch {
		case eligible == 0:
		case eligible == len(p.entries):
			deletes = append(deletes, p)
			rep.DeletedChunks += eligible
			rep.ReclaimedBytes += p.size
		case blocked == 0 && float64(p.liveBytes) < opts.RepackBelow*float64(p.liveBytes+deadBytes):
			repacks = append(repacks, p)
			rep.DeletedChunks += eligible
			rep.ReclaimedBytes += p.size - p.liveBytes
			rep.RewrittenBytes += p.liveBytes
		default:
			// Dead chunks wait in a mostly live pack; they stay
			// condemned so a later run can repack the pack.
			for k, e := range p.entries {
				if c := (chunkCopy{e.ID, p.id}); !p.live[k] {
					if when, ok := prev[c]; ok {
						pending[c] = when
					}
				}
			}
			rep.BlockedChunks += eligible
		}
	}
	for _, o := range orphans {
		deletes = append(deletes, o)
		rep.ReclaimedBytes += o.size
	}
	rep.DeletedPacks, rep.RepackedPacks = len(deletes), len(repacks)
	if opts.DryRun {
		return rep, nil
	}
	// The new condemned record first: writers must see it before we act.
	name, err := s.writeCondemned(ctx, now, pending)
	if err != nil {
		return rep, err
	}
	rep.CondemnedRecord = name
	for _, p := range repacks {
		if err := s.repack(ctx, p); err != nil {
			return rep, err
		}
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

// mark adds the chunks named by every manifest not yet in seen to live.
func (s *Store) mark(ctx context.Context, live map[chunker.ID]struct{}, seen map[string]bool, rep *GCReport) error {
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
			if err := s.markManifest(ctx, m, live); err != nil {
				return fmt.Errorf("gc: manifest %d of node %q: %w", seq, node, err)
			}
		}
	}
	return nil
}

func (s *Store) markManifest(ctx context.Context, m *manifest.Manifest, live map[chunker.ID]struct{}) error {
	for _, c := range m.Changes {
		live[c.ID] = struct{}{}
	}
	for _, id := range m.Snapshot.Lists {
		if _, done := live[id]; done {
			continue // lists shared by manifests are read once
		}
		data, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		ids, err := manifest.DecodeList(data)
		if err != nil {
			return fmt.Errorf("list chunk %s: %w", id, err)
		}
		for _, p := range ids {
			live[p] = struct{}{}
		}
		live[id] = struct{}{}
	}
	for _, id := range m.Snapshot.Patches {
		if _, done := live[id]; done {
			continue
		}
		data, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		p, err := manifest.DecodePatch(data)
		if err != nil {
			return fmt.Errorf("patch chunk %s: %w", id, err)
		}
		for _, e := range p.Entries {
			live[e.ID] = struct{}{}
		}
		live[id] = struct{}{}
	}
	return nil
}

// scanPacks reads every index and pairs it with its pack's age and size.
// orphans are packs older than the grace period that no index names (a
// writer died between writing a pack and its index).
func (s *Store) scanPacks(ctx context.Context, now time.Time, grace time.Duration) (packs, orphans []*packState, err error) {
	infos := map[chunker.ID]backend.Info{}
	err = s.be.List(ctx, "packs/", func(in backend.Info) error {
		if id, err := chunker.ParseID(in.Name[strings.LastIndexByte(in.Name, '/')+1:]); err == nil {
			infos[id] = in
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("gc: list packs: %w", err)
	}
	indexed := map[chunker.ID]bool{}
	err = s.be.List(ctx, "index/", func(in backend.Info) error {
		data, err := s.be.Get(ctx, in.Name, 0, -1)
		if err != nil {
			return err
		}
		if chunker.Sum(data).String() != in.Name[strings.LastIndexByte(in.Name, '/')+1:] {
			return fmt.Errorf("index %s is damaged (content does not match its name): run backup-cli verify", in.Name)
		}
		pack, entries, err := decodeIndex(data, -1)
		if err != nil {
			return fmt.Errorf("index %s: %w", in.Name, err)
		}
		pi, ok := infos[pack]
		if !ok {
			return fmt.Errorf("index %s names pack %s, which is missing: run backup-cli verify", in.Name, pack)
		}
		young := now.Sub(pi.ModTime) < grace || now.Sub(in.ModTime) < grace
		packs = append(packs, &packState{id: pack, index: in.Name, size: pi.Size, young: young, entries: entries})
		indexed[pack] = true
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("gc: %w", err)
	}
	for id, in := range infos {
		if !indexed[id] && now.Sub(in.ModTime) >= grace {
			orphans = append(orphans, &packState{id: id, size: in.Size})
		}
	}
	return packs, orphans, nil
}

// repack writes a pack's live chunks to a new pack (durably, with its index)
// and then deletes the old index and pack.
func (s *Store) repack(ctx context.Context, p *packState) error {
	old, err := s.be.Get(ctx, packName(p.id), 0, -1)
	if err != nil {
		return fmt.Errorf("gc: repack %s: %w", p.id.Short(), err)
	}
	w, err := s.NewWriter(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	for k, e := range p.entries {
		if !p.live[k] {
			continue
		}
		info := ChunkInfo{Pack: p.id, Kind: e.Kind, Offset: e.Offset, Length: e.Length, Raw: e.Raw}
		data, err := s.decodeInto(nil, e.ID, info, old[e.Offset:e.Offset+e.Length])
		if err != nil {
			return fmt.Errorf("gc: repack: %w", err)
		}
		w.putAlways(e.Kind, e.ID, data)
	}
	if err := w.Flush(ctx); err != nil {
		return fmt.Errorf("gc: repack %s: %w", p.id.Short(), err)
	}
	return s.deletePack(ctx, p)
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
func (s *Store) newestCondemned(ctx context.Context) (map[chunkCopy]time.Time, string, error) {
	var newest string
	err := s.be.List(ctx, condemnedPrefix, func(in backend.Info) error {
		if in.Name > newest {
			newest = in.Name
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list condemned records: %w", err)
	}
	if newest == "" {
		return map[chunkCopy]time.Time{}, "", nil
	}
	data, err := s.be.Get(ctx, newest, 0, -1)
	if err != nil {
		return nil, "", fmt.Errorf("read condemned record %s: %w", newest, err)
	}
	m, err := decodeCondemned(data)
	if err != nil {
		return nil, "", fmt.Errorf("condemned record %s: %w", newest, err)
	}
	return m, newest, nil
}

// loadCondemned makes writers of this Store see the newest condemned record.
func (s *Store) loadCondemned(ctx context.Context) error {
	m, name, err := s.newestCondemned(ctx)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "" || s.condemnedLoaded[name] {
		return nil
	}
	s.condemned = m
	s.condemnedLoaded = map[string]bool{name: true}
	return nil
}

func (s *Store) writeCondemned(ctx context.Context, now time.Time, set map[chunkCopy]time.Time) (string, error) {
	b := make([]byte, 0, 12+len(set)*condemnedEntry)
	b = append(b, condemnedMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(set)))
	keys := make([]chunkCopy, 0, len(set))
	for c := range set {
		keys = append(keys, c)
	}
	sort.Slice(keys, func(i, j int) bool { return string(keys[i].id[:]) < string(keys[j].id[:]) })
	for _, c := range keys {
		b = append(b, c.id[:]...)
		b = append(b, c.pack[:]...)
		b = binary.BigEndian.AppendUint64(b, uint64(set[c].UnixNano()))
	}
	name := condemnedPrefix + fmt.Sprintf("%020d", now.UnixNano())
	if err := s.be.PutIfAbsent(ctx, name, b); err != nil {
		return "", fmt.Errorf("gc: write condemned record: %w", err)
	}
	return name, nil
}

func decodeCondemned(b []byte) (map[chunkCopy]time.Time, error) {
	if len(b) < 12 || string(b[:8]) != condemnedMagic {
		return nil, errors.New("not a condemned record")
	}
	n := binary.BigEndian.Uint32(b[8:12])
	if uint64(len(b)-12) != uint64(n)*condemnedEntry {
		return nil, fmt.Errorf("%d entries do not match %d bytes", n, len(b)-12)
	}
	m := make(map[chunkCopy]time.Time, n)
	for i := 0; i < int(n); i++ {
		o := 12 + i*condemnedEntry
		var c chunkCopy
		copy(c.id[:], b[o:])
		copy(c.pack[:], b[o+chunker.IDSize:])
		m[c] = time.Unix(0, int64(binary.BigEndian.Uint64(b[o+2*chunker.IDSize:])))
	}
	return m, nil
}
