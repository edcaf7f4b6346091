package remote

import (
	"fmt"
	"slices"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/chunk"
)

// The chunk requests of node tokens (missing, put-bodies, read-bodies) and
// their replies.

// idsRequest is the payload of missing and read-bodies: at most
// maxIDsPerRequest chunk ids (the client sends larger sets in batches).
type idsRequest struct{ IDs []chunker.ID }

// appendTo is the client's side of missing and read-bodies.
func (r idsRequest) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.ids(r.IDs)
	return e.b
}

// decodeIDsRequest is the server's side of missing and read-bodies.
func decodeIDsRequest(p []byte) (idsRequest, error) {
	d := dec{b: p}
	r := idsRequest{IDs: d.ids()}
	return r, d.finish("chunk ids request")
}

// missingReply is the OK payload of missing: for each id of the request,
// in order, whether the client must send its body.
type missingReply struct{ Missing []bool }

// appendTo is the server's side of missing.
func (r missingReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.u32(uint32(len(r.Missing)))
	for _, m := range r.Missing {
		e.bool(m)
	}
	return e.b
}

// decodeMissingReply allows no more answers than a request may have ids,
// nor than the payload holds; none decode as nil.
func decodeMissingReply(p []byte) (missingReply, error) {
	d := dec{b: p}
	var r missingReply
	n := d.u32()
	if d.err == nil && (n > maxIDsPerRequest || uint64(n) > uint64(len(d.b))) {
		d.fail(fmt.Sprintf("%d answers (at most %d, %d bytes left)", n, maxIDsPerRequest, len(d.b)))
	}
	if d.err == nil && n > 0 {
		r.Missing = make([]bool, n)
		for i := range r.Missing {
			r.Missing[i] = d.bool()
		}
	}
	return r, d.finish("missing reply")
}

// putBodiesRequest carries one pack's worth of chunk bodies, so the server
// writes them as one pack.
type putBodiesRequest struct{ Bodies []chunk.Body }

// appendTo grows b once: the request may be a whole pack.
func (r putBodiesRequest) appendTo(b []byte) []byte {
	size := 4
	for _, body := range r.Bodies {
		size += bodySize(body)
	}
	e := enc{b: slices.Grow(b, size)}
	e.u32(uint32(len(r.Bodies)))
	for _, body := range r.Bodies {
		e.body(body)
	}
	return e.b
}

// decodePutBodiesRequest allocates no more bodies than the payload can
// hold; the bodies' bytes alias p.
func decodePutBodiesRequest(p []byte) (putBodiesRequest, error) {
	d := dec{b: p}
	var r putBodiesRequest
	n := d.u32()
	if d.err == nil && uint64(n) > uint64(len(d.b))/bodyMinSize {
		d.fail(fmt.Sprintf("%d bodies do not fit in %d bytes", n, len(d.b)))
	}
	if d.err == nil {
		r.Bodies = make([]chunk.Body, 0, n)
		for i := uint32(0); i < n && d.err == nil; i++ {
			r.Bodies = append(r.Bodies, d.body())
		}
	}
	return r, d.finish("put-bodies request")
}

// putBodiesReply is the OK payload of put-bodies: the bytes the store
// grew by (bodies it had already are not stored again).
type putBodiesReply struct{ Added int64 }

// appendTo is the server's side of put-bodies.
func (r putBodiesReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.i64(r.Added)
	return e.b
}

// decodePutBodiesReply is the client's side of put-bodies.
func decodePutBodiesReply(p []byte) (putBodiesReply, error) {
	d := dec{b: p}
	r := putBodiesReply{Added: d.i64()}
	return r, d.finish("put-bodies reply")
}

// bodyReply is one body frame of a read-bodies answer.
type bodyReply struct{ Body chunk.Body }

// appendTo is the server's side of read-bodies.
func (r bodyReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.body(r.Body)
	return e.b
}

// decodeBodyReply returns a body whose bytes alias p.
func decodeBodyReply(p []byte) (bodyReply, error) {
	d := dec{b: p}
	r := bodyReply{Body: d.body()}
	return r, d.finish("body reply")
}
