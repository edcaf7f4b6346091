package remote

import (
	"fmt"
	"time"

	"github.com/clnbackup/backup/store/journal"
)

// The journal requests (open, append, replace, records, trim, close, read)
// and their replies.

// nodeRequest is the payload of journal-open and journal-close: the node
// whose journal they act on.
type nodeRequest struct{ Node string }

// appendTo is the client's side of journal-open and journal-close.
func (r nodeRequest) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.str(r.Node)
	return e.b
}

// decodeNodeRequest is the server's side of journal-open and journal-close.
func decodeNodeRequest(p []byte) (nodeRequest, error) {
	d := dec{b: p}
	r := nodeRequest{Node: d.str(maxNodeLen)}
	return r, d.finish("journal node request")
}

// journalStateReply is the OK payload of journal-open: the journal's
// state, so the client answers Last, NextSeq, Size and Recovered without a
// round trip. Last is meaningful only with HasLast.
type journalStateReply struct {
	NextSeq   uint64
	Size      int64
	Recovered int64
	HasLast   bool
	Last      journal.Record
}

// appendTo is the server's side of journal-open.
func (r journalStateReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.u64(r.NextSeq)
	e.i64(r.Size)
	e.i64(r.Recovered)
	e.bool(r.HasLast)
	if r.HasLast {
		e.record(r.Last)
	}
	return e.b
}

// decodeJournalStateReply is the client's side of journal-open.
func decodeJournalStateReply(p []byte) (journalStateReply, error) {
	d := dec{b: p}
	r := journalStateReply{NextSeq: d.u64(), Size: d.i64(), Recovered: d.i64(), HasLast: d.bool()}
	if r.HasLast {
		r.Last = d.record()
	}
	return r, d.finish("journal state reply")
}

// journalWriteRequest is the payload of journal-append and
// journal-replace. Expected is the seq the client expects the record to
// get: the server stores it only there, which makes a retried write
// exactly-once (docs/remote-protocol.md, "Journals and exactly-once
// appends").
type journalWriteRequest struct {
	Node     string
	Expected uint64
	Record   journal.Record
}

// appendTo is the client's side of journal-append and journal-replace.
func (r journalWriteRequest) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.str(r.Node)
	e.u64(r.Expected)
	e.record(r.Record)
	return e.b
}

// peekJournalWriteNode decodes only the node of a journal-append or
// journal-replace, so the server checks the token's rights and the open
// journal before it decodes (allocates) the record.
func peekJournalWriteNode(p []byte) (string, error) {
	d := dec{b: p}
	node := d.str(maxNodeLen)
	if d.err != nil {
		return "", fmt.Errorf("journal write request: %w", d.err)
	}
	return node, nil
}

// decodeJournalWriteRequest is the server's side of journal-append and journal-replace.
func decodeJournalWriteRequest(p []byte) (journalWriteRequest, error) {
	d := dec{b: p}
	r := journalWriteRequest{Node: d.str(maxNodeLen), Expected: d.u64(), Record: d.record()}
	return r, d.finish("journal write request")
}

// journalWriteReply is the OK payload of journal-append and
// journal-replace: where the record was stored and the journal after it.
type journalWriteReply struct {
	Seq     uint64
	Time    time.Time
	NextSeq uint64
	Size    int64
}

// appendTo is the server's side of journal-append and journal-replace.
func (r journalWriteReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.u64(r.Seq)
	e.time(r.Time)
	e.u64(r.NextSeq)
	e.i64(r.Size)
	return e.b
}

// decodeJournalWriteReply is the client's side of journal-append and journal-replace.
func decodeJournalWriteReply(p []byte) (journalWriteReply, error) {
	d := dec{b: p}
	r := journalWriteReply{Seq: d.u64(), Time: d.time(), NextSeq: d.u64(), Size: d.i64()}
	return r, d.finish("journal write reply")
}

// journalReadRequest is the payload of journal-records (a journal opened
// on this connection) and journal-read (without opening): the records
// after After, so a read retried after a lost connection resumes after
// the last record delivered.
type journalReadRequest struct {
	Node  string
	After uint64
}

// appendTo is the client's side of journal-records and journal-read.
func (r journalReadRequest) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.str(r.Node)
	e.u64(r.After)
	return e.b
}

// decodeJournalReadRequest is the server's side of journal-records and journal-read.
func decodeJournalReadRequest(p []byte) (journalReadRequest, error) {
	d := dec{b: p}
	r := journalReadRequest{Node: d.str(maxNodeLen), After: d.u64()}
	return r, d.finish("journal read request")
}

// recordReply is one record frame of a journal-records or journal-read
// answer.
type recordReply struct{ Record journal.Record }

// appendTo is the server's side of journal-records and journal-read.
func (r recordReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.record(r.Record)
	return e.b
}

// decodeRecordReply is the client's side of journal-records and journal-read.
func decodeRecordReply(p []byte) (recordReply, error) {
	d := dec{b: p}
	r := recordReply{Record: d.record()}
	return r, d.finish("record reply")
}

// journalTrimRequest drops the records up to Upto; the server refuses
// beyond what the node's newest manifest covers.
type journalTrimRequest struct {
	Node string
	Upto uint64
}

// appendTo is the client's side of journal-trim.
func (r journalTrimRequest) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.str(r.Node)
	e.u64(r.Upto)
	return e.b
}

// decodeJournalTrimRequest is the server's side of journal-trim.
func decodeJournalTrimRequest(p []byte) (journalTrimRequest, error) {
	d := dec{b: p}
	r := journalTrimRequest{Node: d.str(maxNodeLen), Upto: d.u64()}
	return r, d.finish("journal trim request")
}

// journalTrimReply is the OK payload of journal-trim: the journal's size
// after it.
type journalTrimReply struct{ Size int64 }

// appendTo is the server's side of journal-trim.
func (r journalTrimReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.i64(r.Size)
	return e.b
}

// decodeJournalTrimReply is the client's side of journal-trim.
func decodeJournalTrimReply(p []byte) (journalTrimReply, error) {
	d := dec{b: p}
	r := journalTrimReply{Size: d.i64()}
	return r, d.finish("journal trim reply")
}

// journalStartRequest is the payload of journal-start: create the node's
// journal numbering from FirstSeq (an imported node continues the
// numbering of its sealed records), for the writer that holds the node's
// lease as Owner.
type journalStartRequest struct {
	Node     string
	FirstSeq uint64
	Owner    string
}

// appendTo is the client's side of journal-start.
func (r journalStartRequest) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.str(r.Node)
	e.u64(r.FirstSeq)
	e.str(r.Owner)
	return e.b
}

// decodeJournalStartRequest is the server's side of journal-start (its OK
// payload is a journalStateReply, as journal-open's).
func decodeJournalStartRequest(p []byte) (journalStartRequest, error) {
	d := dec{b: p}
	r := journalStartRequest{Node: d.str(maxNodeLen), FirstSeq: d.u64(), Owner: d.str(maxOwnerLen)}
	return r, d.finish("journal start request")
}
