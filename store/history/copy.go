package history

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

// CopyOptions tunes Copy.
type CopyOptions struct {
	// Nodes are the nodes to copy (every node of the source when empty).
	Nodes []string
	// Progress, if not nil, is called as manifests are copied (done and
	// total count manifests of every node, those already in the
	// destination included).
	Progress Progress
}

// CopyResult is what Copy did, for the CLI's report and --json.
type CopyResult struct {
	// Mode is how chunks moved: CopyAsStored or CopyReencode; Reason says
	// why the stores need re-encoding, or what differs that does not.
	Mode   string     `json:"mode"`
	Reason string     `json:"reason,omitempty"`
	Nodes  []NodeCopy `json:"nodes"`
	// Totals over the nodes.
	Manifests        int   `json:"manifests_copied"`
	ManifestsSkipped int   `json:"manifests_skipped"`
	Chunks           int   `json:"chunks_copied"`
	ChunksSkipped    int   `json:"chunks_skipped"`
	Bytes            int64 `json:"bytes_added"`
	// ReadBack is the chunks read back from the destination and verified
	// before the manifests naming them were stored.
	ReadBack       int           `json:"chunks_verified"`
	JournalRecords int           `json:"journal_records_copied"`
	Duration       time.Duration `json:"duration_ns"`
}

// NodeCopy is what Copy did for one node.
type NodeCopy struct {
	Node string `json:"node"`
	// Manifests were stored in the destination; ManifestsSkipped were
	// there already (an earlier, maybe interrupted, copy).
	Manifests        int `json:"manifests_copied"`
	ManifestsSkipped int `json:"manifests_skipped"`
	// Chunks were uploaded; ChunksSkipped the destination had already.
	Chunks        int   `json:"chunks_copied"`
	ChunksSkipped int   `json:"chunks_skipped"`
	Bytes         int64 `json:"bytes_added"`
	ReadBack      int   `json:"chunks_verified"`
	// Newest is the newest manifest copied (or found) and JournalSeq the
	// last journal record it covers.
	Newest     uint64 `json:"newest_manifest"`
	JournalSeq uint64 `json:"journal_seq"`
	// JournalRecords is the records after Newest copied into the
	// destination's journal this run, JournalHeld those it holds after
	// Newest now (copied by this run or an earlier one).
	JournalRecords int `json:"journal_records_copied"`
	JournalHeld    int `json:"journal_records"`
	// Version and LastSeq are how far the copy reaches: the newest
	// data_version, and journal record, the destination now holds of the
	// node (the source may have received later changes since: a live
	// source is copied up to what was durable when it was read).
	Version uint32 `json:"data_version"`
	LastSeq uint64 `json:"last_seq"`
	// JournalNote, when set, says why the journal records after Newest
	// were not copied (the destination's journals cannot take them).
	JournalNote string `json:"journal_note,omitempty"`
}

// Copy copies nodes' histories from src to dst: the node record, every
// manifest dst lacks, the chunks they name that dst lacks (looked up in
// batches, uploaded in packs), and the journal records after the newest
// manifest. It is resumable: manifests dst holds are skipped (after
// checking they are the source's), chunks dst holds are not uploaded,
// and journal records are appended after those dst holds. A copy stopped
// at any point leaves dst consistent: a manifest is stored only after
// every chunk it names is durable in dst and was read back and verified,
// and journal records are appended in order (see copyJournal).
//
// The destination node must not be written meanwhile: Copy holds its lease
// (refusing, naming the holder, while a live writer has it). The source may
// be live: Copy reads what is durable there and retries when a compaction
// sealed the journal records it was reading.
func Copy(ctx context.Context, src, dst *store.Store, opts CopyOptions) (CopyResult, error) {
	start := time.Now()
	c := newCopier(src, dst)
	res := CopyResult{Mode: c.mode, Reason: c.reason}
	nodes := opts.Nodes
	if len(nodes) == 0 {
		var err error
		if nodes, err = src.Nodes(ctx); err != nil {
			return res, err
		}
		if len(nodes) == 0 {
			return res, fmt.Errorf("copy from %s: the store holds no node", src.Location())
		}
	}
	nodes = slices.Compact(slices.Sorted(slices.Values(nodes)))
	total, err := c.countManifests(ctx, nodes)
	if err != nil {
		return res, err
	}
	c.progress = func(done int64) { opts.Progress.report(done, total) }
	for _, node := range nodes {
		nc, err := c.copyNode(ctx, node)
		res.add(nc)
		if err != nil {
			res.Duration = time.Since(start)
			return res, fmt.Errorf("copy node %q from %s to %s: %w", node, src.Location(), dst.Location(), err)
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

func (r *CopyResult) add(nc NodeCopy) {
	r.Nodes = append(r.Nodes, nc)
	r.Manifests += nc.Manifests
	r.ManifestsSkipped += nc.ManifestsSkipped
	r.Chunks += nc.Chunks
	r.ChunksSkipped += nc.ChunksSkipped
	r.Bytes += nc.Bytes
	r.ReadBack += nc.ReadBack
	r.JournalRecords += nc.JournalRecords
}

// countManifests counts the manifests of nodes in the source, for the
// progress, and checks each node exists there before anything is written.
func (c *copier) countManifests(ctx context.Context, nodes []string) (int64, error) {
	var total int64
	for _, node := range nodes {
		if _, err := c.src.Node(ctx, node); err != nil {
			return 0, fmt.Errorf("copy node %q: %w", node, err)
		}
		seqs, err := c.src.ManifestSeqs(ctx, node)
		if err != nil {
			return 0, err
		}
		total += int64(len(seqs))
	}
	return total, nil
}

// errSourceMoved says the source's newest manifest changed while a node was
// copied (a live writer sealed or compacted): copy the new manifests, then
// the journal again.
var errSourceMoved = errors.New("the source node committed a manifest during the copy")

// copyNode copies one node under its lease in dst.
func (c *copier) copyNode(ctx context.Context, node string) (NodeCopy, error) {
	nc := NodeCopy{Node: node}
	info, err := c.src.Node(ctx, node)
	if err != nil {
		return nc, err
	}
	lease, err := keepLease(ctx, c.dst, node)
	if err != nil {
		return nc, fmt.Errorf("the destination node is in use: %w (stop its writer, or copy to another store)", err)
	}
	defer lease.release(context.Background())
	c.lease = lease
	if err := c.dst.CreateNode(ctx, info); err != nil && !errors.Is(err, store.ErrNodeExists) {
		return nc, err
	}
	// A live source may seal while its journal is read: copy the manifests
	// it committed meanwhile and read the journal again.
	const tries = 5
	base := c.done
	for try := 1; ; try++ {
		c.done = base
		if err := c.copyManifests(ctx, node, &nc); err != nil {
			return nc, err
		}
		err := c.copyJournal(ctx, node, &nc)
		if err == nil || try == tries || !(errors.Is(err, journal.ErrTrimmed) || errors.Is(err, errSourceMoved)) {
			return nc, err
		}
	}
}

// copyManifests stores, in order, every manifest of the source node that
// the destination lacks.
func (c *copier) copyManifests(ctx context.Context, node string, nc *NodeCopy) error {
	srcSeqs, err := c.src.ManifestSeqs(ctx, node)
	if err != nil {
		return err
	}
	if len(srcSeqs) == 0 {
		return fmt.Errorf("the node has no manifest in %s (run backup-cli verify on it)", c.src.Location())
	}
	dstSeqs, err := c.dst.ManifestSeqs(ctx, node)
	if err != nil {
		return err
	}
	if n := len(dstSeqs); n > 0 && dstSeqs[n-1] > srcSeqs[len(srcSeqs)-1] {
		return fmt.Errorf("the destination holds manifest %d, newer than the source's newest (%d): the node was written in %s since it was copied; copy to another store, or remove the node there first",
			dstSeqs[n-1], srcSeqs[len(srcSeqs)-1], c.dst.Location())
	}
	have := map[uint64]bool{}
	for _, s := range dstSeqs {
		have[s] = true
	}
	var prev *carried
	for _, seq := range srcSeqs {
		copyStep()
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := c.src.Manifest(ctx, node, seq)
		if err != nil {
			return err
		}
		if have[seq] {
			if err := c.checkCopied(ctx, m); err != nil {
				return err
			}
			nc.ManifestsSkipped++
			prev = nil // what the destination's copy names is not known here
		} else if prev, err = c.copyManifest(ctx, m, prev, nc); err != nil {
			return fmt.Errorf("manifest %d: %w", seq, err)
		}
		have[seq] = true
		nc.Newest, nc.JournalSeq, nc.Version = m.Seq, m.JournalSeq, m.LastVersion()
		nc.LastSeq = m.JournalSeq
		c.done++
		c.progress(c.done)
	}
	return nil
}

// checkCopied checks that the destination's manifest at m's seq is a copy
// of m (ids compared when they are the same in both stores), so that a
// resumed copy never mixes two histories under one node name.
func (c *copier) checkCopied(ctx context.Context, m *manifest.Manifest) error {
	d, err := c.dst.Manifest(ctx, m.Node, m.Seq)
	if err != nil {
		return err
	}
	same := d.Created.Equal(m.Created) && d.JournalSeq == m.JournalSeq && d.Snapshot.Version == m.Snapshot.Version &&
		d.Snapshot.Pages == m.Snapshot.Pages && d.Snapshot.PageSize == m.Snapshot.PageSize && len(d.Changes) == len(m.Changes)
	for i := 0; same && i < len(m.Changes); i++ {
		a, b := m.Changes[i], d.Changes[i]
		same = a.FirstSeq == b.FirstSeq && a.LastSeq == b.LastSeq && a.FirstVersion == b.FirstVersion && a.LastVersion == b.LastVersion &&
			a.Records == b.Records && (c.reencode || a.ID == b.ID)
	}
	if same && !c.reencode {
		same = slices.Equal(d.Snapshot.Lists, m.Snapshot.Lists) && slices.Equal(d.Snapshot.Patches, m.Snapshot.Patches)
	}
	if !same {
		return fmt.Errorf("the destination's manifest %d of node %q is not a copy of the source's: the two stores hold different histories under this name; copy to another store, or remove the node there first",
			m.Seq, m.Node)
	}
	return nil
}

// sameSnapshot reports whether two snapshots name the same page table.
func sameSnapshot(a, b manifest.Snapshot) bool {
	return a.Version == b.Version && a.PageSize == b.PageSize && a.Pages == b.Pages &&
		slices.Equal(a.Lists, b.Lists) && slices.Equal(a.Patches, b.Patches)
}

// idSet is a set of destination chunk ids, for the read-back.
type idSet map[chunker.ID]bool
