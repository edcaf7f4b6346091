package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

// journals are the nodes' journals on the store server, as a client sees
// them.
type journals struct{ cl *Client }

func (js journals) OpenJournal(ctx context.Context, node string) (store.Journal, error) {
	j := &remoteJournal{cl: js.cl, node: node}
	err := js.cl.do(ctx, js.cl.jlane, func(c *conn, _ int) error { return j.ensureOpen(c) })
	if err != nil {
		return nil, fmt.Errorf("open journal of node %q on store server %s: %w", node, js.cl.u.Addr, err)
	}
	return j, nil
}

// StartJournal creates the node's journal on the server numbering from
// firstSeq (journal-start), for the writer holding the node's lease as
// owner. A start retried after a lost answer is answered with the journal
// the first try created.
func (js journals) StartJournal(ctx context.Context, node string, firstSeq uint64, owner string) (store.Journal, error) {
	j := &remoteJournal{cl: js.cl, node: node}
	err := js.cl.do(ctx, js.cl.jlane, func(c *conn, _ int) error {
		p, err := c.call(msgJStart, encode(journalStartRequest{Node: node, FirstSeq: firstSeq, Owner: owner}), nil)
		if err != nil {
			return err
		}
		return j.takeState(c, p)
	})
	if err != nil {
		if errors.Is(err, ErrBadRequest) && strings.Contains(err.Error(), "unknown request type") {
			err = fmt.Errorf("%w (%w: upgrade the store server to this release)", err, store.ErrJournalStartUnsupported)
		}
		return nil, fmt.Errorf("start journal of node %q at record %d on store server %s: %w", node, firstSeq, js.cl.u.Addr, err)
	}
	return j, nil
}

// CheckJournal leaves the journal to the server's own verify (a client sees
// only the records after a node's newest manifest): the server holds the
// journals of the nodes it serves.
func (js journals) CheckJournal(context.Context, string) (bool, error) { return true, nil }

func (js journals) ReadJournal(ctx context.Context, node string, afterSeq uint64, fn func(journal.Record) error) error {
	after := afterSeq
	err := js.cl.do(ctx, js.cl.general, func(c *conn, _ int) error {
		return readRecords(c, msgJRead, node, &after, fn)
	})
	if err != nil {
		var re *Error
		if errors.As(err, &re) {
			return fmt.Errorf("read journal of node %q on store server %s: %w", node, js.cl.u.Addr, err)
		}
	}
	return err
}

// readRecords asks for the records after *after (journal-records or
// journal-read) and moves *after on with each one delivered, so a retry
// resumes there.
func readRecords(c *conn, typ byte, node string, after *uint64, fn func(journal.Record) error) error {
	_, err := c.call(typ, encode(journalReadRequest{Node: node, After: *after}), func(t byte, p []byte) error {
		if t != msgRecord {
			return protoErr(fmt.Errorf("%s frame in a records answer", msgName(t)))
		}
		r, err := decodeRecordReply(p)
		if err != nil {
			return protoErr(err)
		}
		*after = r.Record.Seq
		return fn(r.Record)
	})
	return err
}

// remoteJournal is a node journal kept by the server. Its state (Last,
// NextSeq, Size) is the one of the last answer, so that reading it costs
// no round trip.
type remoteJournal struct {
	cl   *Client
	node string
	// mu serialises requests.
	mu     sync.Mutex
	openOn uint64 // the connection the server-side handle belongs to

	smu       sync.Mutex
	opened    bool
	last      journal.Record
	hasLast   bool
	next      uint64
	size      int64
	recovered int64
	closed    bool
}

var _ store.Journal = (*remoteJournal)(nil)

// ensureOpen opens the journal on the server for connection c, once per
// connection: a journal opened before a reconnect is reopened
// transparently. The first open sets the client's view of the journal;
// later ones keep it (a retried append must compare with what the client
// knew).
func (j *remoteJournal) ensureOpen(c *conn) error {
	if j.openOn == c.id {
		return nil
	}
	p, err := c.call(msgJOpen, encode(nodeRequest{Node: j.node}), nil)
	if err != nil {
		return err
	}
	return j.takeState(c, p)
}

// takeState takes the journal-open (or journal-start) answer p received on c.
func (j *remoteJournal) takeState(c *conn, p []byte) error {
	st, err := decodeJournalStateReply(p)
	if err != nil {
		return protoErr(err)
	}
	j.openOn = c.id
	j.smu.Lock()
	defer j.smu.Unlock()
	if !j.opened {
		j.opened = true
		j.next, j.size, j.recovered, j.hasLast, j.last = st.NextSeq, st.Size, st.Recovered, st.HasLast, st.Last
	}
	return nil
}

func (j *remoteJournal) checkOpen(op string) error {
	j.smu.Lock()
	defer j.smu.Unlock()
	if j.closed {
		return fmt.Errorf("journal of node %q on store server %s: %s: %w", j.node, j.cl.u.Addr, op, journal.ErrClosed)
	}
	return nil
}

func (j *remoteJournal) Append(r journal.Record) (journal.Record, error) {
	return j.write(msgJAppend, r)
}

func (j *remoteJournal) Replace(r journal.Record) (journal.Record, error) {
	return j.write(msgJReplace, r)
}

// write sends the record with the seq the client expects it to get. The
// server stores it only at that seq, and answers a retry whose first try
// was stored (its acknowledgement lost) with the stored record.
func (j *remoteJournal) write(typ byte, r journal.Record) (journal.Record, error) {
	op := "append"
	if typ == msgJReplace {
		op = "replace"
	}
	if len(r.Statements) > maxRecordStatements {
		return journal.Record{}, fmt.Errorf("journal %s of node %q: a record of %d statements exceeds the %d a store server takes in one record", op, j.node, len(r.Statements), maxRecordStatements)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.checkOpen(op); err != nil {
		return journal.Record{}, err
	}
	j.smu.Lock()
	expected := j.next
	j.smu.Unlock()
	req := encode(journalWriteRequest{Node: j.node, Expected: expected, Record: r})
	var ack journalWriteReply
	err := j.cl.do(context.Background(), j.cl.jlane, func(c *conn, _ int) error {
		if err := j.ensureOpen(c); err != nil {
			return err
		}
		p, err := c.call(typ, req, nil)
		if err != nil {
			return err
		}
		if ack, err = decodeJournalWriteReply(p); err != nil {
			return protoErr(err)
		}
		return nil
	})
	if err != nil {
		return journal.Record{}, fmt.Errorf("journal of node %q on store server %s: %s version %d: %w", j.node, j.cl.u.Addr, op, r.Version, err)
	}
	r.Seq, r.Time = ack.Seq, ack.Time
	stored := r
	stored.Statements = slices.Clone(r.Statements)
	j.smu.Lock()
	j.last, j.hasLast, j.next, j.size = stored, true, ack.NextSeq, ack.Size
	j.smu.Unlock()
	return r, nil
}

// Records reads on a general connection, not the journal's lane: a long
// read (a compaction's seal, whose fn may store chunks) never holds up
// the appends that lightningd waits for. The server reads the journal
// this client holds open through its handle.
func (j *remoteJournal) Records(afterSeq uint64, fn func(journal.Record) error) error {
	if err := j.checkOpen("records"); err != nil {
		return err
	}
	after := afterSeq
	err := j.cl.do(context.Background(), j.cl.general, func(c *conn, _ int) error {
		return readRecords(c, msgJRead, j.node, &after, fn)
	})
	var re *Error
	if errors.As(err, &re) {
		return fmt.Errorf("journal of node %q on store server %s: %w", j.node, j.cl.u.Addr, err)
	}
	return err
}

func (j *remoteJournal) Last() (journal.Record, bool) {
	j.smu.Lock()
	defer j.smu.Unlock()
	r := j.last
	r.Statements = slices.Clone(r.Statements)
	return r, j.hasLast
}

func (j *remoteJournal) NextSeq() uint64 {
	j.smu.Lock()
	defer j.smu.Unlock()
	return j.next
}

func (j *remoteJournal) Size() int64 {
	j.smu.Lock()
	defer j.smu.Unlock()
	return j.size
}

func (j *remoteJournal) Recovered() int64 {
	j.smu.Lock()
	defer j.smu.Unlock()
	return j.recovered
}

// Trim asks the server to drop records up to uptoSeq; it refuses beyond the
// node's newest manifest.
func (j *remoteJournal) Trim(uptoSeq uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.checkOpen("trim"); err != nil {
		return err
	}
	var size int64
	err := j.cl.do(context.Background(), j.cl.jlane, func(c *conn, _ int) error {
		if err := j.ensureOpen(c); err != nil {
			return err
		}
		p, err := c.call(msgJTrim, encode(journalTrimRequest{Node: j.node, Upto: uptoSeq}), nil)
		if err != nil {
			return err
		}
		r, err := decodeJournalTrimReply(p)
		if err != nil {
			return protoErr(err)
		}
		size = r.Size
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal of node %q on store server %s: trim to seq %d: %w", j.node, j.cl.u.Addr, uptoSeq, err)
	}
	j.smu.Lock()
	j.size = size
	j.smu.Unlock()
	return nil
}

// Close releases the journal on the server (best effort: a connection
// that is gone released it already).
func (j *remoteJournal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.smu.Lock()
	if j.closed {
		j.smu.Unlock()
		return nil
	}
	j.closed = true
	j.smu.Unlock()
	if j.cl.isClosed() || j.openOn == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := j.cl.do(ctx, j.cl.jlane, func(c *conn, _ int) error {
		if j.openOn != c.id {
			return nil // a new connection: nothing open there
		}
		_, err := c.call(msgJClose, encode(nodeRequest{Node: j.node}), nil)
		return err
	})
	var re *Error
	if errors.As(err, &re) {
		return fmt.Errorf("journal of node %q on store server %s: close: %w", j.node, j.cl.u.Addr, err)
	}
	return nil
}
