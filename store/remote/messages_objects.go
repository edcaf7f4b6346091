package remote

import (
	"fmt"
	"time"

	"github.com/clnbackup/backup/store/backend"
)

// The object requests (put, get, stat, list, delete) and their replies.
// Put and get data travel as raw data frames, which have no layout.

// nameRequest is the payload of stat and delete: the one object they act
// on.
type nameRequest struct{ Name string }

// appendTo is the client's side of stat and delete.
func (r nameRequest) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.str(r.Name)
	return e.b
}

// decodeNameRequest is the server's side of stat and delete.
func decodeNameRequest(p []byte) (nameRequest, error) {
	d := dec{b: p}
	r := nameRequest{Name: d.str(maxNameLen)}
	return r, d.finish("object name request")
}

// putRequest opens a put: data frames carrying exactly Size bytes follow,
// so the server can refuse an oversized object before reading it.
type putRequest struct {
	Name string
	Size uint64
}

// appendTo is the client's side of put.
func (r putRequest) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.str(r.Name)
	e.u64(r.Size)
	return e.b
}

// decodePutRequest is the server's side of put.
func decodePutRequest(p []byte) (putRequest, error) {
	d := dec{b: p}
	r := putRequest{Name: d.str(maxNameLen), Size: d.u64()}
	return r, d.finish("put request")
}

// getRequest asks for Length bytes of Name from Off (Length -1: to the
// end), so a get retried after a lost connection resumes after what
// arrived.
type getRequest struct {
	Name   string
	Off    int64
	Length int64
}

// appendTo is the client's side of get.
func (r getRequest) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.str(r.Name)
	e.i64(r.Off)
	e.i64(r.Length)
	return e.b
}

// decodeGetRequest is the server's side of get.
func decodeGetRequest(p []byte) (getRequest, error) {
	d := dec{b: p}
	r := getRequest{Name: d.str(maxNameLen), Off: d.i64(), Length: d.i64()}
	return r, d.finish("get request")
}

// statReply is the OK payload of stat.
type statReply struct{ Info backend.Info }

// appendTo is the server's side of stat.
func (r statReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.info(r.Info)
	return e.b
}

// decodeStatReply is the client's side of stat.
func decodeStatReply(p []byte) (statReply, error) {
	d := dec{b: p}
	r := statReply{Info: d.info()}
	return r, d.finish("stat reply")
}

// listRequest lists the names under Prefix that sort after After, so a
// list retried after a lost connection resumes after the last name
// delivered.
type listRequest struct {
	Prefix string
	After  string
}

// appendTo is the client's side of list.
func (r listRequest) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.str(r.Prefix)
	e.str(r.After)
	return e.b
}

// decodeListRequest is the server's side of list.
func decodeListRequest(p []byte) (listRequest, error) {
	d := dec{b: p}
	r := listRequest{Prefix: d.str(maxNameLen), After: d.str(maxNameLen)}
	return r, d.finish("list request")
}

// itemsReply is one page of a list answer (an items frame): at most
// listPage entries, in name order.
type itemsReply struct{ Items []backend.Info }

// appendTo is the server's side of list.
func (r itemsReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.u32(uint32(len(r.Items)))
	for _, in := range r.Items {
		e.info(in)
	}
	return e.b
}

// decodeItemsReply allocates no more entries than the payload can hold;
// an empty page decodes as nil.
func decodeItemsReply(p []byte) (itemsReply, error) {
	d := dec{b: p}
	var r itemsReply
	n := d.u32()
	if d.err == nil && uint64(n) > uint64(len(d.b))/infoMinSize {
		d.fail(fmt.Sprintf("list page of %d entries in %d bytes", n, len(d.b)))
	}
	if d.err == nil && n > 0 {
		r.Items = make([]backend.Info, 0, n)
		for i := uint32(0); i < n && d.err == nil; i++ {
			r.Items = append(r.Items, d.info())
		}
	}
	return r, d.finish("items reply")
}

// quotaReply is the OK payload of a quota request: what the server counts
// against the token (all zero: no quota).
type quotaReply struct {
	Limit, Referenced, Added int64
	Counted                  bool
	CountedAt                time.Time
}

// appendTo is the server's side of quota.
func (r quotaReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.i64(r.Limit)
	e.i64(r.Referenced)
	e.i64(r.Added)
	e.bool(r.Counted)
	e.time(r.CountedAt)
	return e.b
}

// decodeQuotaReply is the client's side of quota.
func decodeQuotaReply(p []byte) (quotaReply, error) {
	d := dec{b: p}
	r := quotaReply{Limit: d.i64(), Referenced: d.i64(), Added: d.i64(), Counted: d.bool(), CountedAt: d.time()}
	return r, d.finish("quota reply")
}
