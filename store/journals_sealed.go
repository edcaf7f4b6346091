package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/clnbackup/backup/store/crypt"
	"github.com/clnbackup/backup/store/journal"
)

// sealedJournals is an encrypted store's view of its nodes' journals:
// every record's statements are sealed with RecordAD(node, seq,
// data_version) before they leave the client, and opened (or refused) as
// they are read, in every Journals implementation (local segment files,
// bucket objects, a store server's journal service, which so holds only
// ciphertext). A record moved to another node or seq, reordered, replayed
// at another seq or edited does not open: reading stops there with an
// error, and no statement of it reaches a caller.
//
// A sealed record keeps its seq, data_version and time in the clear (the
// journal needs them to order, resolve replacements and trim) and holds
// one statement: the envelope of the real statements (sealedStatements).
type sealedJournals struct {
	Journals
	keys *crypt.Keys
}

// ErrSealedRecord is wrapped when a journal record does not open.
var ErrSealedRecord = fmt.Errorf("%w: a sealed journal record does not open", journal.ErrCorrupt)

func (s *sealedJournals) OpenJournal(ctx context.Context, node string) (Journal, error) {
	j, err := s.Journals.OpenJournal(ctx, node)
	if err != nil {
		return nil, err
	}
	return &sealedJournal{Journal: j, node: node, keys: s.keys}, nil
}

func (s *sealedJournals) ReadJournal(ctx context.Context, node string, afterSeq uint64, fn func(journal.Record) error) error {
	rs := &recordStream{keys: s.keys, node: node, prevSeq: afterSeq}
	err := s.Journals.ReadJournal(ctx, node, afterSeq, rs.each(fn))
	if rs.err != nil && errors.Is(err, rs.err) {
		return fmt.Errorf("read the journal of node %q: %w", node, err)
	}
	return err
}

// StartJournal starts the journal the way the journals it seals do.
func (s *sealedJournals) StartJournal(ctx context.Context, node string, firstSeq uint64, owner string) (Journal, error) {
	js, ok := s.Journals.(journalStarter)
	if !ok {
		return nil, fmt.Errorf("start the journal of node %q: %w", node, ErrJournalStartUnsupported)
	}
	j, err := js.StartJournal(ctx, node, firstSeq, owner)
	if err != nil {
		return nil, err
	}
	return &sealedJournal{Journal: j, node: node, keys: s.keys}, nil
}

// sealedJournal seals what it appends and opens what it reads.
type sealedJournal struct {
	Journal
	node string
	keys *crypt.Keys
	mu   sync.Mutex // one write at a time: a record is sealed for NextSeq
}

func (j *sealedJournal) Append(r journal.Record) (journal.Record, error) {
	return j.write(r, sealedAppend, j.Journal.Append)
}

func (j *sealedJournal) Replace(r journal.Record) (journal.Record, error) {
	return j.write(r, sealedReplace, j.Journal.Replace)
}

func (j *sealedJournal) write(r journal.Record, kind byte, put func(journal.Record) (journal.Record, error)) (journal.Record, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	seq := j.Journal.NextSeq()
	stmts := r.Statements
	sealed := r
	sealed.Statements = []string{string(sealRecord(j.keys, j.node, seq, r.Version, kind, stmts))}
	out, err := put(sealed)
	if err != nil {
		return journal.Record{}, err
	}
	if out.Seq != seq {
		return journal.Record{}, fmt.Errorf("journal of node %q: the record sealed for seq %d was stored as seq %d (another writer?): it will not open; restart the plugin", j.node, seq, out.Seq)
	}
	out.Statements = stmts
	return out, nil
}

func (j *sealedJournal) Records(afterSeq uint64, fn func(journal.Record) error) error {
	rs := &recordStream{keys: j.keys, node: j.node, prevSeq: afterSeq}
	err := j.Journal.Records(afterSeq, rs.each(fn))
	if rs.err != nil && errors.Is(err, rs.err) {
		return fmt.Errorf("journal of node %q: %w", j.node, err)
	}
	return err
}

// recordStream opens the logical records of one read, in seq order, and
// checks that the journal's resolution of replacements (done from the
// records' frames, which are in the clear) agrees with the kinds sealed
// inside them: a record sealed as an append follows the record before it
// with no gap (a frame turned into a replace would have voided records
// before it), and a record sealed as a replace never follows a record of
// its own data_version (a replace frame turned into an append would have
// let the rewound change through).
type recordStream struct {
	keys    *crypt.Keys
	node    string
	prevSeq uint64 // the last seq passed on, or the read's afterSeq
	prevVer uint32
	passed  bool
	err     error // the failure to open or order, once
}

func (rs *recordStream) each(fn func(journal.Record) error) func(journal.Record) error {
	return func(r journal.Record) error {
		pr, kind, err := openRecord(rs.keys, rs.node, r)
		if err == nil {
			err = rs.check(pr, kind)
		}
		if err != nil {
			rs.err = err
			return err
		}
		rs.prevSeq, rs.prevVer, rs.passed = pr.Seq, pr.Version, true
		return fn(pr)
	}
}

func (rs *recordStream) check(r journal.Record, kind byte) error {
	switch {
	case kind == sealedAppend && r.Seq != rs.prevSeq+1:
		return fmt.Errorf("record %d (data_version %d) of node %q: %w: sealed as an append, it follows record %d: the records between were voided by a replace that was not written as one; restore stops before it", r.Seq, r.Version, rs.node, ErrSealedRecord, rs.prevSeq)
	case kind == sealedReplace && rs.passed && rs.prevVer == r.Version:
		return fmt.Errorf("record %d (data_version %d) of node %q: %w: sealed as a replace of data_version %d, it follows record %d of that version, which it should have voided (a replace written as an append); restore stops before it", r.Seq, r.Version, rs.node, ErrSealedRecord, r.Version, rs.prevSeq)
	}
	return nil
}

// Last returns the last record opened; one that does not open is returned
// without statements (Records reports it).
func (j *sealedJournal) Last() (journal.Record, bool) {
	r, ok := j.Journal.Last()
	if !ok {
		return r, ok
	}
	pr, _, err := openRecord(j.keys, j.node, r)
	if err != nil {
		r.Statements = nil
		return r, ok
	}
	return pr, ok
}

// The first byte of a sealed record's plaintext says how the record was
// written (so a frame's kind, in the clear, cannot be changed unnoticed);
// then u32 count | count × (u32 length | bytes), big endian.
const (
	sealedAppend  byte = 1
	sealedReplace byte = 2
)

func sealRecord(keys *crypt.Keys, node string, seq uint64, version uint32, kind byte, stmts []string) []byte {
	n := 5
	for _, s := range stmts {
		n += 4 + len(s)
	}
	p := make([]byte, 0, n)
	p = append(p, kind)
	p = binary.BigEndian.AppendUint32(p, uint32(len(stmts)))
	for _, s := range stmts {
		p = binary.BigEndian.AppendUint32(p, uint32(len(s)))
		p = append(p, s...)
	}
	return keys.Seal(make([]byte, 0, len(p)+crypt.Overhead), p, crypt.RecordAD(node, seq, version))
}

// openRecord opens a sealed record of node: its one statement must open
// with RecordAD(node, r.Seq, r.Version). It returns the kind sealed in it.
func openRecord(keys *crypt.Keys, node string, r journal.Record) (journal.Record, byte, error) {
	if len(r.Statements) != 1 {
		return journal.Record{}, 0, fmt.Errorf("record %d (data_version %d) of node %q: %w: it holds %d statements in the clear, not one sealed envelope (written without the key, or forged); restore stops before it", r.Seq, r.Version, node, ErrSealedRecord, len(r.Statements))
	}
	p, err := keys.Open(nil, []byte(r.Statements[0]), crypt.RecordAD(node, r.Seq, r.Version))
	if err != nil {
		return journal.Record{}, 0, fmt.Errorf("record %d (data_version %d) of node %q: %w: %v (altered, moved from another node or seq, replayed, or written under another key); restore stops before it", r.Seq, r.Version, node, ErrSealedRecord, err)
	}
	kind, stmts, err := decodeSealedStatements(p)
	if err != nil {
		return journal.Record{}, 0, fmt.Errorf("record %d (data_version %d) of node %q: %w: %v", r.Seq, r.Version, node, ErrSealedRecord, err)
	}
	r.Statements = stmts
	return r, kind, nil
}

// decodeSealedStatements decodes the plaintext of a sealed record,
// strictly: every byte accounted for.
func decodeSealedStatements(p []byte) (kind byte, stmts []string, err error) {
	if len(p) < 5 || (p[0] != sealedAppend && p[0] != sealedReplace) {
		return 0, nil, errors.New("sealed statements of an unknown kind or truncated")
	}
	kind = p[0]
	stmts, err = decodeStatements(p[1:])
	return kind, stmts, err
}

func decodeStatements(p []byte) ([]string, error) {
	n := binary.BigEndian.Uint32(p)
	p = p[4:]
	if uint64(n)*4 > uint64(len(p)) {
		return nil, fmt.Errorf("%d statements do not fit %d bytes", n, len(p))
	}
	stmts := make([]string, 0, n)
	for range n {
		if len(p) < 4 {
			return nil, errors.New("statement length truncated")
		}
		l := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(l) > uint64(len(p)) {
			return nil, fmt.Errorf("statement of %d bytes past the end (%d left)", l, len(p))
		}
		stmts = append(stmts, string(p[:l]))
		p = p[l:]
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%d bytes after the last statement", len(p))
	}
	return stmts, nil
}
