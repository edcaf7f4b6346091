package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/journal"
	"github.com/clnbackup/backup/store/packs"
)

// RestorePoint names what a problem breaks: one manifest of a node, or the
// node's newest state (its newest manifest plus the journal after it, what
// a plain restore gives).
type RestorePoint struct {
	Node     string `json:"node"`
	Manifest uint64 `json:"manifest,omitempty"`
	Newest   bool   `json:"newest_state,omitempty"`
}

// String names the restore point for people: "alice manifest 3" or
// "alice newest state".
func (r RestorePoint) String() string {
	if r.Newest {
		return r.Node + " newest state"
	}
	return fmt.Sprintf("%s manifest %d", r.Node, r.Manifest)
}

// VerifyProblem is one thing found broken and the restore points it breaks.
type VerifyProblem struct {
	// Object is the store object at fault (a pack, an index, a manifest,
	// a journal) or "chunk <id>" for a chunk no index knows.
	Object  string `json:"object"`
	Problem string `json:"problem"`
	// Affects lists the broken restore points, sorted; empty when the
	// problem breaks none (e.g. damaged chunks no manifest names).
	Affects []RestorePoint `json:"affects"`
	// Chunks are the first unreadable chunks (at most maxListedChunks);
	// ChunkCount is how many there are in all.
	Chunks     []chunker.ID `json:"chunks,omitempty"`
	ChunkCount int          `json:"chunk_count,omitempty"`
}

const maxListedChunks = 20

// VerifyOptions choose what Verify checks.
type VerifyOptions struct {
	// Node limits the check to one node's restore points and journal ("":
	// every node). Index objects are checked in any case.
	Node string
	// ReadData reads packs back: the whole pack is checked against its name
	// and every chunk in it decompressed and re-hashed.
	ReadData bool
	// Percent of the packs to read with ReadData (deterministic, chosen by
	// pack id; 0 means 100). With Node, only packs holding that node's
	// chunks are candidates.
	Percent float64
	// Progress, if set, is told how far each stage is: "index" and
	// "manifests" count objects, "read" counts bytes.
	Progress func(stage string, done, total int64)
}

// VerifyReport is what Verify checked and what it found.
type VerifyReport struct {
	Store string `json:"store"`
	Nodes int    `json:"nodes"`
	// Manifests counts the manifests checked, readable or not.
	Manifests int `json:"manifests"`
	// Indexes, Packs, Chunks and UnindexedPacks are as in packs.IndexReport.
	Indexes        int `json:"indexes"`
	Packs          int `json:"packs"`
	Chunks         int `json:"chunks"`
	UnindexedPacks int `json:"unindexed_packs"`
	// Journals counts the journals read; JournalRecords their records after
	// each node's newest manifest.
	Journals       int `json:"journals"`
	JournalRecords int `json:"journal_records"`
	// ReadData is set when packs were read back.
	ReadData *packs.VerifyPacksReport `json:"read_data,omitempty"`
	Problems []VerifyProblem          `json:"problems"`
}

// OK reports whether nothing is broken.
func (r VerifyReport) OK() bool { return len(r.Problems) == 0 }

// Verify checks the store without changing it: every index object against
// its name and its pack; every manifest of every node (or of opts.Node)
// decodes, and every chunk it names (list, patch and change chunks, and the
// pages of its snapshot as its lists and patches give them) is in the index
// in a pack that exists; list, patch and change chunks are read, which
// re-hashes them; each node's journal is read. With ReadData it reads packs
// back. Every problem is reported with the restore points it breaks; a
// damaged manifest or journal is reported, not fatal. The error is for a
// store that cannot be listed or read at all.
//
// It may run while the plugins write and while forget runs: manifests are
// listed before the index is loaded, so every chunk a listed manifest names
// is in an index already written, and a manifest deleted meanwhile is
// skipped.
func Verify(ctx context.Context, st *store.Store, opts VerifyOptions) (VerifyReport, error) {
	rep := VerifyReport{Store: st.Location(), Problems: []VerifyProblem{}}
	stage := func(name string) func(done, total int64) {
		if opts.Progress == nil {
			return nil
		}
		return func(done, total int64) { opts.Progress(name, done, total) }
	}
	nodes := []string{opts.Node}
	if opts.Node != "" {
		if _, err := st.Node(ctx, opts.Node); err != nil {
			return rep, err
		}
	} else {
		var err error
		if nodes, err = st.Nodes(ctx); err != nil {
			return rep, err
		}
	}
	rep.Nodes = len(nodes)
	seqs := map[string][]uint64{}
	total := 0
	for _, n := range nodes {
		s, err := st.ManifestSeqs(ctx, n)
		if err != nil {
			return rep, err
		}
		seqs[n] = s
		total += len(s)
	}
	packs, err := st.Packs("verify")
	if err != nil {
		return rep, err
	}
	ir, err := packs.VerifyIndex(ctx, stage("index"))
	if err != nil {
		return rep, err
	}
	index, err := packs.LoadIndex(ctx) // loaded by VerifyIndex from the sound indexes
	if err != nil {
		return rep, err
	}
	rep.Indexes, rep.Packs, rep.Chunks, rep.UnindexedPacks = ir.Indexes, ir.Packs, ir.Chunks, ir.UnindexedPacks
	v := &verifier{ctx: ctx, st: st, packs: packs, index: index, bad: map[chunker.ID]int{}}
	for _, p := range ir.Problems {
		v.addStoreProblem(p)
	}

	w, err := v.walkManifests(nodes, seqs, total, opts.ReadData && opts.Node != "", stage("manifests"), &rep)
	if err != nil {
		return rep, err
	}
	if opts.ReadData {
		if err := v.readData(nodes, seqs, w, opts.Percent, stage("read"), &rep); err != nil {
			return rep, err
		}
	}
	for _, n := range nodes {
		v.journal(n, &rep)
	}
	rep.Problems = v.finish()
	return rep, ctx.Err()
}

// walkManifests walks every manifest of nodes (seqs lists them): each is
// read, and every chunk it names is checked (the structural walk); each
// problem is attributed to the restore points it breaks. With collectPacks
// the walk notes the packs the manifests use, for a read of those alone.
func (v *verifier) walkManifests(nodes []string, seqs map[string][]uint64, total int, collectPacks bool, progress func(done, total int64), rep *VerifyReport) (*walk, error) {
	w := v.newWalk(true, collectPacks)
	done := 0
	for _, n := range nodes {
		last := newestSeq(seqs[n])
		err := eachManifest(v.ctx, v.st, n, seqs[n], func(seq uint64, m *manifest.Manifest, err error) error {
			done++
			if progress != nil {
				progress(int64(done), int64(total))
			}
			newest := seq == last
			if errors.Is(err, backend.ErrNotFound) {
				return nil // forgotten since the listing
			}
			rep.Manifests++
			if err != nil {
				if v.ctx.Err() != nil {
					return v.ctx.Err()
				}
				k := v.problem(store.ManifestObject(n, seq), strings.TrimPrefix(err.Error(), fmt.Sprintf("read manifest %d of node %q: ", seq, n)))
				v.affect(k, n, seq, newest)
				return nil
			}
			for k := range w.manifest(m) {
				v.affect(k, n, seq, newest)
			}
			return nil
		})
		if err != nil {
			return w, err
		}
	}
	return w, v.ctx.Err()
}

// readData reads packs back (pct percent of them; those the structural
// walk w noted, if it did) and attributes the damage found to restore
// points with a second walk, only when there is damage to attribute.
func (v *verifier) readData(nodes []string, seqs map[string][]uint64, w *walk, pct float64, progress func(done, total int64), rep *VerifyReport) error {
	if pct <= 0 {
		pct = 100
	}
	sample := v.packs.PackSample(pct)
	if w.packs != nil {
		ids := make([]chunker.ID, 0, len(w.packs))
		for id := range w.packs {
			ids = append(ids, id)
		}
		sample = packs.SamplePacks(ids, pct)
	}
	pr, err := v.packs.VerifyPacks(v.ctx, sample, progress)
	if err != nil {
		return err
	}
	rep.ReadData = &pr
	v.bad = map[chunker.ID]int{}
	for _, p := range pr.Problems {
		v.addStoreProblem(p)
	}
	if len(v.bad) == 0 {
		return nil
	}
	w = v.newWalk(false, false)
	for _, n := range nodes {
		last := newestSeq(seqs[n])
		err := eachManifest(v.ctx, v.st, n, seqs[n], func(seq uint64, m *manifest.Manifest, err error) error {
			if err != nil {
				return nil // reported by the first walk
			}
			for k := range w.manifest(m) {
				v.affect(k, n, seq, seq == last)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// verifier collects problems and what they affect.
type verifier struct {
	ctx      context.Context
	st       *store.Store
	packs    *packs.Packs
	index    *packs.Index // of the sound index objects (VerifyIndex)
	problems []*vproblem
	// bad maps an unreadable chunk to the problem that explains it.
	bad map[chunker.ID]int
	// missingPages groups page chunks no index knows (-1: none yet).
	missingPages int
}

type vproblem struct {
	VerifyProblem
	affects map[RestorePoint]bool
}

func (v *verifier) problem(object, what string) int {
	v.problems = append(v.problems, &vproblem{VerifyProblem: VerifyProblem{Object: object, Problem: what}, affects: map[RestorePoint]bool{}})
	return len(v.problems) - 1
}

func (v *verifier) addStoreProblem(p packs.VerifyProblem) {
	k := v.problem(p.Object, p.Problem)
	v.problems[k].Chunks = p.Chunks
	for _, c := range p.Chunks {
		if _, dup := v.bad[c]; !dup {
			v.bad[c] = k
		}
	}
}

// affect records that problem k breaks manifest seq of node, and the
// node's newest state when seq is its newest manifest.
func (v *verifier) affect(k int, node string, seq uint64, newest bool) {
	v.problems[k].affects[RestorePoint{Node: node, Manifest: seq}] = true
	if newest {
		v.problems[k].affects[RestorePoint{Node: node, Newest: true}] = true
	}
}

// finish sorts the problems and their restore points for the report.
func (v *verifier) finish() []VerifyProblem {
	out := make([]VerifyProblem, 0, len(v.problems))
	for _, p := range v.problems {
		vp := p.VerifyProblem
		vp.Affects = make([]RestorePoint, 0, len(p.affects))
		for r := range p.affects {
			vp.Affects = append(vp.Affects, r)
		}
		sort.Slice(vp.Affects, func(i, j int) bool {
			a, b := vp.Affects[i], vp.Affects[j]
			if a.Node != b.Node {
				return a.Node < b.Node
			}
			if a.Newest != b.Newest {
				return b.Newest
			}
			return a.Manifest < b.Manifest
		})
		sort.Slice(vp.Chunks, func(i, j int) bool { return bytes.Compare(vp.Chunks[i][:], vp.Chunks[j][:]) < 0 })
		if vp.ChunkCount = len(vp.Chunks); vp.ChunkCount > maxListedChunks {
			vp.Chunks = vp.Chunks[:maxListedChunks]
		}
		out = append(out, vp)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Object < out[j].Object })
	return out
}

// journal reads a node's journal: the records after its newest manifest
// (the newest state needs them), then every record it holds (the plugin's
// journal refuses to open with damage in any of them; a journal on a store
// server is the server's to check: verify its file:// URL there).
func (v *verifier) journal(node string, rep *VerifyReport) {
	object := store.JournalObject(node)
	for try := 0; try < 2; try++ {
		latest, err := v.st.LatestManifest(v.ctx, node)
		if err != nil {
			break // no readable newest manifest: reported with the manifests
		}
		records := 0
		err = v.st.ReadJournal(v.ctx, node, latest.JournalSeq, func(journal.Record) error { records++; return nil })
		if (errors.Is(err, journal.ErrTrimmed) || errors.Is(err, fs.ErrNotExist)) && try == 0 {
			continue // a compaction committed a manifest and trimmed: look again
		}
		if err != nil {
			k := v.problem(object, fmt.Sprintf("journal records after manifest %d cannot be read: %v", latest.Seq, err))
			v.problems[k].affects[RestorePoint{Node: node, Newest: true}] = true
			return
		}
		rep.JournalRecords += records
		break
	}
	held, err := v.st.CheckJournal(v.ctx, node)
	if held {
		rep.Journals++
	}
	if err != nil {
		v.problem(object, fmt.Sprintf("journal damaged in records the store already holds (restore points are intact, but the plugin cannot open this journal): %v", err))
	}
}

// newestSeq is the last of seqs (0: none).
func newestSeq(seqs []uint64) uint64 {
	if len(seqs) == 0 {
		return 0
	}
	return seqs[len(seqs)-1]
}
