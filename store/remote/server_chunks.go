package remote

import (
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/packs"
)

// packs is the chunk layer the server serves its node clients from: the
// packs of its own store.
func (ss *session) packs() (*packs.Packs, error) { return ss.srv.st.Packs("serve chunks") }

// missing tells a node client which of its chunks the store lacks, so it
// uploads only those.
func (ss *session) missing(p []byte) error {
	req, err := decodeIDsRequest(p)
	if err != nil {
		return err
	}
	packs, err := ss.packs()
	if err != nil {
		return err
	}
	miss, err := packs.Missing(ss.ctx, req.IDs)
	if err != nil {
		return err
	}
	return ss.ok(encode(missingReply{Missing: miss}))
}

// putBodies stores a node client's bodies; the store checks each against
// its id.
func (ss *session) putBodies(p []byte) error {
	req, err := decodePutBodiesRequest(p)
	if err != nil {
		return err
	}
	packs, err := ss.packs()
	if err != nil {
		return err
	}
	var size int64
	for _, b := range req.Bodies {
		size += int64(len(b.Body))
	}
	settle, err := ss.srv.quotas.reserve(ss.id, "put chunks", size)
	if err != nil {
		return err
	}
	added, err := packs.PutBodies(ss.ctx, req.Bodies)
	settle(added)
	if err != nil {
		return err
	}
	return ss.ok(encode(putBodiesReply{Added: added}))
}

// readBodies streams one body frame per distinct id, in pack order.
func (ss *session) readBodies(p []byte) error {
	req, err := decodeIDsRequest(p)
	if err != nil {
		return err
	}
	packs, err := ss.packs()
	if err != nil {
		return err
	}
	var buf []byte
	send := func(b chunk.Body) error {
		buf = bodyReply{Body: b}.appendTo(buf[:0])
		return ss.send(msgBody, buf)
	}
	// One reader: the bodies go out on this one connection, in pack order.
	_, err = packs.ReadBodies(ss.ctx, nil, req.IDs, 1, false, func() (func(chunk.Body) error, func() error) { return send, nil })
	if err != nil {
		return err
	}
	return ss.ok(nil)
}
