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

// holdJournal returns the node's shared journal with a reference taken
// (release it with releaseJournal), or nil when no session has it open.
func (s *Server) holdJournal(node string) *sharedJournal {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	sj, ok := s.journals[node]
	if !ok {
		return nil
	}
	sj.refs++
	return sj
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

// checkNode refuses a node name that is not one, or not one of the
// token's nodes.
func (ss *session) checkNode(node, op string) error {
	if err := manifest.ValidNodeName(node); err != nil {
		return badRequest("%s: %v", op, err)
	}
	if !ss.id.hasNode(node) {
		return denied("%s of node %q: denied to %s: not one of its nodes", op, node, ss.id)
	}
	return nil
}

// journalState is what journal-open answers; the caller holds sj.mu.
func journalState(j store.Journal) journalStateReply {
	last, ok := j.Last()
	return journalStateReply{NextSeq: j.NextSeq(), Size: j.Size(), Recovered: j.Recovered(), HasLast: ok, Last: last}
}

// jopen opens the node's journal for this session (once: opening it again
// only answers its state).
func (ss *session) jopen(p []byte) error {
	req, err := decodeNodeRequest(p)
	if err != nil {
		return err
	}
	if err := ss.checkNode(req.Node, "open journal"); err != nil {
		return err
	}
	var sj *sharedJournal
	if ss.opened[req.Node] {
		sj = ss.srv.journal(req.Node)
	} else {
		if sj, err = ss.srv.openJournal(ss.ctx, req.Node); err != nil {
			return err
		}
		ss.opened[req.Node] = true
	}
	sj.mu.Lock()
	state := journalState(sj.j)
	sj.mu.Unlock()
	return ss.ok(encode(state))
}

// openedJournal returns the session's open journal of node.
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
// the client expects it.
func (ss *session) jwrite(p []byte, replace bool) error {
	op := "journal append"
	if replace {
		op = "journal replace"
	}
	// The rights and the open journal are checked before the record is
	// decoded: a refused write costs no allocation.
	node, err := peekJournalWriteNode(p)
	if err != nil {
		return err
	}
	if err := ss.checkNode(node, op); err != nil {
		return err
	}
	sj, err := ss.openedJournal(node, op)
	if err != nil {
		return err
	}
	req, err := decodeJournalWriteRequest(p)
	if err != nil {
		return err
	}
	sj.mu.Lock()
	defer sj.mu.Unlock()
	stored, err := ss.writeAt(sj, req, replace, op)
	if err != nil {
		return err
	}
	return ss.ok(encode(journalWriteReply{Seq: stored.Seq, Time: stored.Time, NextSeq: sj.j.NextSeq(), Size: sj.j.Size()}))
}

// writeAt stores req's record at the seq the client expected, holding
// sj.mu. A retry after a lost acknowledgement finds the record already
// stored and is answered with it: never stored twice. Anything else is a
// conflict.
func (ss *session) writeAt(sj *sharedJournal, req journalWriteRequest, replace bool, op string) (journal.Record, error) {
	next := sj.j.NextSeq()
	switch {
	case next == req.Expected:
		var stored journal.Record
		var err error
		if replace {
			stored, err = sj.j.Replace(req.Record)
		} else {
			stored, err = sj.j.Append(req.Record)
		}
		if err != nil {
			return journal.Record{}, err
		}
		if ss.srv.dropAck != nil && ss.srv.dropAck() {
			return journal.Record{}, wireErr{errors.New("test: acknowledgement dropped")}
		}
		return stored, nil
	case next == req.Expected+1 && sameRecord(sj.j, req.Expected, req.Record):
		stored, _ := sj.j.Last() // the acknowledgement was lost: stored once
		return stored, nil
	}
	last, _ := sj.j.Last()
	return journal.Record{}, &Error{Code: codeConflict, Msg: fmt.Sprintf("%s of node %q version %d: the client expected next seq %d, the server's journal is at next seq %d (last record seq %d, version %d): another writer, or a change the server lost; restart the plugin", op, req.Node, req.Record.Version, req.Expected, next, last.Seq, last.Version)}
}

// sameRecord reports whether the journal's last record is r stored at seq:
// the first attempt of a retried write.
func sameRecord(j store.Journal, seq uint64, r journal.Record) bool {
	last, ok := j.Last()
	return ok && last.Seq == seq && last.Version == r.Version && slices.Equal(last.Statements, r.Statements)
}

// jrecords streams the records after req.After: of the session's open
// journal, or (unopened, journal-read) of the node's journal without
// opening it.
func (ss *session) jrecords(p []byte, unopened bool) error {
	op := "journal records"
	if unopened {
		op = "journal read"
	}
	req, err := decodeJournalReadRequest(p)
	if err != nil {
		return err
	}
	if err := ss.checkNode(req.Node, op); err != nil {
		return err
	}
	var buf []byte
	fn := func(r journal.Record) error {
		buf = recordReply{Record: r}.appendTo(buf[:0])
		return ss.send(msgRecord, buf)
	}
	if unopened {
		// A journal open on the server is read through its handle, in step
		// with its appends; otherwise from the store.
		if sj := ss.srv.holdJournal(req.Node); sj != nil {
			err = sj.j.Records(req.After, fn)
			ss.srv.releaseJournal(req.Node)
		} else {
			err = ss.srv.st.ReadJournal(ss.ctx, req.Node, req.After, fn)
		}
	} else {
		var sj *sharedJournal
		if sj, err = ss.openedJournal(req.Node, op); err != nil {
			return err
		}
		err = sj.j.Records(req.After, fn)
	}
	if err != nil {
		return err
	}
	return ss.ok(nil)
}

// jtrim trims the session's open journal, never beyond what the node's
// newest manifest covers.
func (ss *session) jtrim(p []byte) error {
	req, err := decodeJournalTrimRequest(p)
	if err != nil {
		return err
	}
	if err := ss.checkNode(req.Node, "journal trim"); err != nil {
		return err
	}
	sj, err := ss.openedJournal(req.Node, "journal trim")
	if err != nil {
		return err
	}
	if cfg := ss.srv.st.Config(); cfg.Encrypted() && ss.srv.st.Keyring() == nil {
		// A keyless server cannot read the sealed manifests: the node's
		// client, which holds the key, bounds its trims itself.
		if err := sj.j.Trim(req.Upto); err != nil {
			return err
		}
		return ss.ok(encode(journalTrimReply{Size: sj.j.Size()}))
	}
	m, err := ss.srv.st.LatestManifest(ss.ctx, req.Node)
	if err != nil {
		return fmt.Errorf("journal trim of node %q: %w", req.Node, err)
	}
	if req.Upto > m.JournalSeq {
		return &Error{Code: codeConflict, Msg: fmt.Sprintf("journal trim of node %q to seq %d refused: the newest manifest (%d) covers records up to seq %d only", req.Node, req.Upto, m.Seq, m.JournalSeq)}
	}
	if err := sj.j.Trim(req.Upto); err != nil {
		return err
	}
	return ss.ok(encode(journalTrimReply{Size: sj.j.Size()}))
}

// jclose releases the session's hold on the node's journal (closing a
// journal that is not open is not an error: a retried close).
func (ss *session) jclose(p []byte) error {
	req, err := decodeNodeRequest(p)
	if err != nil {
		return err
	}
	if err := ss.checkNode(req.Node, "journal close"); err != nil {
		return err
	}
	if ss.opened[req.Node] {
		delete(ss.opened, req.Node)
		ss.srv.releaseJournal(req.Node)
	}
	return ss.ok(nil)
}

// jstart creates the node's journal numbering from the requested seq and
// opens it for this session, with the rules of store.StartJournal: only
// for the token's nodes, only for the writer holding the node's lease (as
// the server's store has it), only for a node with no journal. A start
// retried after a lost answer finds the journal it created (empty, at the
// requested seq) and is answered with it.
func (ss *session) jstart(p []byte) error {
	req, err := decodeJournalStartRequest(p)
	if err != nil {
		return err
	}
	if err := ss.checkNode(req.Node, "start journal"); err != nil {
		return err
	}
	if ss.opened[req.Node] {
		return conflict("start the journal of node %q: it is open on this connection already", req.Node)
	}
	sj, err := ss.srv.startJournal(ss.ctx, req)
	if err != nil {
		return err
	}
	ss.opened[req.Node] = true
	sj.mu.Lock()
	state := journalState(sj.j)
	sj.mu.Unlock()
	return ss.ok(encode(state))
}

// startJournal creates the shared journal of req.Node; no session may have
// it open.
func (s *Server) startJournal(ctx context.Context, req journalStartRequest) (*sharedJournal, error) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if _, ok := s.journals[req.Node]; ok {
		return nil, conflict("start the journal of node %q: %v: another connection has it open", req.Node, store.ErrJournalExists)
	}
	j, err := s.st.StartJournal(ctx, req.Node, req.FirstSeq, req.Owner)
	if errors.Is(err, store.ErrJournalExists) {
		j, err = s.retriedStart(ctx, req, err)
	}
	if err != nil {
		if errors.Is(err, store.ErrLeaseHeld) || errors.Is(err, store.ErrLeaseExpired) || errors.Is(err, store.ErrJournalExists) {
			return nil, conflict("%v", err)
		}
		return nil, err
	}
	sj := &sharedJournal{node: req.Node, j: j, refs: 1}
	s.journals[req.Node] = sj
	return sj, nil
}

// retriedStart opens the node's existing journal if it is the one a start
// with req created (no record, numbering at req.FirstSeq); else it returns
// exists, the start's refusal. The lease was checked before.
func (s *Server) retriedStart(ctx context.Context, req journalStartRequest, exists error) (store.Journal, error) {
	j, err := s.st.OpenJournal(ctx, req.Node)
	if err != nil {
		return nil, exists
	}
	if _, has := j.Last(); has || j.NextSeq() != req.FirstSeq {
		j.Close()
		return nil, exists
	}
	return j, nil
}

// conflict is a codeConflict error.
func conflict(format string, args ...any) error {
	return &Error{Code: codeConflict, Msg: fmt.Sprintf(format, args...)}
}
