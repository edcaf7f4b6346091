// Package packs is the chunk layer over a backend.Backend: chunks in packs
// of a few MiB, each with an index object, looked up, read and written in
// bulk; and the store-wide maintenance only a client that sees every pack
// can run: gc's sweep (with the live chunks handed in by a Marker) and the
// verification of packs and indexes. It knows nothing of nodes or
// manifests.
package packs

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/clnbackup/backup/store/chunk"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
)

// Packs is the chunk layer over a backend.Backend: chunks are kept in packs
// of a few MiB, each with an index object written after it and before any
// manifest that needs it (docs/store-format.md). It looks chunks up in the
// index objects, reads them in few large ranged reads, writes new packs,
// and runs the store-wide maintenance only a client that sees every pack
// can: gc's sweep and the verification of packs and indexes.
//
// Packs does not load the whole chunk index unless asked (LoadIndex): reads
// and writers look up the chunks they touch, so their memory follows the
// operation, not the store.
type Packs struct {
	be           backend.Backend
	codec        *chunk.Codec
	indexVersion uint16
	packSize     int
	now          func() time.Time
	// maxWriterAge is how long writers may rely on what they found (gc's
	// grace period must be longer).
	maxWriterAge time.Duration

	mu     sync.RWMutex
	chunks map[chunker.ID]location
	packs  []chunker.ID
	packNo map[chunker.ID]uint32
	// bases are the base ids of delta copies (location.base indexes it;
	// entry 0 is unused), baseNo numbers them.
	bases  []chunker.ID
	baseNo map[chunker.ID]uint32
	loaded map[string]bool // index objects already loaded
	// indexed is set once the whole index has been loaded.
	indexed bool
	// condemned holds the chunk copies gc has condemned (copy -> when);
	// writers never reuse them (see gc.go).
	condemned       condemnedSet
	condemnedLoaded map[string]bool
	// refreshMu serialises Refresh: one may reset the index while
	// another is loading into it.
	refreshMu sync.Mutex
	// decodeSlots bounds the PutBodies that decompress clients' bodies at
	// once (DecodeSlots), so that many clients uploading at once leave CPU
	// for the others' requests.
	decodeSlots chan struct{}
	// checkContent is Options.CheckContent.
	checkContent func(chunk.Kind, []byte) error
}

// DecodeSlots is the number of PutBodies that may decompress and check
// bodies at once: half the CPUs, at least one. A store server's other
// requests (journal appends a node's lightningd waits for) keep the rest.
func DecodeSlots() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// chunkCopy is one stored copy of a chunk: the same chunk may be stored in
// more than one pack.
type chunkCopy struct {
	id   chunker.ID
	pack chunker.ID
}

// location is where the index puts one copy of a chunk; packs and bases
// are numbered in tables of the index or lookup that holds it.
type location struct {
	pack   uint32
	offset uint32
	length uint32
	raw    uint32
	// base is the delta copy's base (index into the bases table; 0: full).
	base uint32
	kind chunk.Kind
}

// Options are what Packs need to know of their store.
type Options struct {
	// StoreVersion is the store's format version: version 2 stores take
	// delta copies (index format 2).
	StoreVersion int
	// PackSize is the size at which a pack is closed.
	PackSize int
	// Codec decodes and verifies bodies.
	Codec *chunk.Codec
	// Now is the store's clock.
	Now func() time.Time
	// MaxWriterAge is how long writers may rely on what they found (gc's
	// grace period must be at least twice that).
	MaxWriterAge time.Duration
	// CheckContent, when set, refuses a client's body whose content is not
	// what its declared kind says (PutBodies). The chunk formats belong to
	// the layers above, which hand the check down.
	CheckContent func(k chunk.Kind, data []byte) error
}

// New returns the packs of the store kept by be.
func New(be backend.Backend, o Options) *Packs {
	p := &Packs{be: be, codec: o.Codec, indexVersion: indexVersion1, packSize: o.PackSize, now: o.Now, maxWriterAge: o.MaxWriterAge, decodeSlots: make(chan struct{}, DecodeSlots()), checkContent: o.CheckContent}
	if o.StoreVersion >= 2 {
		p.indexVersion = indexVersion2
	}
	p.resetIndex()
	return p
}

// Deltas reports whether the store takes delta copies (a version-2 store).
func (p *Packs) Deltas() bool { return p.indexVersion >= indexVersion2 }

func (p *Packs) resetIndex() {
	p.chunks = map[chunker.ID]location{}
	p.packs = nil
	p.packNo = map[chunker.ID]uint32{}
	p.bases = []chunker.ID{{}}
	p.baseNo = map[chunker.ID]uint32{}
	p.loaded = map[string]bool{}
	p.indexed = false
	p.condemned = nil
	p.condemnedLoaded = map[string]bool{}
}

// LoadIndex loads the whole chunk index if it is not loaded yet, and
// returns it.
func (p *Packs) LoadIndex(ctx context.Context) (*Index, error) {
	if !p.isIndexed() {
		if err := p.Refresh(ctx); err != nil {
			return nil, err
		}
	}
	return &Index{p}, nil
}

// Index is a store's whole chunk index, loaded in memory (about 115 bytes a
// chunk), for those that ask about many chunks many times: a store server
// answering its clients, verify, the benchmark's content report. Reads and
// writers look up the chunks they touch instead (Lookup), so that their
// memory does not grow with the store. An Index is as fresh as the last
// LoadIndex or Refresh of its Packs, and gone with ReleaseIndex.
type Index struct{ p *Packs }

// Has reports whether the index holds a chunk in a copy gc has not
// condemned (writers store a chunk whose only copy is condemned again
// rather than reuse a copy gc may delete).
func (x *Index) Has(id chunker.ID) bool { return x.p.has(id) }

// Locate returns where the index says a chunk is stored.
func (x *Index) Locate(id chunker.ID) (chunk.Info, bool) {
	x.p.mu.RLock()
	defer x.p.mu.RUnlock()
	l, ok := x.p.chunks[id]
	if !ok {
		return chunk.Info{}, false
	}
	return x.p.info(l), true
}

// Len is the number of distinct chunks in the index.
func (x *Index) Len() int {
	x.p.mu.RLock()
	defer x.p.mu.RUnlock()
	return len(x.p.chunks)
}

// ReleaseIndex drops the in-memory chunk index (the plugin does so after a
// compaction, to stay small while idle). It must not run concurrently with
// reads or writers.
func (p *Packs) ReleaseIndex() {
	p.mu.Lock()
	p.resetIndex()
	p.mu.Unlock()
}

func (p *Packs) isIndexed() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.indexed
}

// Refresh loads index objects written since the index was loaded (by other
// writers), so that their chunks are found and not written again. If gc
// removed an index that was loaded, it loads the whole index anew.
func (p *Packs) Refresh(ctx context.Context) error {
	p.refreshMu.Lock()
	defer p.refreshMu.Unlock()
	if err := p.loadCondemned(ctx); err != nil {
		return err
	}
	for pass := 0; ; pass++ {
		present := map[string]bool{}
		var entries []chunk.Entry
		_, err := p.eachIndex(ctx, indexVisitor{
			skip: func(in backend.Info) bool {
				present[in.Name] = true
				p.mu.RLock()
				defer p.mu.RUnlock()
				return p.loaded[in.Name]
			},
			entry: func(_ chunker.ID, e *chunk.Entry) { entries = append(entries, *e) },
			done: func(in backend.Info, pack chunker.ID, _ int) error {
				p.addIndex(in.Name, pack, entries)
				entries = entries[:0]
				return nil
			},
		})
		if err != nil {
			return fmt.Errorf("load index of store %s: %w", p.be.Location(), err)
		}
		p.mu.Lock()
		gone := false
		for name := range p.loaded {
			gone = gone || !present[name]
		}
		if !gone || pass > 0 {
			p.indexed = true
			p.mu.Unlock()
			return nil
		}
		// gc removed packs since the index was loaded: start over.
		condemned, condemnedLoaded := p.condemned, p.condemnedLoaded
		p.resetIndex()
		p.condemned, p.condemnedLoaded = condemned, condemnedLoaded
		p.mu.Unlock()
	}
}

func (p *Packs) addIndex(name string, pack chunker.ID, entries []chunk.Entry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loaded[name] {
		return
	}
	p.loaded[name] = true
	no := number(&p.packs, p.packNo, pack)
	for _, e := range entries {
		if old, dup := p.chunks[e.ID]; dup {
			// Keep the first copy, unless gc condemned it and this one
			// is a fresh copy, or this one is a full copy that replaces
			// a delta copy (reads prefer full copies).
			oldCondemned := p.condemned.has(chunkCopy{e.ID, p.packs[old.pack]})
			newCondemned := p.condemned.has(chunkCopy{e.ID, pack})
			if !preferCopy(oldCondemned, old.base != 0, newCondemned, e.Delta()) {
				continue
			}
		}
		var base uint32
		if e.Delta() {
			base = number(&p.bases, p.baseNo, e.Base)
		}
		p.chunks[e.ID] = location{pack: no, offset: e.Offset, length: e.Length, raw: e.Raw, kind: e.Kind, base: base}
	}
}

// has is Index.Has; the index must be loaded.
func (p *Packs) has(id chunker.ID) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	loc, ok := p.chunks[id]
	if !ok {
		return false
	}
	return !p.condemned.has(chunkCopy{id, p.packs[loc.pack]})
}

// info describes a location; p.mu must be held.
func (p *Packs) info(l location) chunk.Info {
	return chunk.Info{Pack: p.packs[l.pack], Kind: l.kind, Offset: l.offset, Length: l.length, Raw: l.raw, Base: p.bases[l.base]}
}

// readIndexData reads one index object, of the size its listing gave,
// and checks it against its name.
func (p *Packs) readIndexData(ctx context.Context, in backend.Info) ([]byte, error) {
	return p.readIndexDataInto(ctx, in, nil)
}

// readIndexDataInto is readIndexData reading into buf where the backend
// can (the bytes returned then alias buf's array unless it had to grow): a
// pass over the index objects reads every one of them, 60 MB at 4 GB, and
// a fresh buffer for each cost a restore page faults and collections. It
// reads exactly the listed size, never "to the end": a backend that sends
// more than that is refused by the backend, one that lists less than it
// holds yields bytes that do not match the name.
func (p *Packs) readIndexDataInto(ctx context.Context, in backend.Info, buf []byte) ([]byte, error) {
	name := in.Name
	if err := checkIndexSize(in); err != nil {
		return nil, fmt.Errorf("%w: the store is damaged or not written by backup-cli; run backup-cli verify", err)
	}
	var data []byte
	var err error
	if g, ok := p.be.(bufferedGetter); ok {
		data, err = g.GetInto(ctx, name, 0, in.Size, buf)
	} else {
		data, err = p.be.Get(ctx, name, 0, in.Size)
	}
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", name, err)
	}
	if int64(len(data)) != in.Size || chunker.Sum(data).String() != name[strings.LastIndexByte(name, '/')+1:] {
		return nil, fmt.Errorf("index %s is damaged (content does not match its name): run backup-cli verify", name)
	}
	return data, nil
}
