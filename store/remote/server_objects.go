package remote

import (
	"errors"
	"fmt"
	"io"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
)

// be is the store's object view; the handlers check the token's rights
// before every use.
func (ss *session) be() backend.Backend { return ss.srv.st.Objects() }

// nodeObjectLimit bounds one put of a node token: a node stores manifests
// and leases, never packs.
const nodeObjectLimit = 64 << 20

// put reads the object's data frames and stores it if absent. A header or
// data frame that does not fit ends the connection: what follows could
// not be framed.
func (ss *session) put(p []byte) error {
	req, err := decodePutRequest(p)
	if err != nil {
		return wireErr{err}
	}
	limit := ss.srv.opt.MaxObjectSize
	if !ss.id.Admin {
		limit = min(limit, nodeObjectLimit)
	}
	if req.Size > uint64(limit) {
		ss.fail(codeBadRequest, fmt.Sprintf("put %s: %d bytes exceed the %d-byte object limit", req.Name, req.Size, limit))
		return wireErr{fmt.Errorf("put %s of %d bytes refused", req.Name, req.Size)}
	}
	authErr := ss.id.canWrite(req.Name)
	data, err := ss.readData(req, authErr == nil)
	if err != nil {
		return err
	}
	if authErr != nil {
		return authErr
	}
	if !ss.id.Admin {
		// A node token's object is checked by kind before it is stored:
		// one that does not decode would stop gc and list for every node.
		if err := ss.srv.st.CheckNodeObject(ss.ctx, req.Name, data); err != nil {
			return badRequest("put %s refused to %s: %v (a node's client stores only well-formed node records, leases and manifests of its nodes)", req.Name, ss.id, err)
		}
	}
	settle, err := ss.srv.quotas.reserve(ss.id, "put "+req.Name, int64(len(data)))
	if err != nil {
		return err
	}
	if err := ss.be().PutIfAbsent(ss.ctx, req.Name, data); err != nil {
		settle(0)
		return err
	}
	settle(int64(len(data)))
	return ss.ok(nil)
}

// readData reads the data frames of a put. Unless keep (the put is
// denied), it consumes them without keeping them, so the connection stays
// usable; when keep, the data is never nil (an empty object is stored).
func (ss *session) readData(req putRequest, keep bool) ([]byte, error) {
	var data []byte
	if keep {
		data = make([]byte, 0, min(req.Size, dataPiece))
	}
	for got := uint64(0); got < req.Size; {
		typ, n, err := readHeader(ss.br)
		if err != nil {
			return nil, wireErr{err}
		}
		if typ != msgData || n > dataPiece || uint64(n) > req.Size-got || n == 0 {
			ss.fail(codeBadRequest, fmt.Sprintf("put %s: expected data frames of at most %d bytes totalling %d, got %s of %d bytes", req.Name, dataPiece, req.Size, msgName(typ), n))
			return nil, wireErr{fmt.Errorf("put %s: bad data frame", req.Name)}
		}
		ss.progress()
		if keep {
			start := len(data)
			data = append(data, make([]byte, n)...)
			if _, err := io.ReadFull(ss.br, data[start:]); err != nil {
				return nil, wireErr{err}
			}
		} else if _, err := io.CopyN(io.Discard, ss.br, int64(n)); err != nil {
			return nil, wireErr{err}
		}
		got += uint64(n)
	}
	return data, nil
}

// get sends what the backend read as data frames, even when the read
// failed part way, then the final frame.
func (ss *session) get(p []byte) error {
	req, err := decodeGetRequest(p)
	if err != nil {
		return err
	}
	if err := ss.id.canRead(req.Name); err != nil {
		return err
	}
	data, err := ss.be().Get(ss.ctx, req.Name, req.Off, req.Length)
	for len(data) > 0 {
		n := min(len(data), dataPiece)
		if werr := ss.send(msgData, data[:n]); werr != nil {
			return werr
		}
		data = data[n:]
	}
	if err != nil {
		return err
	}
	return ss.ok(nil)
}

// stat answers an object's info to a token that may read it.
func (ss *session) stat(p []byte) error {
	req, err := decodeNameRequest(p)
	if err != nil {
		return err
	}
	if err := ss.id.canRead(req.Name); err != nil {
		return err
	}
	in, err := ss.be().Stat(ss.ctx, req.Name)
	if err != nil {
		return err
	}
	return ss.ok(encode(statReply{Info: in}))
}

// list streams the names the token may read in pages of listPage; the
// config object, which node tokens may read, is listed from its own
// place (listPlan).
func (ss *session) list(p []byte) error {
	req, err := decodeListRequest(p)
	if err != nil {
		return err
	}
	config, prefixes, err := ss.id.listPlan(req.Prefix)
	if err != nil {
		return err
	}
	var page itemsReply
	var buf []byte
	flush := func() error {
		if len(page.Items) == 0 {
			return nil
		}
		buf = page.appendTo(buf[:0])
		page.Items = page.Items[:0]
		return ss.send(msgItems, buf)
	}
	emit := func(in backend.Info) error {
		if in.Name <= req.After {
			return nil
		}
		if !ss.id.Admin && ss.id.canRead(in.Name) != nil {
			return nil
		}
		if page.Items = append(page.Items, in); len(page.Items) >= listPage {
			return flush()
		}
		return nil
	}
	if config {
		in, err := ss.be().Stat(ss.ctx, store.ConfigObject)
		if err == nil {
			err = emit(in)
		}
		if err != nil && !errors.Is(err, backend.ErrNotFound) {
			return err
		}
	}
	for _, p := range prefixes {
		if err := ss.be().List(ss.ctx, p, emit); err != nil {
			return err
		}
	}
	if err := flush(); err != nil {
		return err
	}
	return ss.ok(nil)
}

// delete removes an object; node tokens may delete only their lease
// generations (Identity.canDelete).
func (ss *session) delete(p []byte) error {
	req, err := decodeNameRequest(p)
	if err != nil {
		return err
	}
	if err := ss.id.canDelete(req.Name); err != nil {
		return err
	}
	if err := ss.be().Delete(ss.ctx, req.Name); err != nil {
		return err
	}
	return ss.ok(nil)
}
