package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// DefaultSegmentSize is the largest preallocated segment file when
// Options.SegmentSize is 0: about 5,000 typical changes (1.5 KB) per file, so
// that a node writing much between compactions pays the cost of preparing a
// segment rarely, and always off the hot path.
const DefaultSegmentSize = 8 << 20

// MinSegmentSize is the smallest preallocated segment file when
// Options.SegmentSize is 0. Segments are then sized to the journal's use
// (see nextSize): a node whose journal is trimmed after each compaction
// keeps small segments, so that preallocated zeros do not dominate the
// store; appends are as fast from this size as from larger ones
// (docs/benchmark.md, "Journal segments").
const MinSegmentSize = 64 << 10

// minSegmentSize keeps a segment able to hold a header and a small record.
const minSegmentSize = 128

var (
	// ErrLocked is wrapped by Open's error when another writer (another
	// process, or another Open in this one) holds the journal's directory.
	ErrLocked = errors.New("journal locked")
	// ErrCorrupt is wrapped by errors about damage that is not a torn tail:
	// acknowledged records are unreadable or inconsistent. The journal
	// cannot be trusted; restore from the store and re-initialise it.
	ErrCorrupt = errors.New("journal corrupt")
	// ErrClosed is wrapped by the errors of calls made after Close.
	ErrClosed = errors.New("journal closed")
	// ErrTrimmed is wrapped when the records asked for start before the
	// oldest record still in the journal (Trim removed them): they must come
	// from the store's sealed change chunks instead.
	ErrTrimmed = errors.New("records trimmed from journal")
)

// Options tune a journal opened for writing.
type Options struct {
	// SegmentSize is the number of bytes preallocated per segment file.
	// 0 sizes each new segment to the journal's use: the bytes of records
	// the journal holds when the segment is prepared (records since the
	// last Trim), rounded up to a power of two, between MinSegmentSize and
	// DefaultSegmentSize. A record that does not fit in what is left of a
	// segment starts a new one; a record bigger than a segment gets a
	// segment of its own, grown to fit.
	SegmentSize int64
	// FirstSeq is the seq of the first record of a journal created by this
	// Open (0 = 1). It lets a journal re-created after loss continue the
	// node's numbering instead of reusing seqs the store already holds.
	// Ignored when dir already holds segments.
	FirstSeq uint64
	// WAL, when set, makes appends durable by group commit (see WAL):
	// the record is written to the segment without fdatasync and made
	// durable in the WAL, under the name Node.
	WAL  *WAL
	Node string
	// minSegment overrides MinSegmentSize (adaptive sizing only): for
	// BenchmarkAppendSegments, which compares minimums in one run.
	minSegment int64
}

// Journal is a node's journal opened for writing: the only writer of its
// directory (flock). Append, Replace, Last, NextSeq, Size, Records and Trim
// may be called from several goroutines; writes are serialized.
type Journal struct {
	dir     string
	segSize int64 // the fixed segment size, or the largest one when adaptive
	// adaptive: segments are sized by nextSize (Options.SegmentSize 0).
	adaptive  bool
	minSeg    int64 // the smallest adaptive segment (MinSegmentSize)
	lock      *os.File
	recovered int64

	// trimMu lets Records read segment files that Trim would delete:
	// Records holds it shared, Trim and Close exclusively.
	trimMu sync.RWMutex

	// wmu serializes Append, Replace and Close and guards the writer's
	// fields below.
	wmu    sync.Mutex
	f      *os.File // newest segment, read-write
	off    int64    // offset of the next frame in f
	cap    int64    // size of f
	buf    []byte   // frame encoding buffer
	spare  chan spareFile
	failed error // sticky: after a failed write or sync nothing is certain

	// group, when set, makes records durable (see WAL); deferSync writes
	// without fdatasync (WAL replay syncs once at the end). Either way
	// dirty says f holds writes not yet fdatasync'ed; syncMu guards
	// dirty and f against a WAL reset syncing from another goroutine.
	group     *WAL
	node      string
	deferSync bool
	syncMu    sync.Mutex
	dirty     bool

	// mu guards the state readers see. Writers update it only after the
	// data is durable, so readers never see an unacknowledged record.
	mu      sync.Mutex
	segs    []segment
	last    Record
	hasLast bool
	nextSeq uint64
	size    int64
	closed  bool
}

// spareFile is a preallocated segment file prepared in the background.
type spareFile struct {
	f    *os.File
	size int64
	err  error
}

// Open opens the journal in dir for writing, creating dir if it is missing.
// It takes an exclusive flock on dir/LOCK (failing with ErrLocked if another
// writer holds it), validates every segment, and repairs a torn tail in the
// newest segment: a crash during an append can only have torn the record
// being appended, which was never acknowledged, so it is zeroed and
// appending resumes there (Recovered reports the bytes dropped). Any other
// damage fails with ErrCorrupt and a message naming the file and offset.
func Open(dir string, opts Options) (*Journal, error) {
	segSize, adaptive := opts.SegmentSize, false
	switch {
	case segSize == 0:
		segSize, adaptive = DefaultSegmentSize, true
	case segSize < minSegmentSize:
		return nil, fmt.Errorf("journal %s: open: segment size %d is below the minimum %d", dir, segSize, minSegmentSize)
	}
	if opts.WAL != nil && (opts.Node == "" || len(opts.Node) > maxWALNode) {
		return nil, fmt.Errorf("journal %s: open: a write-ahead log needs a node name of 1 to %d bytes, not %q", dir, maxWALNode, opts.Node)
	}
	first := opts.FirstSeq
	if first == 0 {
		first = 1
	}
	if err := makeDir(dir); err != nil {
		return nil, fmt.Errorf("journal %s: create directory: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	j := &Journal{dir: dir, segSize: segSize, adaptive: adaptive, minSeg: MinSegmentSize, lock: lock}
	if opts.minSegment > 0 {
		j.minSeg = max(opts.minSegment, minSegmentSize)
	}
	if err := j.load(first); err != nil {
		if j.f != nil {
			j.f.Close()
		}
		lock.Close() // releases the flock
		return nil, err
	}
	if opts.WAL != nil {
		j.group, j.node = opts.WAL, opts.Node
		j.group.attach(j)
	}
	return j, nil
}

// load scans the segments and prepares the newest one for appending.
func (j *Journal) load(firstSeq uint64) error {
	if err := removeTemps(j.dir); err != nil {
		return fmt.Errorf("journal %s: remove temporary files: %w", j.dir, err)
	}
	list, err := listSegments(j.dir)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		return j.createFirst(firstSeq)
	}

	var lastP []byte
	var lastH payloadHead
	emit := func(p []byte, h payloadHead) error {
		lastP, lastH, j.hasLast = append(lastP[:0], p...), h, true
		return nil
	}
	var next uint64
	for i, s := range list {
		sc, err := j.loadSegment(i, s, i == len(list)-1, next, emit)
		if err != nil {
			return err
		}
		s.end = sc.end
		j.segs = append(j.segs, s)
		j.size += sc.end - headerSize
		next = sc.next
		j.off, j.cap = sc.end, sc.size
	}
	if j.cap < j.minSize() {
		if err := j.extendNewest(list[len(list)-1].name); err != nil {
			return err
		}
	}
	j.nextSeq = next
	if j.hasLast {
		j.last = decodePayload(lastP, lastH)
	}
	return nil
}

// createFirst creates the first segment of a journal that has none,
// starting at seq firstSeq, so that appending can begin at once.
func (j *Journal) createFirst(firstSeq uint64) error {
	tmp := filepath.Join(j.dir, segName(firstSeq)+tmpSuffix)
	f, err := preallocate(tmp, j.minSize())
	if err != nil {
		return fmt.Errorf("journal %s: create first segment: %w", j.dir, err)
	}
	j.f = f
	name, err := installSegment(j.dir, f, tmp, firstSeq)
	if err != nil {
		return fmt.Errorf("journal %s: create first segment: %w", j.dir, err)
	}
	j.segs = []segment{{name: name, first: firstSeq, end: headerSize}}
	j.off, j.cap, j.nextSeq = headerSize, j.minSize(), firstSeq
	return nil
}

// loadSegment opens and scans segment s, the i-th listed (newest: the
// last, opened for writing and kept in j.f), passing its valid records to
// emit. Its first seq must follow the previous segment's records (next):
// a gap means a segment is missing. An invalid record is a torn append,
// repaired, only in the newest segment; anywhere else it is corruption.
func (j *Journal) loadSegment(i int, s segment, newest bool, next uint64, emit func([]byte, payloadHead) error) (segScan, error) {
	flag := os.O_RDONLY
	if newest {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(filepath.Join(j.dir, s.name), flag, 0)
	if err != nil {
		return segScan{}, fmt.Errorf("journal %s: open segment %s: %w", j.dir, s.name, err)
	}
	if newest {
		j.f = f // closed by Open on error
	}
	sc, err := scanSegment(j.dir, f, s, emit)
	if err == nil && i > 0 && sc.first != next {
		err = fmt.Errorf("journal %s: segment %s starts at seq %d, but the seq after the previous segment's records is %d (segment missing or damaged): %w", j.dir, s.name, sc.first, next, ErrCorrupt)
	}
	if err == nil && sc.bad != nil {
		if newest {
			err = j.repairTail(f, s.name, &sc)
		} else {
			err = fmt.Errorf("journal %s: segment %s %s (not the newest segment, so not a torn append): %w", j.dir, s.name, sc.bad, ErrCorrupt)
		}
	}
	if !newest {
		f.Close()
	}
	return sc, err
}

// extendNewest extends the newest segment (name), shorter than
// preallocated (truncated, or made with a smaller SegmentSize), with
// written zeros, so that it is like a preallocated one: the fdatasyncs of
// records written over the zeros carry no metadata.
func (j *Journal) extendNewest(name string) error {
	if err := zeroRange(j.f, j.cap, j.minSize()); err != nil {
		return fmt.Errorf("journal %s: extend segment %s: %w", j.dir, name, err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("journal %s: extend segment %s: %w", j.dir, name, err)
	}
	j.cap = j.minSize()
	return nil
}

// repairTail handles the first invalid record of the newest segment: if a
// valid record follows it, acknowledged changes lie beyond damage
// (ErrCorrupt); otherwise it is a torn append, which is zeroed.
func (j *Journal) repairTail(f *os.File, name string, sc *segScan) error {
	x := sc.bad.off
	tail, err := readFrom(f, x, sc.size)
	if err != nil {
		return fmt.Errorf("journal %s: segment %s: read tail: %w", j.dir, name, err)
	}
	found, at, seq, nonZeroEnd := findValidAfter(tail, x, sc.first, sc.next-1)
	if found {
		return fmt.Errorf("journal %s: segment %s: damaged record at %s, yet a valid record (seq %d) follows at offset %d: "+
			"acknowledged changes would be lost; restore the node's database from the store (backup-cli restore) and re-initialise the journal: %w",
			j.dir, name, sc.bad, seq, at, ErrCorrupt)
	}
	if err := zeroRange(f, x, nonZeroEnd); err != nil {
		return fmt.Errorf("journal %s: segment %s: zero torn tail at offset %d: %w", j.dir, name, x, err)
	}
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("journal %s: segment %s: zero torn tail at offset %d: %w", j.dir, name, x, err)
	}
	j.recovered = nonZeroEnd - x
	sc.end = x
	return nil
}

// Recovered returns the number of bytes of a torn last record that Open
// dropped (0 if the journal was clean). A torn record was never
// acknowledged, so nothing lightningd committed was lost; the plugin should
// log it.
func (j *Journal) Recovered() int64 { return j.recovered }

// Append makes r durable (written and fdatasync'ed) before returning, so the
// caller may then answer lightningd's db_write with "continue". It assigns
// r.Seq (NextSeq), sets r.Time to time.Now() if it is zero, and returns the
// record as stored. After a failed write or sync the journal refuses all
// further writes (the state of the file is unknown): reopen it.
func (j *Journal) Append(r Record) (Record, error) {
	return j.write(kindAppend, r)
}

// Replace is the one-step rewind: lightningd resent data_version V because
// it died before committing the change the journal holds for V. r (with
// r.Version == V, the Version of the last record) replaces, in the logical
// view, every trailing record whose Version is V: the uncommitted change
// and the PRAGMA-only records after it. It is an append of a record flagged
// "replace", never an overwrite, and durable before returning. It fails if
// the journal holds no record or r.Version differs from Last().Version.
func (j *Journal) Replace(r Record) (Record, error) {
	return j.write(kindReplace, r)
}

func (j *Journal) write(kind byte, r Record) (Record, error) {
	op := "append"
	if kind == kindReplace {
		op = "replace"
	}
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.mu.Lock()
	closed, seq, last, hasLast := j.closed, j.nextSeq, j.last, j.hasLast
	j.mu.Unlock()
	if closed {
		return Record{}, fmt.Errorf("journal %s: %s: %w", j.dir, op, ErrClosed)
	}
	if j.failed != nil {
		return Record{}, fmt.Errorf("journal %s: %s seq %d: an earlier write failed, reopen the journal: %w", j.dir, op, seq, j.failed)
	}
	if kind == kindReplace {
		if !hasLast {
			return Record{}, fmt.Errorf("journal %s: replace version %d: the journal holds no record to replace", j.dir, r.Version)
		}
		if r.Version != last.Version {
			return Record{}, fmt.Errorf("journal %s: replace version %d: the last record (seq %d) has version %d", j.dir, r.Version, last.Seq, last.Version)
		}
	}
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	nanos, ok := encodeTime(r.Time)
	if !ok {
		return Record{}, fmt.Errorf("journal %s: %s seq %d: time %v outside the representable range", j.dir, op, seq, r.Time)
	}
	r.Seq = seq
	frame, err := appendFrame(j.buf[:0], kind, &r, nanos)
	if err != nil {
		return Record{}, fmt.Errorf("journal %s: %s seq %d: %w", j.dir, op, seq, err)
	}
	if cap(frame) <= 1<<20 {
		j.buf = frame[:0] // keep a buffer of typical size, not a giant one
	}
	if int64(len(frame)) > j.cap-j.off {
		if err := j.rollover(len(frame), seq); err != nil {
			return Record{}, fmt.Errorf("journal %s: %s seq %d: new segment: %w", j.dir, op, seq, err)
		}
	}
	if err := j.writeFrame(frame); err != nil {
		j.failed = err
		return Record{}, fmt.Errorf("journal %s: %s seq %d: %w", j.dir, op, seq, err)
	}
	j.off += int64(len(frame))
	r.Time = decodeTime(nanos) // what a reader will get back
	stored := r
	stored.Statements = slices.Clone(r.Statements)

	j.mu.Lock()
	j.segs[len(j.segs)-1].end = j.off
	j.size += int64(len(frame))
	j.last, j.hasLast, j.nextSeq = stored, true, seq+1
	j.mu.Unlock()

	if j.spare == nil && j.off-headerSize > (min(j.cap, j.segSize)-headerSize)/2 {
		j.startSpare()
	}
	return r, nil
}

// startSpare prepares the next segment file in the background, so that a
// rollover on the hot path costs a header write and a rename, not writing
// SegmentSize bytes of zeros. Called with wmu held.
func (j *Journal) startSpare() {
	ch := make(chan spareFile, 1)
	j.spare = ch
	path, size := filepath.Join(j.dir, spareName), j.nextSize()
	go func() {
		f, err := preallocate(path, size)
		ch <- spareFile{f, size, err}
	}()
}

// minSize is the size of a journal's first segment, and the least the
// newest segment is extended to on Open.
func (j *Journal) minSize() int64 {
	if j.adaptive {
		return j.minSeg
	}
	return j.segSize
}

// nextSize is the size of the next segment. With a fixed SegmentSize, that
// size. Otherwise it follows the journal's use, between MinSegmentSize and
// DefaultSegmentSize: twice the newest segment's size while records pile up
// untrimmed (the older segments still hold at least a segment's worth: few
// rollovers between compactions), half of it once Trim removed every older
// segment (a node compacted regularly keeps small segments), the same size
// otherwise. Called with wmu held, when the newest segment is half full
// (startSpare) or full (rollover).
func (j *Journal) nextSize() int64 {
	if !j.adaptive {
		return j.segSize
	}
	cur := min(j.cap, j.segSize)
	j.mu.Lock()
	older := j.size - (j.off - headerSize)
	j.mu.Unlock()
	n := cur
	switch {
	case older >= cur:
		n = 2 * cur
	case older <= 0:
		n = cur / 2
	}
	return min(max(n, j.minSeg), j.segSize)
}

// rollover makes a new segment, durable and empty, whose first record will
// be seq first, and makes it the one appended to. Called with wmu held.
func (j *Journal) rollover(frameLen int, first uint64) error {
	need := int64(headerSize + frameLen)
	var f *os.File
	var tmp string
	if need <= j.segSize && j.spare != nil {
		sp := <-j.spare
		j.spare = nil
		switch {
		case sp.err != nil:
		case need <= sp.size:
			f, tmp = sp.f, filepath.Join(j.dir, spareName)
		default:
			// A record bigger than the (adaptive) spare: a segment of
			// its own below.
			sp.f.Close()
			os.Remove(filepath.Join(j.dir, spareName))
		}
	}
	if f == nil {
		// No spare (or it failed: retry here, reporting this error), or a
		// record larger than a segment: a segment of its own, grown to fit.
		tmp = filepath.Join(j.dir, segName(first)+tmpSuffix)
		var err error
		if f, err = preallocate(tmp, max(j.nextSize(), need)); err != nil {
			return err
		}
	}
	name, err := installSegment(j.dir, f, tmp, first)
	if err != nil {
		f.Close()
		os.Remove(tmp)
		j.failed = err // the rename may or may not have happened
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		j.failed = err
		return err
	}
	j.mu.Lock()
	if n := len(j.segs); j.segs[n-1].first == first {
		// The newest segment held no record (it carried the same name): the
		// rename replaced it.
		j.segs[n-1] = segment{name: name, first: first, end: headerSize}
	} else {
		j.segs = append(j.segs, segment{name: name, first: first, end: headerSize})
	}
	j.mu.Unlock()
	// The records of the old segment must be durable before the WAL can
	// forget them: a WAL reset syncs only the newest segment.
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	if j.dirty {
		if err := fdatasync(j.f); err != nil {
			j.failed = err
			return err
		}
		j.dirty = false
	}
	j.f.Close()
	j.f, j.off, j.cap = f, headerSize, fi.Size()
	return nil
}

// Last returns the last logical record (a replacement, if the last write was
// a Replace); ok is false when the journal holds none. On start-up the
// plugin compares lightningd's data_version with Last().Version.
func (j *Journal) Last() (Record, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := j.last
	r.Statements = slices.Clone(r.Statements)
	return r, j.hasLast
}

// NextSeq returns the seq the next Append or Replace will assign. Seqs are
// never reused, also across Trim and reopen.
func (j *Journal) NextSeq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.nextSeq
}

// Size returns the bytes of records currently in the journal's segments
// (frames included, preallocated zeros excluded): the basis for status
// reports and for deciding when to seal or compact.
func (j *Journal) Size() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.size
}

// Trim deletes the segment files all of whose records have Seq <= uptoSeq,
// oldest first, and fsyncs the directory. Call it only once a durable
// manifest covers those records. It never deletes the newest segment, nor
// the segment holding the last record, so NextSeq, Last and Replace keep
// working. It waits for Records calls in progress (do not call it from a
// Records callback).
func (j *Journal) Trim(uptoSeq uint64) error {
	j.trimMu.Lock()
	defer j.trimMu.Unlock()
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return fmt.Errorf("journal %s: trim to seq %d: %w", j.dir, uptoSeq, ErrClosed)
	}
	var doomed []segment
	for k := 0; k+1 < len(j.segs); k++ {
		next := j.segs[k+1].first // seq after segment k's records
		if next-1 > uptoSeq || next >= j.nextSeq {
			break
		}
		doomed = append(doomed, j.segs[k])
	}
	j.mu.Unlock()
	if len(doomed) == 0 {
		return nil
	}
	// Appends only touch the tail of j.segs, and trimMu excludes other
	// Trims, so the doomed prefix stays the prefix.
	removed := 0
	var err error
	for _, s := range doomed {
		if err = os.Remove(filepath.Join(j.dir, s.name)); err != nil {
			err = fmt.Errorf("journal %s: trim to seq %d: remove %s: %w", j.dir, uptoSeq, s.name, err)
			break
		}
		removed++
	}
	if serr := fsyncDir(j.dir); serr != nil && err == nil {
		err = fmt.Errorf("journal %s: trim to seq %d: fsync directory: %w", j.dir, uptoSeq, serr)
	}
	j.mu.Lock()
	for _, s := range j.segs[:removed] {
		j.size -= s.end - headerSize
	}
	j.segs = slices.Clone(j.segs[removed:])
	j.mu.Unlock()
	return err
}

// Close waits for writes, Records and Trim in progress, releases the lock
// and closes the files. Records appended before are durable already. Calls
// after Close fail with ErrClosed; a second Close returns nil.
func (j *Journal) Close() error {
	j.trimMu.Lock()
	defer j.trimMu.Unlock()
	j.wmu.Lock()
	defer j.wmu.Unlock()
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	j.mu.Unlock()
	var errs []error
	if _, err := j.syncDirty(); err != nil {
		errs = append(errs, err)
	}
	if j.group != nil {
		j.group.detach(j)
	}
	if j.spare != nil {
		if sp := <-j.spare; sp.f != nil {
			sp.f.Close()
			os.Remove(filepath.Join(j.dir, spareName))
		}
		j.spare = nil
	}
	if err := j.f.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := j.lock.Close(); err != nil { // releases the flock
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("journal %s: close: %w", j.dir, err)
	}
	return nil
}

// writeFrame writes a record's frame at j.off and makes it durable: by
// fdatasync of the segment, or through the group's WAL (the segment is
// then synced later, before the WAL forgets the record). Called with wmu
// held.
func (j *Journal) writeFrame(frame []byte) error {
	if j.group == nil && !j.deferSync {
		if _, err := j.f.WriteAt(frame, j.off); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if err := fdatasync(j.f); err != nil {
			return fmt.Errorf("fdatasync: %w", err)
		}
		return nil
	}
	j.syncMu.Lock()
	_, err := j.f.WriteAt(frame, j.off)
	j.dirty = true // even a failed write may have changed the file
	j.syncMu.Unlock()
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if j.group != nil {
		if err := j.group.commit(j.node, frame); err != nil {
			return fmt.Errorf("group commit: %w", err)
		}
	}
	return nil
}

// syncDirty fdatasyncs the newest segment if it holds writes not yet
// synced (group commit, WAL replay); synced says whether it did.
func (j *Journal) syncDirty() (synced bool, err error) {
	j.syncMu.Lock()
	defer j.syncMu.Unlock()
	if !j.dirty {
		return false, nil
	}
	if err := fdatasync(j.f); err != nil {
		return true, fmt.Errorf("journal %s: fdatasync: %w", j.dir, err)
	}
	j.dirty = false
	return true, nil
}
