package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

// sharedJournal is a node's journal, open once for every session using it.
type sharedJournal struct {
	node string
	// mu serialises the check-and-append of journal writes.
	mu   sync.Mutex
	j    store.Journal
	refs int
}

// openJournal returns the node's shared journal, opening it on first use.
func (s *Server) openJournal(ctx context.Context, node string) (*sharedJournal, error) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if sj, ok := s.journals[node]; ok {
		sj.refs++
		return sj, nil
	}
	j, err := s.st.OpenJournal(ctx, node)
	if err != nil {
		return nil, err
	}
	sj := &sharedJournal{node: node, j: j, refs: 1}
	s.journals[node] = sj
	return sj, nil
}

func (s *Server) releaseJournal(node string) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	sj, ok := s.journals[node]
	if !ok {
		return
	}
	if sj.refs--; sj.refs > 0 {
		return
	}
	delete(s.journals, node)
	// Wait for a write in progress by a session that is gone.
	sj.mu.Lock()
	defer sj.mu.Unlock()
	if err := sj.j.Close(); err != nil {
		s.opt.Errorf("close journal of node %q: %v", node, err)
	}
}

func (s *Server) journal(node string) *sharedJournal {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	return s.journals[node]
}
func (ss *session) node(d *dec, op string) (string, error) {
	node := d.str(256)
	if d.err != nil {
		return "", d.err
	}
	if err := manifest.ValidNodeName(node); err != nil {
		return "", badRequest("%s: %v", op, err)
	}
	if !ss.id.hasNode(node) {
		return "", denied("%s of node %q: denied to %s: not one of its nodes", op, node, ss.id)
	}
	return node, nil
}

func encodeState(e *enc, j store.Journal) {
	last, ok := j.Last()
	e.u64(j.NextSeq())
	e.i64(j.Size())
	e.i64(j.Recovered())
	e.bool(ok)
	if ok {
		e.record(last)
	}
}

func (ss *session) jopen(d *dec) error {
	node, err := ss.node(d, "open journal")
	if err != nil {
		return err
	}
	if err := d.done(); err != nil {
		return err
	}
	var sj *sharedJournal
	if ss.opened[node] {
		sj = ss.srv.journal(node)
	} else {
		if sj, err = ss.srv.openJournal(ss.ctx, node); err != nil {
			return err
		}
		ss.opened[node] = true
	}
	var e enc
	sj.mu.Lock()
	encodeState(&e, sj.j)
	sj.mu.Unlock()
	return ss.ok(e.b)
}

// opened returns the session's open journal of node.
func (ss *session) openedJournal(node, op string) (*sharedJournal, error) {
	if !ss.opened[node] {
		return nil, badRequest("%s: the journal of node %q is not open on this connection", op, node)
	}
	sj := ss.srv.journal(node)
	if sj == nil {
		return nil, fmt.Errorf("%s: journal of node %q: not open on the server", op, node)
	}
	return sj, nil
}

// jwrite appends (or replaces) a record if the server's journal is where
// the client expects it. A retry after a lost acknowledgement finds the
// record already stored and is answered with it: never stored twice.
func (ss *session) jwrite(d *dec, replace bool) error {
	op := "journal append"
	if replace {
		op = "journal replace"
	}
	node, err := ss.node(d, op)
	if err != nil {
		return err
	}
	expected := d.u64()
	r := d.record()
	if err := d.done(); err != nil {
		return err
	}
	sj, err := ss.openedJournal(node, op)
	if err != nil {
		return err
	}
	sj.mu.Lock()
	defer sj.mu.Unlock()
	next := sj.j.NextSeq()
	var stored journal.Record
	switch {
	case next == expected:
		if replace {
			stored, err = sj.j.Replace(r)
		} else {
			stored, err = sj.j.Append(r)
		}
		if err != nil {
			return err
		}
		if ss.srv.dropAck != nil && ss.srv.dropAck() {
			return wireErr{errors.New("test: acknowledgement dropped")}
		}
	case next == expected+1 && sameRecord(sj.j, expected, r):
		stored, _ = sj.j.Last() // the acknowledgement was lost: stored once
	default:
		last, _ := sj.j.Last()
		return &Error{Code: codeConflict, Msg: fmt.Sprintf("%s of node %q version %d: the client expected next seq %d, the server's journal is at next seq %d (last record seq %d, version %d): another writer, or a change the server lost; restart the plugin", op, node, r.Version, expected, next, last.Seq, last.Version)}
	}
	var e enc
	e.u64(stored.Seq)
	e.time(stored.Time)
	e.u64(sj.j.NextSeq())
	e.i64(sj.j.Size())
	return ss.ok(e.b)
}

func sameRecord(j store.Journal, seq uint64, r journal.Record) bool {
	last, ok := j.Last()
	return ok && last.Seq == seq && last.Version == r.Version && slices.Equal(last.Statements, r.Statements)
}

func (ss *session) jrecords(d *dec, unopened bool) error {
	op := "journal records"
	if unopened {
		op = "journal read"
	}
	node, err := ss.node(d, op)
	if err != nil {
		return err
	}
	after := d.u64()
	if err := d.done(); err != nil {
		return err
	}
	var e enc
	fn := func(r journal.Record) error {
		e.b = e.b[:0]
		e.record(r)
		return ss.send(msgRecord, e.b)
	}
	if unopened {
		err = ss.srv.st.ReadJournal(ss.ctx, node, after, fn)
	} else {
		var sj *sharedJournal
		if sj, err = ss.openedJournal(node, op); err != nil {
			return err
		}
		err = sj.j.Records(after, fn)
	}
	if err != nil {
		return err
	}
	return ss.ok(nil)
}

func (ss *session) jtrim(d *dec) error {
	node, err := ss.node(d, "journal trim")
	if err != nil {
		return err
	}
	upto := d.u64()
	if err := d.done(); err != nil {
		return err
	}
	sj, err := ss.openedJournal(node, "journal trim")
	if err != nil {
		return err
	}
	m, err := ss.srv.st.LatestManifest(ss.ctx, node)
	if err != nil {
		return fmt.Errorf("journal trim of node %q: %w", node, err)
	}
	if upto > m.JournalSeq {
		return &Error{Code: codeConflict, Msg: fmt.Sprintf("journal trim of node %q to seq %d refused: the newest manifest (%d) covers records up to seq %d only", node, upto, m.Seq, m.JournalSeq)}
	}
	if err := sj.j.Trim(upto); err != nil {
		return err
	}
	var e enc
	e.i64(sj.j.Size())
	return ss.ok(e.b)
}

func (ss *session) jclose(d *dec) error {
	node, err := ss.node(d, "journal close")
	if err != nil {
		return err
	}
	if err := d.done(); err != nil {
		return err
	}
	if ss.opened[node] {
		delete(ss.opened, node)
		ss.srv.releaseJournal(node)
	}
	return ss.ok(nil)
}
