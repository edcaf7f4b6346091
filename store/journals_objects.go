package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/journal"
	"golang.org/x/sync/errgroup"
)

// objectJournals keeps each node's journal as one object per record,
// nodes/<node>/journal/<seq as 16 hex digits>, for stores whose objects are
// in a bucket (s3://): a bucket has no file to append to and fsync, but a
// conditional PUT is durable when it returns, and its name makes a record
// exist exactly once. Trim deletes the records a manifest covers except the
// newest, which carries the numbering across a reopen.
type objectJournals struct {
	be backend.Backend
	// retryFor is how long a record's PUT is retried before the db_write
	// is refused (Options.RetryFor).
	retryFor time.Duration
}

func newObjectJournals(be backend.Backend, retryFor time.Duration) *objectJournals {
	if retryFor <= 0 {
		retryFor = DefaultRetryFor
	}
	return &objectJournals{be: be, retryFor: retryFor}
}

// Record objects: "CLNJREC\x01", a kind byte ('a' append, 'r' replace),
// the record as a one-record change chunk (journal.EncodeChunk), and the
// CRC-32C of everything before it.
const (
	recordMagic      = "CLNJREC\x01"
	recordKindAppend = 'a'
	recordKindRepl   = 'r'
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeRecordObject(kind byte, r journal.Record) []byte {
	b := append([]byte(recordMagic), kind)
	b = append(b, journal.EncodeChunk([]journal.Record{r})...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeRecordObject checks and decodes a record object named for seq.
func decodeRecordObject(data []byte, seq uint64) (journal.Record, byte, error) {
	n := len(recordMagic) + 1
	if len(data) < n+4 || string(data[:len(recordMagic)]) != recordMagic {
		return journal.Record{}, 0, fmt.Errorf("record %d: not a journal record object: %w", seq, journal.ErrCorrupt)
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return journal.Record{}, 0, fmt.Errorf("record %d: checksum mismatch: %w", seq, journal.ErrCorrupt)
	}
	kind := data[len(recordMagic)]
	if kind != recordKindAppend && kind != recordKindRepl {
		return journal.Record{}, 0, fmt.Errorf("record %d: unknown kind %q: %w", seq, kind, journal.ErrCorrupt)
	}
	recs, err := journal.DecodeChunk(body[n:])
	if err != nil || len(recs) != 1 || recs[0].Seq != seq {
		return journal.Record{}, 0, fmt.Errorf("record %d: bad content (%v): %w", seq, err, journal.ErrCorrupt)
	}
	return recs[0], kind, nil
}

func recordPrefix(node string) string { return JournalObject(node) + "/" }

func recordName(node string, seq uint64) string {
	return fmt.Sprintf("%s%016x", recordPrefix(node), seq)
}

// heldRecord is a record object in the bucket.
type heldRecord struct {
	seq  uint64
	size int64
}

// listRecords lists a node's record objects in seq order: the consecutive
// run that ends with the newest (held), and the records before a gap
// (stale): left by a trim that stopped half-way (Trim deletes
// concurrently), all covered by a manifest. A reader asking for records
// before the run gets journal.ErrTrimmed, so a record lost in the middle is
// never skipped silently. It fails on a name that is not a record's.
func (j *objectJournals) listRecords(ctx context.Context, node string) (held, stale []heldRecord, err error) {
	err = j.be.List(ctx, recordPrefix(node), func(in backend.Info) error {
		hex := strings.TrimPrefix(in.Name, recordPrefix(node))
		seq, err := strconv.ParseUint(hex, 16, 64)
		if err != nil || len(hex) != 16 || seq == 0 {
			return fmt.Errorf("object %s is not a journal record: %w", in.Name, journal.ErrCorrupt)
		}
		if len(held) > 0 && seq != held[len(held)-1].seq+1 {
			stale, held = append(stale, held...), nil
		}
		if in.Size > journal.MaxPayload+1024 {
			return fmt.Errorf("record object %s of %d bytes is larger than any record: %w", in.Name, in.Size, journal.ErrCorrupt)
		}
		held = append(held, heldRecord{seq, in.Size})
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("journal of node %q in %s: %w", node, j.be.Location(), err)
	}
	return held, stale, nil
}

// getRecord reads and decodes a record object, no more bytes than its
// listing said (bounded by listRecords): a server cannot make it hold more.
func (j *objectJournals) getRecord(ctx context.Context, node string, h heldRecord) (journal.Record, byte, error) {
	seq := h.seq
	data, err := j.be.Get(ctx, recordName(node, seq), 0, h.size)
	if err != nil {
		return journal.Record{}, 0, fmt.Errorf("journal of node %q in %s: %w", node, j.be.Location(), err)
	}
	r, kind, err := decodeRecordObject(data, seq)
	if err != nil {
		return journal.Record{}, 0, fmt.Errorf("journal of node %q in %s: %w", node, j.be.Location(), err)
	}
	return r, kind, nil
}

func (j *objectJournals) OpenJournal(ctx context.Context, node string) (Journal, error) {
	held, stale, err := j.listRecords(ctx, node)
	if err != nil {
		return nil, err
	}
	oj := &objectJournal{js: j, node: node, held: held, stale: stale, next: 1, cache: map[uint64]cachedRecord{}}
	if n := len(held); n > 0 {
		r, kind, err := j.getRecord(ctx, node, held[n-1])
		if err != nil {
			return nil, err
		}
		oj.last, oj.hasLast, oj.next = r, true, r.Seq+1
		oj.cacheAdd(r, kind, held[n-1].size)
		for _, h := range append(held, stale...) {
			oj.size += h.size
		}
	}
	return oj, nil
}

func (j *objectJournals) ReadJournal(ctx context.Context, node string, afterSeq uint64, fn func(journal.Record) error) error {
	held, _, err := j.listRecords(ctx, node)
	if err != nil {
		return err
	}
	return j.resolve(ctx, node, held, afterSeq, nil, fn)
}

func (j *objectJournals) CheckJournal(ctx context.Context, node string) (bool, error) {
	held, _, err := j.listRecords(ctx, node)
	if err != nil || len(held) == 0 {
		return len(held) > 0, err
	}
	for len(held) > 0 {
		batch := held[:min(len(held), fetchBatch)]
		held = held[len(batch):]
		if _, err := j.fetch(ctx, node, batch, nil); err != nil {
			return true, err
		}
	}
	return true, nil
}

// resolve reads the records after afterSeq in order and calls fn with the
// logical ones: a replace record drops the trailing records of its version
// before it (see journal.Journal.Replace). Records at or before afterSeq
// never matter: a manifest covers them, so they are not read. cached
// supplies records without a GET when it has them.
func (j *objectJournals) resolve(ctx context.Context, node string, held []heldRecord, afterSeq uint64, cached func(uint64) (cachedRecord, bool), fn func(journal.Record) error) error {
	if len(held) > 0 && held[0].seq > afterSeq+1 {
		return fmt.Errorf("journal of node %q in %s: records after %d: the journal starts at record %d: %w", node, j.be.Location(), afterSeq, held[0].seq, journal.ErrTrimmed)
	}
	var group []journal.Record
	flush := func() error {
		for _, r := range group {
			if err := fn(r); err != nil {
				return err
			}
		}
		group = group[:0]
		return nil
	}
	for len(held) > 0 && held[0].seq <= afterSeq {
		held = held[1:]
	}
	for len(held) > 0 {
		batch := held[:min(len(held), fetchBatch)]
		held = held[len(batch):]
		recs, err := j.fetch(ctx, node, batch, cached)
		if err != nil {
			return err
		}
		for _, c := range recs {
			if len(group) > 0 && group[0].Version != c.rec.Version {
				if err := flush(); err != nil {
					return err
				}
			}
			if c.kind == recordKindRepl {
				group = group[:0]
			}
			group = append(group, c.rec)
		}
	}
	return flush()
}

// fetchBatch records are read at once, by fetchWorkers concurrent GETs: a
// plugin starting after a crash reads up to a compaction's worth of
// records, each a round trip to the bucket.
const fetchBatch, fetchWorkers = 256, 16

// fetch returns the records of batch in order, from cached when it has
// them, else read concurrently.
func (j *objectJournals) fetch(ctx context.Context, node string, batch []heldRecord, cached func(uint64) (cachedRecord, bool)) ([]cachedRecord, error) {
	out := make([]cachedRecord, len(batch))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fetchWorkers)
	for i, h := range batch {
		if cached != nil {
			if c, ok := cached(h.seq); ok {
				out[i] = c
				continue
			}
		}
		g.Go(func() error {
			r, kind, err := j.getRecord(gctx, node, h)
			out[i] = cachedRecord{r, kind}
			return err
		})
	}
	return out, g.Wait()
}

var errObjectJournalFailed = errors.New("an earlier write failed: reopen the journal")

type cachedRecord struct {
	rec  journal.Record
	kind byte
}

// maxCachedBytes bounds the records an open journal keeps in memory so
// that a compaction seals them without GETs; past it they are read back.
const maxCachedBytes = 32 << 20

// objectJournal is a node's journal in a bucket, open for appending.
type objectJournal struct {
	js   *objectJournals
	node string
	wmu  sync.Mutex // serialises writes
	tmu  sync.Mutex // serialises trims (which do not hold up writes)
	mu   sync.Mutex // guards the fields below
	held []heldRecord
	// stale are records before a gap, left by a trim that stopped: the
	// next Trim deletes them.
	stale []heldRecord
	next  uint64
	last  journal.Record
	// hasLast, size, closed, failed: as journal.Journal's.
	hasLast     bool
	size        int64
	closed      bool
	failed      error
	cache       map[uint64]cachedRecord
	cachedBytes int64
}

var _ Journal = (*objectJournal)(nil)

func (o *objectJournal) cacheAdd(r journal.Record, kind byte, size int64) {
	if o.cachedBytes+size > maxCachedBytes {
		return
	}
	o.cache[r.Seq] = cachedRecord{r, kind}
	o.cachedBytes += size
}

func (o *objectJournal) Append(r journal.Record) (journal.Record, error) {
	return o.write(recordKindAppend, r)
}

func (o *objectJournal) Replace(r journal.Record) (journal.Record, error) {
	return o.write(recordKindRepl, r)
}

// write stores the record under the next seq with one conditional PUT and
// returns once the bucket has it. A lost answer is retried for retryFor; a
// retry that finds the name taken is ours if the bytes are ours (the
// backend checks that), so a record is stored exactly once. The name taken
// by other bytes means another writer has the node: the lease was lost.
func (o *objectJournal) write(kind byte, r journal.Record) (journal.Record, error) {
	op := "append"
	if kind == recordKindRepl {
		op = "replace"
	}
	o.wmu.Lock()
	defer o.wmu.Unlock()
	o.mu.Lock()
	closed, failed, seq, last, hasLast := o.closed, o.failed, o.next, o.last, o.hasLast
	o.mu.Unlock()
	switch {
	case closed:
		return journal.Record{}, fmt.Errorf("journal %s of node %q: %w", op, o.node, journal.ErrClosed)
	case failed != nil:
		return journal.Record{}, fmt.Errorf("journal %s of node %q: %w (%v)", op, o.node, errObjectJournalFailed, failed)
	case kind == recordKindRepl && (!hasLast || last.Version != r.Version):
		return journal.Record{}, fmt.Errorf("journal replace of node %q: version %d does not match the last record's", o.node, r.Version)
	}
	r.Seq = seq
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Time = r.Time.Round(0)
	data := encodeRecordObject(kind, r)
	if err := o.put(recordName(o.node, seq), data); err != nil {
		o.mu.Lock()
		o.failed = err
		o.mu.Unlock()
		return journal.Record{}, fmt.Errorf("journal %s of node %q: %w", op, o.node, err)
	}
	stored, _, _ := decodeRecordObject(data, seq) // the record as it reads back
	o.mu.Lock()
	o.held = append(o.held, heldRecord{seq, int64(len(data))})
	o.next, o.last, o.hasLast = seq+1, stored, true
	o.size += int64(len(data))
	o.cacheAdd(stored, kind, int64(len(data)))
	o.mu.Unlock()
	return stored, nil
}

// put retries the conditional PUT of a record while the bucket cannot be
// reached, for the journals' retryFor.
func (o *objectJournal) put(name string, data []byte) error {
	be := o.js.be
	ctx, cancel := context.WithTimeout(context.Background(), o.js.retryFor)
	defer cancel()
	delay := 200 * time.Millisecond
	for try := 0; ; try++ {
		err := be.PutIfAbsent(ctx, name, data)
		if err == nil {
			return nil
		}
		if errors.Is(err, backend.ErrExists) {
			if try == 0 {
				return fmt.Errorf("record %s exists already: another writer has this node (%w)", name, ErrLeaseLost)
			}
			got, gerr := backend.ReadWhole(ctx, be, name, int64(len(data)))
			if gerr == nil && string(got) == string(data) {
				return nil // an earlier try was stored, its answer lost
			}
			return fmt.Errorf("record %s was written by another writer: %w", name, ErrLeaseLost)
		}
		if ctx.Err() != nil || backend.ValidName(name) != nil {
			return fmt.Errorf("store the record in %s (tried for %s): %w", be.Location(), o.js.retryFor, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("store the record in %s (tried for %s): %w", be.Location(), o.js.retryFor, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (o *objectJournal) Records(afterSeq uint64, fn func(journal.Record) error) error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return fmt.Errorf("journal of node %q: %w", o.node, journal.ErrClosed)
	}
	held := append([]heldRecord(nil), o.held...)
	o.mu.Unlock()
	cached := func(seq uint64) (cachedRecord, bool) {
		o.mu.Lock()
		defer o.mu.Unlock()
		c, ok := o.cache[seq]
		return c, ok
	}
	return o.js.resolve(context.Background(), o.node, held, afterSeq, cached, fn)
}

func (o *objectJournal) Last() (journal.Record, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last, o.hasLast
}

func (o *objectJournal) NextSeq() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.next
}

func (o *objectJournal) Size() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.size
}

// Recovered is always 0: a PUT is whole or absent, never torn.
func (o *objectJournal) Recovered() int64 { return 0 }

// Trim deletes the record objects up to uptoSeq, except the newest record,
// which keeps the journal's numbering (a reopen continues after it). It
// deletes concurrently and without holding up appends: a trim of a
// compaction's thousands of records costs round trips, not db_write
// latency. One that stops half-way leaves records before a gap, which
// listRecords sets apart and the next Trim deletes.
func (o *objectJournal) Trim(uptoSeq uint64) error {
	o.tmu.Lock()
	defer o.tmu.Unlock()
	o.mu.Lock()
	drop := o.stale
	o.stale = nil
	for len(o.held) > 1 && o.held[0].seq <= uptoSeq {
		drop = append(drop, o.held[0])
		o.held = o.held[1:]
	}
	o.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), o.js.retryFor)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(fetchWorkers)
	var failedMu sync.Mutex
	var failed []heldRecord
	for _, h := range drop {
		g.Go(func() error {
			if err := o.js.be.Delete(gctx, recordName(o.node, h.seq)); err != nil {
				failedMu.Lock()
				failed = append(failed, h)
				failedMu.Unlock()
				return err
			}
			o.mu.Lock()
			o.size -= h.size
			if _, ok := o.cache[h.seq]; ok {
				delete(o.cache, h.seq)
				o.cachedBytes -= h.size
			}
			o.mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		o.mu.Lock()
		o.stale = append(o.stale, failed...) // still there, or unknown: deleted again next time
		o.mu.Unlock()
		return fmt.Errorf("trim journal of node %q in %s: %w", o.node, o.js.be.Location(), err)
	}
	return nil
}

func (o *objectJournal) Close() error {
	o.wmu.Lock()
	defer o.wmu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	o.cache = nil
	return nil
}

// StartJournal creates a node's journal that continues at firstSeq: its
// first record object is named for firstSeq (numbering is by name).
func (j *objectJournals) StartJournal(ctx context.Context, node string, firstSeq uint64, _ string) (Journal, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return nil, err
	}
	held, stale, err := j.listRecords(ctx, node)
	if err != nil {
		return nil, err
	}
	if len(held)+len(stale) > 0 {
		return nil, fmt.Errorf("start the journal of node %q at record %d: %s already holds a journal (the node is in use: choose another node name)", node, firstSeq, j.be.Location())
	}
	if firstSeq == 0 {
		firstSeq = 1
	}
	return &objectJournal{js: j, node: node, next: firstSeq, cache: map[uint64]cachedRecord{}}, nil
}
