package remote

import (
	"github.com/clnbackup/backup/store"
)

func (ss *session) missing(d *dec) error {
	ids := d.ids()
	if err := d.done(); err != nil {
		return err
	}
	miss, err := ss.srv.st.Missing(ss.ctx, ids)
	if err != nil {
		return err
	}
	var e enc
	e.u32(uint32(len(miss)))
	for _, m := range miss {
		e.bool(m)
	}
	return ss.ok(e.b)
}

func (ss *session) putBodies(d *dec) error {
	n := d.u32()
	if d.err == nil && uint64(n) > uint64(len(d.b))/41 { // id, kind, raw, length
		return badRequest("put-bodies: %d bodies do not fit in %d bytes", n, len(d.b))
	}
	bodies := make([]store.ChunkBody, 0, n)
	for i := uint32(0); i < n && d.err == nil; i++ {
		bodies = append(bodies, d.body())
	}
	if err := d.done(); err != nil {
		return err
	}
	added, err := ss.srv.st.PutBodies(ss.ctx, bodies)
	if err != nil {
		return err
	}
	var e enc
	e.i64(added)
	return ss.ok(e.b)
}

func (ss *session) readBodies(d *dec) error {
	ids := d.ids()
	if err := d.done(); err != nil {
		return err
	}
	var e enc
	err := ss.srv.st.ReadBodies(ss.ctx, ids, func(b store.ChunkBody) error {
		e.b = e.b[:0]
		e.body(b)
		return ss.send(msgBody, e.b)
	})
	if err != nil {
		return err
	}
	return ss.ok(nil)
}
