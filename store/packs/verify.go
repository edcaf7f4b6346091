package packs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/clnbackup/backup/store/chunk"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
)

// Verification of the objects every node shares: indexes and packs. The walk
// over manifests and journals, and the mapping of problems to the restore
// points they affect, is history.Verify; this file only knows objects.
//
// Verification never stops at the first fault: it collects every problem it
// can see, so that an operator learns the whole extent of a damage at once.

// VerifyProblem is one damaged or missing object found by verification.
type VerifyProblem struct {
	// Object is the store object at fault, e.g. "packs/ab/ab12…".
	Object string `json:"object"`
	// Problem says what is wrong, for people.
	Problem string `json:"problem"`
	// Chunks are the chunks the problem makes unreadable: every restore
	// point that names one of them is affected. Empty when no chunk is lost
	// (damage outside the chunk bodies) or when the chunks cannot be known
	// (a damaged index: its chunks are then reported missing one by one).
	Chunks []chunker.ID `json:"chunks,omitempty"`
}

// IndexReport is what VerifyIndex found.
type IndexReport struct {
	// Indexes and Packs count the index and pack objects listed.
	Indexes int `json:"indexes"`
	Packs   int `json:"packs"`
	// Chunks is the number of distinct chunks in the loaded index.
	Chunks int `json:"chunks"`
	// UnindexedPacks are packs no readable index names: normally a writer
	// died between writing a pack and its index, and gc removes them after
	// its grace period. They are not problems by themselves.
	UnindexedPacks int             `json:"unindexed_packs"`
	Problems       []VerifyProblem `json:"problems"`
}

// VerifyIndex checks every index object against its name and its pack (the
// pack exists, and its size is exactly what the index describes: the chunk
// bodies, then the trailer repeating the index) and loads the chunk index
// from the sound ones, skipping damaged indexes and indexes of missing packs
// instead of failing like LoadIndex. Chunks known only from those become
// missing to this Store, so that restore points naming them are reported.
// Problems go into the report; the error is for failures to list or read
// the store at all. progress, if not nil, is told about indexes checked.
//
// It may run while writers (of other Stores, other processes) add packs and
// while gc deletes them: an index that disappears while it is checked was
// removed by gc and is skipped. Like ReleaseIndex, it replaces this Store's
// index, so it must not run concurrently with reads or writers of this Store.
func (p *Packs) VerifyIndex(ctx context.Context, progress func(done, total int64)) (IndexReport, error) {
	var rep IndexReport
	// Indexes first: a pack is written before its index, so the pack of
	// every index listed here is in the pack listing below.
	var names []backend.Info
	if err := p.be.List(ctx, indexPrefix, func(in backend.Info) error {
		names = append(names, in)
		return nil
	}); err != nil {
		return rep, fmt.Errorf("verify store %s: list indexes: %w", p.be.Location(), err)
	}
	infos, err := p.listPacks(ctx)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	rep.Indexes, rep.Packs = len(names), len(infos)
	p.mu.Lock()
	p.resetIndex()
	p.mu.Unlock()
	if err := p.loadCondemned(ctx); err != nil {
		return rep, err
	}
	c := &indexCheck{p: p, rep: &rep, packs: infos, indexed: map[chunker.ID]bool{}}
	for i, in := range names {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if progress != nil {
			progress(int64(i+1), int64(len(names)))
		}
		c.check(ctx, in)
	}
	for id := range infos {
		if !c.indexed[id] {
			rep.UnindexedPacks++
		}
	}
	p.mu.Lock()
	p.indexed = true
	rep.Chunks = len(p.chunks)
	c.orphanedDeltas()
	p.mu.Unlock()
	sortProblems(rep.Problems)
	return rep, nil
}

// indexCheck is one VerifyIndex run: the packs listed, the packs some index
// names, and the problems found.
type indexCheck struct {
	p       *Packs
	rep     *IndexReport
	packs   map[chunker.ID]backend.Info
	indexed map[chunker.ID]bool
}

func (c *indexCheck) problem(object, format string, args ...any) *VerifyProblem {
	c.rep.Problems = append(c.rep.Problems, VerifyProblem{Object: object, Problem: fmt.Sprintf(format, args...)})
	return &c.rep.Problems[len(c.rep.Problems)-1]
}

// check checks one index object against its name and its pack, and loads
// it if both are sound.
func (c *indexCheck) check(ctx context.Context, in backend.Info) {
	name := in.Name
	if err := checkIndexSize(in); err != nil {
		c.problem(name, "%v (damaged, or not written by backup-cli); the chunks it lists cannot be located", err)
		return
	}
	data, err := c.p.be.Get(ctx, name, 0, in.Size)
	if errors.Is(err, backend.ErrNotFound) {
		return // deleted by gc since the listing
	}
	if err != nil {
		c.problem(name, "index cannot be read: %v", err)
		return
	}
	pack, entries, derr := decodeIndex(data, -1)
	if want := name[strings.LastIndexByte(name, '/')+1:]; chunker.Sum(data).String() != want {
		claim := ""
		if derr == nil {
			claim = fmt.Sprintf(" (it claims to index pack %s, whose trailer holds a copy of the index)", pack)
			c.indexed[pack] = true
		}
		c.problem(name, "index content does not match its name (damaged); the chunks it lists cannot be located%s", claim)
		return
	}
	if derr != nil {
		c.problem(name, "index cannot be decoded: %v", derr)
		return
	}
	c.indexed[pack] = true
	in, ok := c.packs[pack]
	if !ok {
		if _, err := c.p.be.Stat(ctx, name); errors.Is(err, backend.ErrNotFound) {
			return // gc deleted the index, then the pack
		}
		prob := c.problem(packName(pack), "pack is missing; its index %s names %d chunks", name, len(entries))
		prob.Chunks = entryIDs(entries, func(chunk.Entry) bool { return true })
		return
	}
	var end int64
	for _, e := range entries {
		end = max(end, int64(e.Offset)+int64(e.Length))
	}
	size, want := in.Size, end+int64(len(data))+int64(packTrailerLen)
	switch {
	case size < want:
		prob := c.problem(packName(pack), "pack is %d bytes but its index %s describes %d: truncated", size, name, want)
		prob.Chunks = entryIDs(entries, func(e chunk.Entry) bool { return int64(e.Offset)+int64(e.Length) > size })
		if len(prob.Chunks) > 0 {
			prob.Problem += fmt.Sprintf(", %d chunks lost", len(prob.Chunks))
		}
	case size > want:
		c.problem(packName(pack), "pack is %d bytes but its index %s describes %d: bytes were appended or the index is wrong", size, name, want)
	}
	c.p.addIndex(name, pack, entries)
}

// orphanedDeltas reports the deltas whose base no sound index knows (by
// pack): they cannot be read, and the restore points naming them are
// broken. p.mu must be held.
func (c *indexCheck) orphanedDeltas() {
	p := c.p
	orphaned := map[uint32][]chunk.DeltaRef{}
	for id, loc := range p.chunks {
		if loc.base != 0 {
			if _, ok := p.chunks[p.bases[loc.base]]; !ok {
				orphaned[loc.pack] = append(orphaned[loc.pack], chunk.DeltaRef{ID: id, Base: p.bases[loc.base]})
			}
		}
	}
	for no, ds := range orphaned {
		slices.SortFunc(ds, func(a, b chunk.DeltaRef) int { return bytes.Compare(a.ID[:], b.ID[:]) })
		prob := c.problem(packName(p.packs[no]), "%d chunks are stored as deltas of base chunks that are in no sound index (e.g. chunk %s, base %s): they cannot be read", len(ds), ds[0].ID, ds[0].Base)
		for _, d := range ds {
			prob.Chunks = append(prob.Chunks, d.ID)
		}
	}
}

func entryIDs(entries []chunk.Entry, keep func(chunk.Entry) bool) []chunker.ID {
	var ids []chunker.ID
	for _, e := range entries {
		if keep(e) {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

func sortProblems(ps []VerifyProblem) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Object < ps[j].Object })
}

// VerifyPacksReport is what VerifyPacks found and how fast it read.
type VerifyPacksReport struct {
	// Packs were read; Sampled out were indexed packs left out by the
	// sample.
	Packs      int   `json:"packs"`
	SampledOut int   `json:"packs_not_sampled"`
	Chunks     int   `json:"chunks"`
	Bytes      int64 `json:"bytes"`
	// Duration is the time spent reading and checking; MBps the
	// throughput (MBPerSecond).
	Duration time.Duration   `json:"duration_ns"`
	MBps     float64         `json:"mb_per_second"`
	Problems []VerifyProblem `json:"problems"`
}

// MBPerSecond is the read throughput in MB (10^6 bytes) per second.
func (r VerifyPacksReport) MBPerSecond() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes) / 1e6 / r.Duration.Seconds()
}

// PackSample chooses a deterministic percent of the indexed packs (see
// SamplePacks). The index must be loaded.
func (p *Packs) PackSample(percent float64) func(pack chunker.ID) bool {
	p.mu.RLock()
	ids := append([]chunker.ID(nil), p.packs...)
	p.mu.RUnlock()
	return SamplePacks(ids, percent)
}

// SamplePacks chooses a deterministic percent of packs: those with the
// smallest ids (ids are hashes, so this is an unbiased sample), at least one
// when percent > 0. The same packs give the same sample on every run.
// percent >= 100 selects every pack.
func SamplePacks(packs []chunker.ID, percent float64) func(pack chunker.ID) bool {
	if percent >= 100 {
		return func(chunker.ID) bool { return true }
	}
	if percent <= 0 || math.IsNaN(percent) {
		return func(chunker.ID) bool { return false }
	}
	ids := slices.Clone(packs)
	slices.SortFunc(ids, func(a, b chunker.ID) int { return bytes.Compare(a[:], b[:]) })
	k := int(math.Ceil(float64(len(ids)) * percent / 100))
	chosen := make(map[chunker.ID]bool, k)
	for _, id := range ids[:k] {
		chosen[id] = true
	}
	return func(id chunker.ID) bool { return chosen[id] }
}

// VerifyPacks reads every indexed pack for which sample returns true (all
// of them when sample is nil), checks that its BLAKE3 equals its name and
// that its trailer agrees with the loaded index, and decompresses and
// re-hashes every chunk in it. It collects every failure, grouped by pack,
// instead of stopping at the first. Packs are read whole, by several workers;
// memory is about one pack per worker. progress, if not nil, is told about
// bytes read. Run VerifyIndex first to load the index without failing on
// damaged index objects (otherwise the index is loaded as by LoadIndex).
func (p *Packs) VerifyPacks(ctx context.Context, sample func(pack chunker.ID) bool, progress func(done, total int64)) (VerifyPacksReport, error) {
	var rep VerifyPacksReport
	if _, err := p.LoadIndex(ctx); err != nil {
		return rep, err
	}
	start := time.Now()
	infos, err := p.listPacks(ctx)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	sizes := map[chunker.ID]int64{}
	for id, in := range infos {
		sizes[id] = in.Size
	}
	p.mu.RLock()
	counts := make([]int, len(p.packs)) // index entries that point into each pack
	for _, loc := range p.chunks {
		counts[loc.pack]++
	}
	type job struct {
		no uint32
		id chunker.ID
	}
	var jobs []job
	var total int64
	for no, id := range p.packs {
		if sample != nil && !sample(id) {
			rep.SampledOut++
			continue
		}
		jobs = append(jobs, job{uint32(no), id})
		total += sizes[id]
	}
	p.mu.RUnlock()

	var (
		mu   sync.Mutex
		done int64
		wg   sync.WaitGroup
	)
	work := make(chan job)
	for range max(runtime.GOMAXPROCS(0), 2) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []byte
			for j := range work {
				var r packResult
				r, buf = p.verifyPack(ctx, j.no, j.id, sizes[j.id], counts[j.no], buf)
				mu.Lock()
				rep.Packs++
				rep.Chunks += r.chunks
				rep.Bytes += r.bytes
				if r.problem != nil {
					rep.Problems = append(rep.Problems, *r.problem)
				}
				done += r.bytes
				if progress != nil {
					progress(done, total)
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case work <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	rep.Duration = time.Since(start)
	rep.MBps = rep.MBPerSecond()
	sortProblems(rep.Problems)
	return rep, ctx.Err()
}

type packResult struct {
	chunks  int
	bytes   int64
	problem *VerifyProblem
}

// verifyPack reads and checks one pack of the listed size (0: not listed,
// found by Stat); buf is a reusable decode buffer.
func (p *Packs) verifyPack(ctx context.Context, no uint32, id chunker.ID, size int64, indexed int, buf []byte) (packResult, []byte) {
	c := &packCheck{p: p, ctx: ctx, no: no, id: id, name: packName(id), bad: map[chunker.ID]bool{}, buf: buf}
	if size == 0 {
		in, err := p.be.Stat(ctx, c.name)
		if err != nil {
			return packResult{problem: c.unreadable(err)}, c.buf
		}
		size = in.Size
	}
	if size < int64(packTrailerLen) || size > int64(maxPackSize) {
		return packResult{problem: &VerifyProblem{Object: c.name, Problem: fmt.Sprintf("pack is listed as %d bytes, outside the %d..%d a pack can have (damaged, or not written by backup-cli); its chunks cannot be read", size, packTrailerLen, int64(maxPackSize))}}, c.buf
	}
	data, err := p.be.Get(ctx, c.name, 0, size)
	if err != nil {
		return packResult{problem: c.unreadable(err)}, c.buf
	}
	r := packResult{bytes: int64(len(data))}
	entries, terr := parsePackTrailer(data)
	if terr != nil {
		entries = p.indexedIn(no) // check the chunks where readers look for them
	}
	matched := 0
	for _, e := range entries {
		loc, ok := (&Index{p}).Locate(e.ID)
		if ok && loc.Pack == id {
			matched++
			if terr == nil && (loc.Offset != e.Offset || loc.Length != e.Length || loc.Raw != e.Raw || loc.Kind != e.Kind || loc.Base != e.Base) {
				c.fail(e.ID, "the index and the pack's trailer disagree on where it is")
				continue
			}
		}
		r.chunks++
		c.chunk(data, e)
	}
	var notes []string
	if terr != nil {
		notes = append(notes, fmt.Sprintf("trailer unreadable (%v); checked the chunks the index places in it", terr))
	}
	if terr == nil && matched < indexed {
		missing := 0
		for _, e := range p.indexedIn(no) {
			if !containsID(entries, e.ID) {
				c.fail(e.ID, "the index places it in this pack, the pack's trailer does not list it")
				missing++
			}
		}
		notes = append(notes, fmt.Sprintf("%d indexed chunks missing from the trailer", missing))
	}
	r.problem = c.problem(chunker.Sum(data) == id, notes, r.chunks)
	return r, c.buf
}

// packCheck is the check of one pack by VerifyPacks: the chunks found at
// fault, each once, with why.
type packCheck struct {
	p      *Packs
	ctx    context.Context
	no     uint32
	id     chunker.ID
	name   string
	faults []string
	bad    map[chunker.ID]bool
	buf    []byte // reused for decoded chunks
}

func (c *packCheck) fail(id chunker.ID, format string, args ...any) {
	if !c.bad[id] {
		c.bad[id] = true
		c.faults = append(c.faults, fmt.Sprintf("chunk %s: ", id)+fmt.Sprintf(format, args...))
	}
}

// unreadable is the problem of a pack that cannot be read: every chunk the
// index places in it is lost, unless gc is deleting it (gc deletes packs
// no manifest needs, and repacks live chunks before deleting their pack:
// no restore point is known to be affected).
func (c *packCheck) unreadable(err error) *VerifyProblem {
	if c.ctx.Err() != nil {
		return nil
	}
	prob := &VerifyProblem{Object: c.name, Problem: fmt.Sprintf("pack cannot be read: %v", err)}
	if errors.Is(err, backend.ErrNotFound) {
		if _, lerr := c.p.be.Stat(c.ctx, gcLockName); lerr == nil {
			prob.Problem = "pack was deleted after verify loaded the index, while a gc is running: run verify again when it is done"
			return prob
		}
		prob.Problem = "pack disappeared after verify loaded the index"
	}
	for _, e := range c.p.indexedIn(c.no) {
		prob.Chunks = append(prob.Chunks, e.ID)
	}
	return prob
}

// chunk decodes entry e of the pack data and checks it against its id.
func (c *packCheck) chunk(data []byte, e chunk.Entry) {
	end := int64(e.Offset) + int64(e.Length)
	if end > int64(len(data)) {
		c.fail(e.ID, "lies beyond the end of the pack")
		return
	}
	if c.p.codec.Keyless() {
		// The store's key is not here: the envelope's structure only.
		if err := c.p.codec.CheckSealed(chunk.Body{ID: e.ID, Raw: e.Raw, Body: data[e.Offset:end]}); err != nil {
			c.fail(e.ID, "is not a sealed body (%v)", err)
		}
		return
	}
	if e.Delta() {
		// Decoded with its base (read, and verified, the ordinary way);
		// verify reports a delta whose base is lost.
		base, err := c.p.Get(c.ctx, e.Base)
		if err != nil {
			c.fail(e.ID, "is stored as a delta of chunk %s, which cannot be read (%v)", e.Base, err)
			return
		}
		out, err := c.p.codec.DecodeDelta(c.buf[:0], chunk.Body{ID: e.ID, Kind: e.Kind, Raw: e.Raw, Base: e.Base, Body: data[e.Offset:end]}, base, c.name)
		if err != nil {
			c.fail(e.ID, "delta against chunk %s does not decode to its content (%v)", e.Base, err)
			return
		}
		c.buf = out
		return
	}
	body := data[e.Offset:end]
	if c.p.codec.Sealed() {
		var err error
		if body, err = c.p.codec.Open(chunk.Body{ID: e.ID, Kind: e.Kind, Raw: e.Raw, Body: body}, c.name); err != nil {
			c.fail(e.ID, "does not open: altered, or stored under another id (%v)", err)
			return
		}
	}
	out, err := c.p.codec.Decompress(c.buf[:0], body)
	switch {
	case err != nil:
		c.fail(e.ID, "cannot be decompressed (%v)", err)
	case uint32(len(out)) != e.Raw:
		c.fail(e.ID, "decompresses to %d bytes, the index says %d", len(out), e.Raw)
	case c.p.codec.ID(out) != e.ID:
		c.fail(e.ID, "content does not match its name")
	}
	if err == nil {
		c.buf = out
	}
}

// problem sums the check up: nil when the pack is sound.
func (c *packCheck) problem(hashOK bool, notes []string, chunks int) *VerifyProblem {
	if hashOK && len(c.faults) == 0 && len(notes) == 0 {
		return nil
	}
	var msg []string
	if !hashOK {
		msg = append(msg, "pack content does not match its name (damaged)")
	}
	msg = append(msg, notes...)
	switch {
	case len(c.faults) > 0:
		msg = append(msg, fmt.Sprintf("%d of %d chunks fail: %s", len(c.faults), chunks, strings.Join(clip(c.faults, 5), "; ")))
	case !hashOK:
		msg = append(msg, "but every chunk verifies: the damage is outside the chunk bodies")
	}
	prob := &VerifyProblem{Object: c.name, Problem: strings.Join(msg, "; ")}
	for id := range c.bad {
		prob.Chunks = append(prob.Chunks, id)
	}
	sort.Slice(prob.Chunks, func(i, j int) bool { return bytes.Compare(prob.Chunks[i][:], prob.Chunks[j][:]) < 0 })
	return prob
}

// indexedIn lists the loaded index's entries that point into pack no (a
// scan of the whole index: only for packs found damaged).
func (p *Packs) indexedIn(no uint32) []chunk.Entry {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out []chunk.Entry
	for id, loc := range p.chunks {
		if loc.pack == no {
			out = append(out, chunk.Entry{ID: id, Kind: loc.kind, Offset: loc.offset, Length: loc.length, Raw: loc.raw, Base: p.bases[loc.base]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Offset < out[j].Offset })
	return out
}

func containsID(entries []chunk.Entry, id chunker.ID) bool {
	for _, e := range entries {
		if e.ID == id {
			return true
		}
	}
	return false
}

func clip(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
}
