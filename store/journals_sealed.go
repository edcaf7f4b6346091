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
	var openErr error
	err := s.Journals.ReadJournal(ctx, node, afterSeq, func(r journal.Record) error {
		pr, err := openRecord(s.keys, node, r)
		if err != nil {
			openErr = err
			return err
		}
		return fn(pr)
	})
	if openErr != nil && errors.Is(err, openErr) {
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
	return j.write(r, j.Journal.Append)
}

func (j *sealedJournal) Replace(r journal.Record) (journal.Record, error) {
	return j.write(r, j.Journal.Replace)
}

func (j *sealedJournal) write(r journal.Record, put func(journal.Record) (journal.Record, error)) (journal.Record, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	seq := j.Journal.NextSeq()
	stmts := r.Statements
	sealed := r
	sealed.Statements = []string{string(sealRecord(j.keys, j.node, seq, r.Version, stmts))}
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
	var openErr error
	err := j.Journal.Records(afterSeq, func(r journal.Record) error {
		pr, err := openRecord(j.keys, j.node, r)
		if err != nil {
			openErr = err
			return err
		}
		return fn(pr)
	})
	if openErr != nil && errors.Is(err, openErr) {
		return fmt.Errorf("journal of node %q: %w", j.node, err)
	}
	return err
}

// Last returns the last record opened; one that does not open is returned
// without statements (Records reports it).
func (j *sealedJournal) Last() (journal.Record, bool) {
	r, ok := j.Journal.Last()
	if !ok {
		return r, ok
	}
	pr, err := openRecord(j.keys, j.node, r)
	if err != nil {
		r.Statements = nil
		return r, ok
	}
	return pr, ok
}

// sealedStatementsVersion is the first byte of a sealed record's
// plaintext: u8 version | u32 count | count × (u32 length | bytes), big
// endian.
const sealedStatementsVersion = 1

func sealRecord(keys *crypt.Keys, node string, seq uint64, version uint32, stmts []string) []byte {
	n := 5
	for _, s := range stmts {
		n += 4 + len(s)
	}
	p := make([]byte, 0, n)
	p = append(p, sealedStatementsVersion)
	p = binary.BigEndian.AppendUint32(p, uint32(len(stmts)))
	for _, s := range stmts {
		p = binary.BigEndian.AppendUint32(p, uint32(len(s)))
		p = append(p, s...)
	}
	return keys.Seal(make([]byte, 0, len(p)+crypt.Overhead), p, crypt.RecordAD(node, seq, version))
}

// openRecord opens a sealed record of node: its one statement must open
// with RecordAD(node, r.Seq, r.Version).
func openRecord(keys *crypt.Keys, node string, r journal.Record) (journal.Record, error) {
	if len(r.Statements) != 1 {
		return journal.Record{}, fmt.Errorf("record %d (data_version %d) of node %q: %w: it holds %d statements in the clear, not one sealed envelope (written without the key, or forged); restore stops before it", r.Seq, r.Version, node, ErrSealedRecord, len(r.Statements))
	}
	p, err := keys.Open(nil, []byte(r.Statements[0]), crypt.RecordAD(node, r.Seq, r.Version))
	if err != nil {
		return journal.Record{}, fmt.Errorf("record %d (data_version %d) of node %q: %w: %v (altered, moved from another node or seq, replayed, or written under another key); restore stops before it", r.Seq, r.Version, node, ErrSealedRecord, err)
	}
	stmts, err := decodeSealedStatements(p)
	if err != nil {
		return journal.Record{}, fmt.Errorf("record %d (data_version %d) of node %q: %w: %v", r.Seq, r.Version, node, ErrSealedRecord, err)
	}
	r.Statements = stmts
	return r, nil
}

// decodeSealedStatements decodes the plaintext of a sealed record,
// strictly: every byte accounted for.
func decodeSealedStatements(p []byte) ([]string, error) {
	if len(p) < 5 || p[0] != sealedStatementsVersion {
		return nil, errors.New("sealed statements of an unknown version or truncated")
	}
	n := binary.BigEndian.Uint32(p[1:])
	p = p[5:]
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
