package packs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/clnbackup/backup/store/chunk"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
)

// Located says where each chunk of a set is stored, as one Lookup found it.
//
// Reads and writers of packs that have not loaded the whole index look up
// the chunks they are about to touch, in one pass over the store's index
// objects, and keep only those: their memory follows the chunks of the
// operation (a window of a database's pages), not the number of chunks in
// the store. A Located is not safe for concurrent use while a Writer it was
// given to (Writer.Know) records the chunks it stores in it.
type Located struct {
	ids   []chunker.ID // sorted, distinct
	index keyIndex     // of the first 8 bytes of ids (big-endian), for the scan
	locs  []location
	state []locState
	packs []chunker.ID
	// bases are the base ids of delta copies (location.base indexes it;
	// entry 0 is unused).
	bases  []chunker.ID
	packNo map[chunker.ID]uint32
	baseNo map[chunker.ID]uint32
}

type locState uint8

const (
	locAbsent locState = iota
	// locPresent: a copy gc has not condemned.
	locPresent
	// locCondemned: only copies gc has condemned (readable, but a
	// writer must not rely on them).
	locCondemned
)

func newLocated(ids []chunker.ID) *Located {
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, compareIDs)
	sorted = slices.Compact(sorted)
	keys := make([]uint64, len(sorted))
	for i, id := range sorted {
		keys[i] = idKey(id)
	}
	return &Located{ids: sorted, index: newKeyIndex(keys), locs: make([]location, len(sorted)), state: make([]locState, len(sorted)),
		bases: []chunker.ID{{}}, packNo: map[chunker.ID]uint32{}, baseNo: map[chunker.ID]uint32{}}
}

func compareIDs(a, b chunker.ID) int { return bytes.Compare(a[:], b[:]) }

// idKey is the first 8 bytes of an id as a number: ids are hashes, so keys
// are spread evenly, and sets of ids are searched by key (keyIndex).
func idKey(id chunker.ID) uint64 { return binary.BigEndian.Uint64(id[:8]) }

// find returns the position of id in l.ids, or -1.
func (l *Located) find(id chunker.ID) int {
	k := idKey(id)
	i, ok := l.index.search(k)
	for ; ok && i < len(l.ids) && l.index.keys[i] == k; i++ {
		if l.ids[i] == id {
			return i
		}
	}
	return -1
}

// Len is the number of distinct chunks looked up.
func (l *Located) Len() int { return len(l.ids) }

// Known reports whether id was looked up (whether or not it was found).
func (l *Located) Known(id chunker.ID) bool { return l != nil && l.find(id) >= 0 }

// Has reports whether the lookup found a copy of id that gc has not
// condemned: one a writer may rely on.
func (l *Located) Has(id chunker.ID) bool {
	if l == nil {
		return false
	}
	i := l.find(id)
	return i >= 0 && l.state[i] == locPresent
}

// Locate returns where id is stored (any copy found, condemned or not).
func (l *Located) Locate(id chunker.ID) (chunk.Info, bool) {
	if l == nil {
		return chunk.Info{}, false
	}
	i := l.find(id)
	if i < 0 || l.state[i] == locAbsent {
		return chunk.Info{}, false
	}
	return l.info(l.locs[i]), true
}

func (l *Located) info(loc location) chunk.Info {
	return chunk.Info{Pack: l.packs[loc.pack], Kind: loc.kind, Offset: loc.offset, Length: loc.length, Raw: loc.raw, Base: l.bases[loc.base]}
}

// missing returns the ids looked up and not found.
func (l *Located) missing() []chunker.ID {
	var out []chunker.ID
	for i, st := range l.state {
		if st == locAbsent {
			out = append(out, l.ids[i])
		}
	}
	return out
}

// set records a copy of chunk i (in pack, described by e) unless the copy
// already recorded is to be preferred.
func (l *Located) set(i int, pack chunker.ID, e *chunk.Entry, condemned bool) {
	if l.state[i] != locAbsent {
		oldCondemned := l.state[i] == locCondemned
		if !preferCopy(oldCondemned, l.locs[i].base != 0, condemned, e.Delta()) {
			return
		}
	}
	no := number(&l.packs, l.packNo, pack)
	var base uint32
	if e.Delta() {
		base = number(&l.bases, l.baseNo, e.Base)
	}
	l.locs[i] = location{pack: no, offset: e.Offset, length: e.Length, raw: e.Raw, kind: e.Kind, base: base}
	l.state[i] = locPresent
	if condemned {
		l.state[i] = locCondemned
	}
}

// number returns id's position in the table *ids (indexed by no), adding
// it at the end if it is not there: locations name packs and bases by
// their number in such a table.
func number(ids *[]chunker.ID, no map[chunker.ID]uint32, id chunker.ID) uint32 {
	n, ok := no[id]
	if !ok {
		n = uint32(len(*ids))
		*ids = append(*ids, id)
		no[id] = n
	}
	return n
}

// Stored records copies a writer has just made durable (for the chunks
// that were looked up), so that later Has calls see them.
func (l *Located) Stored(pack chunker.ID, entries []chunk.Entry) {
	for k := range entries {
		if i := l.find(entries[k].ID); i >= 0 {
			l.set(i, pack, &entries[k], false)
		}
	}
}

// preferCopy decides between two copies of one chunk: a copy gc has not
// condemned beats a condemned one, and otherwise a full copy beats a delta
// copy (reads prefer full copies); on a tie the copy seen first stays.
func preferCopy(oldCondemned, oldDelta, newCondemned, newDelta bool) bool {
	if oldCondemned != newCondemned {
		return oldCondemned
	}
	return oldDelta && !newDelta
}

// Lookup finds where the chunks ids are stored. With the whole index loaded
// (LoadIndex; a store server) it answers from memory; otherwise it reads
// every index object once and keeps the entries of ids only. Chunks not in
// the store are reported absent, not as an error.
func (p *Packs) Lookup(ctx context.Context, ids []chunker.ID) (chunk.Lookup, error) {
	return p.lookup(ctx, ids)
}

// lookup is Lookup, for those who plan reads from it.
func (p *Packs) lookup(ctx context.Context, ids []chunker.ID) (*Located, error) {
	l := newLocated(ids)
	if len(l.ids) == 0 {
		return l, nil
	}
	if p.isIndexed() {
		if p.fillFromIndex(l) {
			return l, nil
		}
		// Indexed since we loaded the index (or absent).
		if err := p.Refresh(ctx); err != nil {
			return nil, err
		}
		p.fillFromIndex(l)
		return l, nil
	}
	if err := p.loadCondemned(ctx); err != nil {
		return nil, err
	}
	for try := 0; ; try++ {
		vanished, err := p.scanIndexes(ctx, l)
		if err != nil {
			return nil, fmt.Errorf("look up %d chunks in store %s: %w", len(l.ids), p.be.Location(), err)
		}
		// gc deleted an index during the scan: it indexed the chunks it
		// moved anew first, perhaps after our listing passed.
		if !vanished || try == 2 || len(l.missing()) == 0 {
			return l, nil
		}
	}
}

// lookupToRead is Lookup for chunks that must be there: a chunk not found
// is looked up again (twice) before the read fails. A listing of the index
// objects may miss a chunk gc is moving: its old index gone by the time it
// is read, its new index written after the listing passed.
func (p *Packs) lookupToRead(ctx context.Context, ids []chunker.ID) (*Located, error) {
	for try := 0; ; try++ {
		l, err := p.lookup(ctx, ids)
		if err != nil || try == 2 || len(l.missing()) == 0 {
			return l, err
		}
	}
}

// fillFromIndex answers l from the loaded index; it reports whether every
// chunk was found.
func (p *Packs) fillFromIndex(l *Located) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	all := true
	for i, id := range l.ids {
		loc, ok := p.chunks[id]
		if !ok {
			all = false
			continue
		}
		info := p.info(loc)
		e := chunk.Entry{ID: id, Kind: info.Kind, Offset: info.Offset, Length: info.Length, Raw: info.Raw, Base: info.Base}
		l.state[i] = locAbsent
		l.set(i, info.Pack, &e, p.condemned.has(chunkCopy{id, info.Pack}))
	}
	return all
}

// scanIndexes reads every index object and records in l the copies of the
// chunks it looks up. vanished reports an index listed but gone when read
// (gc deleted it).
func (p *Packs) scanIndexes(ctx context.Context, l *Located) (vanished bool, err error) {
	p.mu.RLock()
	cond := p.condemned
	p.mu.RUnlock()
	return p.walkIndexes(ctx, func(pack chunker.ID, e *chunk.Entry) {
		if i := l.find(e.ID); i >= 0 {
			l.set(i, pack, e, len(cond) > 0 && cond.has(chunkCopy{e.ID, pack}))
		}
	})
}

// walkIndexes reads every index object and calls fn with each entry and
// its pack (see eachIndex for vanished).
func (p *Packs) walkIndexes(ctx context.Context, fn func(pack chunker.ID, e *chunk.Entry)) (vanished bool, err error) {
	return p.eachIndex(ctx, indexVisitor{entry: fn})
}

// indexVisitor is what a pass over the index objects does with each: skip
// (may be nil) says, before it is read, whether to pass one by; entry sees
// each entry (valid during the call only); done (may be nil) sees the
// object once its entries are seen.
type indexVisitor struct {
	skip  func(in backend.Info) bool
	entry func(pack chunker.ID, e *chunk.Entry)
	done  func(in backend.Info, pack chunker.ID, entries int) error
}

// eachIndex is the one pass over the index objects that loading, lookups,
// counting and gc's scan share: it reads every index object v does not
// skip, checks it against its name, and hands it to v. vanished reports an
// index listed but gone when read (gc deleted it, having indexed the chunks
// it kept anew first).
func (p *Packs) eachIndex(ctx context.Context, v indexVisitor) (vanished bool, err error) {
	var buf []byte // each object read into it in turn: v keeps no bytes of one
	err = p.be.List(ctx, indexPrefix, func(in backend.Info) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if v.skip != nil && v.skip(in) {
			return nil
		}
		data, err := p.readIndexDataInto(ctx, in, buf)
		if errors.Is(err, backend.ErrNotFound) {
			vanished = true
			return nil
		}
		if err != nil {
			return err
		}
		buf = data
		var pack chunker.ID
		n := 0
		_, err = walkIndex(data, -1, func(count int) { pack, n = packOf(data), count }, func(e *chunk.Entry) { v.entry(pack, e) })
		if err != nil {
			return fmt.Errorf("index %s: %w", in.Name, err)
		}
		if v.done != nil {
			return v.done(in, pack, n)
		}
		return nil
	})
	return vanished, err
}

// listPacks lists the pack objects by id.
func (p *Packs) listPacks(ctx context.Context) (map[chunker.ID]backend.Info, error) {
	infos := map[chunker.ID]backend.Info{}
	err := p.be.List(ctx, packPrefix, func(in backend.Info) error {
		if id, err := chunker.ParseID(in.Name[strings.LastIndexByte(in.Name, '/')+1:]); err == nil {
			infos[id] = in
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list the packs of store %s: %w", p.be.Location(), err)
	}
	return infos, nil
}

// keyIndex finds keys in a sorted slice of uint64 (hashes, so spread
// evenly). A large slice gets a table of where each value of the top 16
// bits starts (256 KiB): a search is then a few steps in a short run, not a
// binary search of the whole slice (gc searches once per chunk copy in the
// store, a lookup once per index entry).
type keyIndex struct {
	keys  []uint64
	start []uint32 // len 1<<16 + 1; nil for a small slice
}

// keyIndexTable is the size from which a keyIndex has a start table.
const keyIndexTable = 1 << 12

func newKeyIndex(keys []uint64) keyIndex {
	x := keyIndex{keys: keys}
	if len(keys) < keyIndexTable {
		return x
	}
	x.start = make([]uint32, 1<<16+1)
	for _, k := range keys {
		x.start[k>>48+1]++
	}
	for i := 1; i < len(x.start); i++ {
		x.start[i] += x.start[i-1]
	}
	return x
}

// search returns the position of the first key k, and whether there is one.
func (x keyIndex) search(k uint64) (int, bool) {
	lo, hi := 0, len(x.keys)
	if x.start != nil {
		lo, hi = int(x.start[k>>48]), int(x.start[k>>48+1])
	}
	i, ok := slices.BinarySearch(x.keys[lo:hi], k)
	return lo + i, ok
}

// packOf is the pack id an index names (its header is checked).
func packOf(index []byte) (id chunker.ID) {
	copy(id[:], index[8:])
	return id
}

// CountChunks counts the distinct chunks in the store's indexes without
// loading the index: one pass over the index objects, 8 bytes a chunk (ids
// are told apart by their first 8 bytes, so two chunks in about 2^64 count
// once).
func (p *Packs) CountChunks(ctx context.Context) (int, error) {
	if p.isIndexed() {
		return (&Index{p}).Len(), nil
	}
	seen := &liveSet{}
	_, err := p.walkIndexes(ctx, func(_ chunker.ID, e *chunk.Entry) { seen.add(e.ID) })
	if err != nil {
		return 0, fmt.Errorf("count the chunks of store %s: %w", p.be.Location(), err)
	}
	return seen.len(), nil
}
