package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clnbackup/backup/internal/memlimit"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/journal"
)

// DefaultNode is the node name used when none is given. It is fixed so that
// a store made with the defaults is always addressed the same way.
const DefaultNode = "default"

// maxChangeChunk bounds the raw size of one sealed change chunk.
const maxChangeChunk = 256 << 10

// Init adds a node to the store and writes its first restore point: a
// snapshot of the database at dbPath, or an empty database when dbPath is
// "". The snapshot is taken from a private copy made next to dbPath, never
// by writing the node's files: SQLite's online backup API (page-identical
// to the original), or, when lightningd left the database with a hot
// rollback journal, a byte copy of both rolled back to the last commit.
//
// The copy is made before the node is added, so that a database init
// cannot read leaves no node behind. It refuses a node name already in
// use, except to finish an init that stopped before writing any manifest
// (a failure after the node was added says to run init again).
func Init(ctx context.Context, st *store.Store, node, dbPath string, progress Progress) (*manifest.Manifest, error) {
	var dbCopy string
	var version uint32
	if dbPath != "" {
		tmpDir, err := os.MkdirTemp(filepath.Dir(dbPath), ".backup-init-*")
		if err != nil {
			return nil, fmt.Errorf("init node %q: private directory for a copy of %s: %w", node, dbPath, err)
		}
		defer os.RemoveAll(tmpDir)
		if dbCopy, err = copyNodeDatabase(ctx, dbPath, tmpDir); err != nil {
			return nil, fmt.Errorf("init node %q: copy %s: %w (no node was added: fix the cause and run init again)", node, dbPath, err)
		}
		if version, _, err = replay.DataVersionOf(dbCopy); err != nil {
			return nil, fmt.Errorf("init node %q: read data_version of %s: %w (no node was added: fix the cause and run init again)", node, dbPath, err)
		}
	}
	host, _ := os.Hostname()
	err := st.CreateNode(ctx, store.NodeInfo{Name: node, Created: st.Now().UTC(), Host: host})
	if errors.Is(err, store.ErrNodeExists) {
		seqs, lerr := st.ManifestSeqs(ctx, node)
		if lerr != nil || len(seqs) > 0 {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	// From here the node exists without a restore point until Commit.
	unfinished := func(err error) error {
		return fmt.Errorf("init node %q: %w; the node is in the store without a restore point: run init again with the same arguments to finish it", node, err)
	}
	// Init writes the node's first manifest, so it holds the node's lease
	// like every writer: gc --exclusive, which takes every node's lease,
	// must not run while a new node's chunks are being looked up.
	lease, err := keepLease(ctx, st, node)
	if err != nil {
		return nil, unfinished(err)
	}
	defer lease.release(context.Background())
	w, err := st.NewWriter(ctx)
	if err != nil {
		return nil, unfinished(err)
	}
	defer w.Close()
	w.Fence(lease.check)
	snap := manifest.Snapshot{}
	if dbCopy != "" {
		if snap, err = snapshotFile(ctx, w, st, dbCopy, version, nil, nil, 0, progress); err != nil {
			return nil, unfinished(err)
		}
	}
	m := &manifest.Manifest{Format: manifest.FormatVersion, Node: node, Seq: 1, Created: st.Now().UTC(), Snapshot: snap}
	if _, err := w.Commit(ctx, m); err != nil {
		return nil, unfinished(err)
	}
	return m, nil
}

// Node is the writer of one node's history: it holds the node's journal
// open (exclusively) and seals and compacts it. Appends go straight to
// Journal(); Seal and Compact may run concurrently with them.
type Node struct {
	st      *store.Store
	name    string
	j       store.Journal
	compact sync.Mutex
	// TempDir is where compaction builds databases (os.TempDir() if "",
	// or CacheDir when that is set).
	TempDir string
	// CacheDir, when set, is where compaction keeps the database of the
	// snapshot it last committed (CacheDir/<node>.snapshot), so that the
	// next compaction fetches from the store only the pages that file lacks
	// or holds wrong (each page is checked against the snapshot's page ids).
	// A missing or damaged cache costs fetches, never a failed compaction.
	// The directory is created (0700) if missing.
	CacheDir string

	lease *keptLease
}

// OpenNode opens a node of the store for writing. It takes the node's lease
// (failing with store.ErrLeaseHeld, naming the holder, while another live
// writer has it) and keeps it refreshed until Close; then it opens the
// node's journal exclusively.
func OpenNode(ctx context.Context, st *store.Store, name string) (*Node, error) {
	if _, err := st.Node(ctx, name); err != nil {
		return nil, err
	}
	lease, err := keepLease(ctx, st, name)
	if err != nil {
		return nil, err
	}
	j, err := st.OpenJournal(ctx, name)
	if err != nil {
		lease.release(ctx)
		return nil, err
	}
	return &Node{st: st, name: name, j: j, lease: lease}, nil
}

// LeaseErr is non-nil once the node's lease was lost: another writer may be
// writing the node, so this one must stop. It is cheap (an atomic load), for
// the db_write hot path.
func (n *Node) LeaseErr() error { return n.lease.err() }

// Name is the node's name.
func (n *Node) Name() string { return n.name }

// Journal is the node's journal, for appends.
func (n *Node) Journal() store.Journal { return n.j }

// Close closes the journal.
func (n *Node) Close() error {
	err := n.j.Close()
	if lerr := n.lease.release(context.Background()); err == nil {
		err = lerr
	}
	return err
}

// SealResult describes a seal or a compaction.
type SealResult struct {
	// Manifest is the new restore point (nil when there was nothing to do).
	Manifest *manifest.Manifest
	// Records is the number of journal records sealed.
	Records int
	// Added is the bytes added to the store.
	Added    int64
	Duration time.Duration
}

// sealable returns the last journal record seq that may be sealed: every
// record except the trailing group with the newest data_version, which a
// rewind (lightningd re-sending that version) could still replace.
func (n *Node) sealable(after uint64) (cut uint64, count int, err error) {
	last, ok := n.j.Last()
	if !ok {
		return after, 0, nil
	}
	cut = after
	err = n.j.Records(after, func(r journal.Record) error {
		if r.Seq <= last.Seq && r.Version != last.Version {
			cut = r.Seq
			count++
		}
		return nil
	})
	return cut, count, err
}

// Seal writes the journal records that can no longer be rewound as change
// chunks and commits them in a new manifest on the newest snapshot.
func (n *Node) Seal(ctx context.Context) (SealResult, error) {
	n.compact.Lock()
	defer n.compact.Unlock()
	latest, err := n.st.LatestManifest(ctx, n.name)
	if err != nil {
		return SealResult{}, err
	}
	return n.seal(ctx, latest)
}

func (n *Node) seal(ctx context.Context, latest *manifest.Manifest) (SealResult, error) {
	start := time.Now()
	cut, count, err := n.sealable(latest.JournalSeq)
	if err != nil {
		return SealResult{}, fmt.Errorf("seal node %q: %w", n.name, err)
	}
	if count == 0 {
		return SealResult{}, nil
	}
	w, err := n.st.NewWriter(ctx)
	if err != nil {
		return SealResult{}, err
	}
	defer w.Close()
	w.Fence(n.lease.check)
	m := *latest
	m.Seq, m.Created = latest.Seq+1, n.st.Now().UTC()
	m.Changes = append([]manifest.ChangeRef(nil), latest.Changes...)
	var batch []journal.Record
	size := 0
	flushBatch := func() error {
		if len(batch) == 0 {
			return nil
		}
		id, _, err := w.Put(ctx, chunk.KindChange, journal.EncodeChunk(batch))
		if err != nil {
			return err
		}
		m.Changes = append(m.Changes, manifest.ChangeRef{ID: id, FirstSeq: batch[0].Seq, LastSeq: batch[len(batch)-1].Seq,
			FirstVersion: batch[0].Version, LastVersion: batch[len(batch)-1].Version, Records: len(batch)})
		batch, size = nil, 0
		return nil
	}
	err = n.j.Records(latest.JournalSeq, func(r journal.Record) error {
		if r.Seq > cut {
			return nil
		}
		rs := 32
		for _, s := range r.Statements {
			rs += len(s) + 4
		}
		if size+rs > maxChangeChunk {
			if err := flushBatch(); err != nil {
				return err
			}
		}
		batch = append(batch, r)
		size += rs
		return nil
	})
	if err == nil {
		err = flushBatch()
	}
	m.JournalSeq = cut
	if err == nil {
		_, err = w.Commit(ctx, &m)
	}
	if err != nil {
		return SealResult{}, fmt.Errorf("seal node %q: %w", n.name, err)
	}
	return SealResult{Manifest: &m, Records: count, Added: m.Stats.AddedBytes, Duration: time.Since(start)}, nil
}

// CompactResult describes a compaction.
type CompactResult struct {
	// Sealed is the seal that preceded the new snapshot (zero if none).
	Sealed SealResult
	// Manifest is the new snapshot's restore point; nil when there was
	// nothing to compact.
	Manifest *manifest.Manifest
	// Added is the bytes the whole compaction added to the store.
	Added int64
	// Fetched is the bytes of pages read from the store to rebuild the
	// previous snapshot: all of it without a cache; with a cache, only the
	// pages the cache lacked or held wrong.
	Fetched int64
	// CacheUsed is true when a cached copy of the previous snapshot was the
	// base of the rebuild; Reused is the bytes of its pages that matched the
	// snapshot's page ids and were kept.
	CacheUsed bool
	Reused    int64
	// CacheProven is true when the cache's proof vouched for it, so that
	// it was neither hashed page by page nor integrity-checked.
	CacheProven bool
	// CacheErr says why the new snapshot could not be kept as the cache
	// (the next compaction then fetches more); nil when it was, or when
	// there is no CacheDir.
	CacheErr error
	// ProofErr says why the kept cache has no proof (the next compaction
	// then checks it in full).
	ProofErr error
	Duration time.Duration
	// Phases is where Duration went, in order: an operator (or a
	// benchmark) sees which part of a slow compaction was slow.
	Phases []Phase
}

// Phase is one part of a compaction and how long it took.
type Phase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// phaseClock records the phases of a compaction into res.
type phaseClock struct {
	res  *CompactResult
	last time.Time
}

// done ends the phase name, begun when the previous one ended.
func (c *phaseClock) done(name string) {
	now := time.Now()
	d := now.Sub(c.last)
	c.res.Phases = append(c.res.Phases, Phase{Name: name, Seconds: d.Seconds()})
	c.last = now
}

// PhaseSummary is "seal 0.12s, replay 1.3s, ...".
func PhaseSummary(ps []Phase) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", p.Name, time.Duration(p.Seconds*float64(time.Second)).Round(time.Millisecond))
	}
	return b.String()
}

// Compact seals the journal and then writes a new snapshot at the newest
// sealed data_version: it rebuilds the database from the store (previous
// snapshot plus changes, never from the live database), checks it, and
// stores it reusing every page already stored. With CacheDir, the previous
// snapshot's pages are taken from the cached file where they hash to the
// page ids the store names, and only the others are fetched. Journal
// segments the new manifest covers are removed. It runs while appends
// continue.
func (n *Node) Compact(ctx context.Context, progress Progress) (CompactResult, error) {
	n.compact.Lock()
	defer n.compact.Unlock()
	start := time.Now()
	latest, err := n.st.LatestManifest(ctx, n.name)
	if err != nil {
		return CompactResult{}, err
	}
	var res CompactResult
	clock := &phaseClock{res: &res, last: start}
	if res.Sealed, err = n.seal(ctx, latest); err != nil {
		return res, err
	}
	clock.done("seal")
	if res.Sealed.Manifest != nil {
		latest = res.Sealed.Manifest
	}
	if len(latest.Changes) == 0 {
		return res, nil // the newest restore point is a snapshot already
	}
	m, err := n.snapshotFrom(ctx, latest, &res, clock, progress)
	if err != nil {
		return res, fmt.Errorf("compact node %q: %w", n.name, err)
	}
	if err := n.j.Trim(m.JournalSeq); err != nil {
		return res, fmt.Errorf("compact node %q: trim journal: %w", n.name, err)
	}
	clock.done("trim journal")
	res.Manifest = m
	res.Added = res.Sealed.Added + m.Stats.AddedBytes
	res.Duration = time.Since(start)
	return res, nil
}

// snapshotFrom rebuilds the database of restore point from (its snapshot
// plus its changes) and commits it as the next manifest's snapshot. It fills
// res's Fetched, CacheUsed, CacheProven, Reused and CacheErr.
//
// The rebuild starts from the cache when there is one: as is when its proof
// vouches for it (cacheproof.go), else after hashing every page against the
// snapshot's page table and fetching those that differ, and then PRAGMA
// integrity_check once the changes are applied. Either way the file holds
// exactly the previous snapshot before the replay, so only the pages the
// replay wrote are hashed for the new snapshot.
func (n *Node) snapshotFrom(ctx context.Context, from *manifest.Manifest, res *CompactResult, clock *phaseClock, progress Progress) (*manifest.Manifest, error) {
	c := n.openCache()
	tmpName, err := c.temp(n.TempDir)
	if err != nil {
		return nil, fmt.Errorf("temporary database: %w", err)
	}
	defer func() {
		removeDatabase(tmpName) // gone already when it became the cache
	}()
	var prevTab manifest.PageTable
	var prevChain int64
	var proof cacheProof
	if from.Snapshot.Pages > 0 {
		// Held to the end: the previous table, the set of its chunks
		// the writer assumes stored, and the new table. Reserved before
		// the table is read, so that reading it does not run the
		// collector without pause (its size is bounded when read).
		defer memlimit.Reserve(3 * int64(from.Snapshot.Pages) * chunker.IDSize)()
		if prevTab, prevChain, err = loadPageTableChain(ctx, n.st, from.Snapshot); err != nil {
			return nil, err
		}
		proof, res.CacheProven = c.claim(from.Snapshot, prevTab)
		// The cache becomes the base (moved: from here on, whatever
		// happens, it is either the new snapshot or gone).
		res.CacheUsed = c.take(tmpName)
		res.CacheProven = res.CacheProven && res.CacheUsed && stillTaken(tmpName, proof)
	}
	clock.done("page table and cache proof")
	if err := rebuildBase(ctx, n.st, tmpName, from.Snapshot, prevTab, res, scaled(progress, 0, 2)); err != nil {
		return nil, err
	}
	clock.done("previous snapshot")
	version, changed, err := replayTracked(ctx, n.st, from, tmpName)
	if err != nil {
		return nil, err
	}
	clock.done("replay")
	if v, ok, err := replay.DataVersionOf(tmpName); err != nil {
		return nil, err
	} else if ok && v != version {
		return nil, fmt.Errorf("rebuilt database has data_version %d but its last change is %d: the store's history is inconsistent; run backup-cli verify", v, version)
	}
	if !res.CacheProven {
		if err := replay.IntegrityCheck(tmpName); err != nil {
			return nil, fmt.Errorf("rebuilt database fails the integrity check: %w", err)
		}
		clock.done("integrity check")
	}
	w, err := n.st.NewWriter(ctx)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	w.Fence(n.lease.check)
	// The pages and lists of the node's newest manifest are stored and kept.
	w.Assume(liveIn(from.Snapshot, prevTab))
	snap, tab, err := snapshotTracked(ctx, w, n.st, tmpName, version, &from.Snapshot, prevTab, prevChain, changed, scaled(progress, 1, 2))
	if err != nil {
		return nil, err
	}
	clock.done("store pages")
	m := &manifest.Manifest{Format: manifest.FormatVersion, Node: n.name, Seq: from.Seq + 1, Created: n.st.Now().UTC(),
		Snapshot: snap, JournalSeq: from.JournalSeq}
	if _, err := w.Commit(ctx, m); err != nil {
		return nil, err
	}
	clock.done("commit")
	// The file is now exactly the committed snapshot's pages.
	if res.CacheErr = c.keep(tmpName); res.CacheErr == nil && tab != nil {
		trusted := uint32(0) // checked in full just now
		if res.CacheProven {
			trusted = proof.trusted + 1
		}
		res.ProofErr = c.vouch(snap, tab, trusted)
	}
	clock.done("keep cache")
	return m, nil
}

// rebuildBase makes the file at tmpName hold exactly snapshot s (page table
// tab): kept as is when res.CacheProven, else checked page by page (a
// cache) or written whole, from the store.
func rebuildBase(ctx context.Context, st *store.Store, tmpName string, s manifest.Snapshot, tab manifest.PageTable, res *CompactResult, progress Progress) error {
	if res.CacheProven {
		res.Reused = s.Size()
		progress.report(s.Size(), s.Size())
		return nil
	}
	tmp, err := os.OpenFile(tmpName, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("temporary database: %w", err)
	}
	if s.Pages > 0 {
		res.Fetched, res.Reused, err = writePages(ctx, st, tmp, s, tab, res.CacheUsed, progress)
	} else {
		err = tmp.Truncate(0)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	return err
}

// liveIn returns a lookup of the chunks a snapshot names: its pages (tab),
// list chunks and patch chunks.
func liveIn(s manifest.Snapshot, tab manifest.PageTable) func(chunker.ID) bool {
	ids := make([]chunker.ID, 0, len(tab)+len(s.Lists)+len(s.Patches))
	ids = append(append(append(ids, tab...), s.Lists...), s.Patches...)
	slices.SortFunc(ids, func(a, b chunker.ID) int { return bytes.Compare(a[:], b[:]) })
	ids = slices.Compact(ids)
	return func(id chunker.ID) bool {
		_, ok := slices.BinarySearchFunc(ids, id, func(a, b chunker.ID) int { return bytes.Compare(a[:], b[:]) })
		return ok
	}
}

// scaled maps a step's progress into part i of n equal parts of the whole.
func scaled(p Progress, i, n int64) Progress {
	if p == nil {
		return nil
	}
	return func(done, total int64) {
		if total > 0 {
			p(i*total+done, n*total)
		}
	}
}
