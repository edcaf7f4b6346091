package history

import (
	"fmt"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/journal"
)

// walk visits manifests, checking each distinct chunk once and caching per
// list, patch and change chunk the problems it leads to, so that a
// manifest sharing them inherits their problems without reading them again.
type walk struct {
	v *verifier
	// structural: create problems for chunks missing from the index and
	// for unreadable list, patch and change chunks. Otherwise only the
	// chunks in v.bad are problems (attribution of read-data damage).
	structural bool
	lists      map[chunker.ID]*listResult
	patches    map[chunker.ID]*patchResult
	changes    map[chunker.ID]*changeResult
	// packs collects the packs holding referenced chunks (nil: not needed).
	packs map[chunker.ID]bool
}

type badPage struct {
	pos     uint32
	problem int
}

type listResult struct {
	n   int // entries; -1 when unreadable
	err int // problem making it unreadable, -1 if none
	bad []badPage
}

type patchResult struct {
	patch manifest.Patch
	ok    bool // read and decoded
	err   int
	bad   map[uint32]int // page -> problem, for the patch's page ids
}

type changeResult struct {
	records int // -1 when unreadable
	err     int
	count   int // problem for a record count that differs from a manifest's
}

func (v *verifier) newWalk(structural, collectPacks bool) *walk {
	w := &walk{v: v, structural: structural, lists: map[chunker.ID]*listResult{},
		patches: map[chunker.ID]*patchResult{}, changes: map[chunker.ID]*changeResult{}}
	if collectPacks {
		w.packs = map[chunker.ID]bool{}
	}
	v.missingPages = -1
	return w
}

// status returns the problem that makes chunk id unusable, or -1.
func (w *walk) status(id chunker.ID, kind chunk.Kind) int {
	if k, ok := w.v.bad[id]; ok {
		return k
	}
	if !w.structural {
		return -1
	}
	loc, ok := w.v.index.Locate(id)
	if !ok {
		var k int
		if kind == chunk.KindPage {
			if w.v.missingPages < 0 {
				w.v.missingPages = w.v.problem("index", "page chunks named by restore points are in no index")
			}
			k = w.v.missingPages
			w.v.problems[k].Chunks = append(w.v.problems[k].Chunks, id)
			w.v.problems[k].Problem = fmt.Sprintf("%d page chunks named by restore points are in no index", len(w.v.problems[k].Chunks))
		} else {
			k = w.v.problem("chunk "+id.String(), fmt.Sprintf("%s chunk named by a manifest is in no index", kind))
			w.v.problems[k].Chunks = []chunker.ID{id}
		}
		w.v.bad[id] = k
		return k
	}
	// The kind the index records is the one the first writer of these
	// bytes declared, and any node may store the same bytes first: it is
	// not this node's to answer for. A chunk is judged by the role its
	// manifest names it in: any bytes may be a page, and list, patch and
	// change chunks are decoded as such (read), whatever they are indexed
	// as.
	if w.packs != nil {
		w.packs[loc.Pack] = true
	}
	return -1
}

// read fetches a list, patch or change chunk; a failure becomes a problem
// (structural walk) or -1 with ok false (attribution walk).
func (w *walk) read(id chunker.ID, kind chunk.Kind, decode func([]byte) error) (problem int, ok bool) {
	if k := w.status(id, kind); k >= 0 {
		return k, false
	}
	data, err := w.v.st.Get(w.v.ctx, id)
	if err == nil {
		err = decode(data)
	}
	if err == nil {
		return -1, true
	}
	if !w.structural {
		return -1, false
	}
	k := w.v.problem("chunk "+id.String(), fmt.Sprintf("%s chunk unreadable: %v", kind, err))
	w.v.problems[k].Chunks = []chunker.ID{id}
	w.v.bad[id] = k
	return k, false
}

func (w *walk) list(id chunker.ID) *listResult {
	if r, ok := w.lists[id]; ok {
		return r
	}
	r := &listResult{n: -1}
	var ids []chunker.ID
	k, ok := w.read(id, chunk.KindList, func(b []byte) (err error) { ids, err = manifest.DecodeList(b); return err })
	r.err = k
	if ok {
		r.n = len(ids)
		for pos, p := range ids {
			if k := w.status(p, chunk.KindPage); k >= 0 {
				r.bad = append(r.bad, badPage{uint32(pos), k})
			}
		}
	}
	w.lists[id] = r
	return r
}

func (w *walk) patch(id chunker.ID) *patchResult {
	if r, ok := w.patches[id]; ok {
		return r
	}
	r := &patchResult{err: -1}
	var p manifest.Patch
	k, ok := w.read(id, chunk.KindPatch, func(b []byte) (err error) { p, err = manifest.DecodePatch(b); return err })
	r.err, r.ok = k, ok
	if ok {
		r.patch = p
		for _, e := range p.Entries {
			if k := w.status(e.ID, chunk.KindPage); k >= 0 {
				if r.bad == nil {
					r.bad = map[uint32]int{}
				}
				r.bad[e.Page] = k
			}
		}
	}
	w.patches[id] = r
	return r
}

func (w *walk) change(id chunker.ID) *changeResult {
	if r, ok := w.changes[id]; ok {
		return r
	}
	r := &changeResult{records: -1, count: -1}
	k, ok := w.read(id, chunk.KindChange, func(b []byte) error {
		recs, err := journal.DecodeChunk(b)
		r.records = len(recs)
		return err
	})
	r.err = k
	if !ok {
		r.records = -1
	}
	w.changes[id] = r
	return r
}

// manifest returns the problems that break restore point m.
func (w *walk) manifest(m *manifest.Manifest) map[int]bool {
	probs := map[int]bool{}
	s := m.Snapshot
	bad := map[uint32]int{} // page -> problem
	count, known := 0, true
	for _, id := range s.Lists {
		r := w.list(id)
		if r.err >= 0 {
			probs[r.err] = true
		}
		if r.n < 0 {
			known = false
			continue
		}
		for _, b := range r.bad {
			bad[uint32(count)+b.pos] = b.problem
		}
		count += r.n
	}
	for _, id := range s.Patches {
		r := w.patch(id)
		if r.err >= 0 {
			probs[r.err] = true
		}
		if !r.ok || !known {
			known = false
			for _, k := range r.bad {
				probs[k] = true // cannot tell whether a later patch replaces it
			}
			continue
		}
		p := r.patch
		for pg := range bad {
			if pg >= p.Pages {
				delete(bad, pg)
			}
		}
		if int(p.Pages) > count {
			set := 0
			for _, e := range p.Entries {
				if int(e.Page) >= count {
					set++
				}
			}
			if set != int(p.Pages)-count && w.structural {
				probs[w.v.problem(store.ManifestObject(m.Node, m.Seq), fmt.Sprintf("patch chunk %s grows the snapshot to %d pages without setting %d of the new ones", id, p.Pages, int(p.Pages)-count-set))] = true
			}
		}
		for _, e := range p.Entries {
			delete(bad, e.Page)
		}
		for pg, k := range r.bad {
			bad[pg] = k
		}
		count = int(p.Pages)
	}
	if known && count != int(s.Pages) && w.structural {
		probs[w.v.problem(store.ManifestObject(m.Node, m.Seq), fmt.Sprintf("snapshot has %d pages, its lists and patches give %d", s.Pages, count))] = true
	}
	for _, k := range bad {
		probs[k] = true
	}
	for _, c := range m.Changes {
		r := w.change(c.ID)
		if r.err >= 0 {
			probs[r.err] = true
		}
		if r.records >= 0 && r.records != c.Records && w.structural {
			if r.count < 0 {
				r.count = w.v.problem("chunk "+c.ID.String(), fmt.Sprintf("change chunk holds %d records, a manifest says %d", r.records, c.Records))
			}
			probs[r.count] = true
		}
	}
	return probs
}
