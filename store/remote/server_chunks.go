package remote

import (
	"github.com/clnbackup/backup/store"
)

// missing tells a node client which of its chunks the store lacks, so it
// uploads only those.
func (ss *session) missing(p []byte) error {
	req, err := decodeIDsRequest(p)
	if err != nil {
		return err
	}
	miss, err := ss.srv.st.Missing(ss.ctx, req.IDs)
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
	added, err := ss.srv.st.PutBodies(ss.ctx, req.Bodies)
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
	var buf []byte
	err = ss.srv.st.ReadBodies(ss.ctx, req.IDs, func(b store.ChunkBody) error {
		buf = bodyReply{Body: b}.appendTo(buf[:0])
		return ss.send(msgBody, buf)
	})
	if err != nil {
		return err
	}
	return ss.ok(nil)
}
