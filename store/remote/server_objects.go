package remote

import (
	"errors"
	"fmt"
	"io"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
)

func (ss *session) be() backend.Backend { return ss.srv.st.Backend() }

func (ss *session) put(d *dec) error {
	name := d.str(1024)
	size := d.u64()
	if err := d.done(); err != nil {
		return wireErr{err} // the data frames that follow cannot be framed
	}
	limit := ss.srv.opt.MaxObjectSize
	if !ss.id.Admin {
		limit = min(limit, 64<<20)
	}
	if size > uint64(limit) {
		ss.fail(codeBadRequest, fmt.Sprintf("put %s: %d bytes exceed the %d-byte object limit", name, size, limit))
		return wireErr{fmt.Errorf("put %s of %d bytes refused", name, size)}
	}
	authErr := ss.id.canWrite(name)
	var data []byte
	if authErr == nil {
		data = make([]byte, 0, min(size, dataPiece))
	}
	for got := uint64(0); got < size; {
		typ, n, err := readHeader(ss.br)
		if err != nil {
			return wireErr{err}
		}
		if typ != msgData || n > dataPiece || uint64(n) > size-got || n == 0 {
			ss.fail(codeBadRequest, fmt.Sprintf("put %s: expected data frames of at most %d bytes totalling %d, got %s of %d bytes", name, dataPiece, size, msgName(typ), n))
			return wireErr{fmt.Errorf("put %s: bad data frame", name)}
		}
		ss.progress()
		if authErr != nil {
			// Denied: consume the data without keeping it.
			if _, err := io.CopyN(io.Discard, ss.br, int64(n)); err != nil {
				return wireErr{err}
			}
		} else {
			start := len(data)
			data = append(data, make([]byte, n)...)
			if _, err := io.ReadFull(ss.br, data[start:]); err != nil {
				return wireErr{err}
			}
		}
		got += uint64(n)
	}
	if authErr != nil {
		return authErr
	}
	if data == nil {
		data = []byte{}
	}
	if err := ss.be().PutIfAbsent(ss.ctx, name, data); err != nil {
		return err
	}
	return ss.ok(nil)
}

func (ss *session) get(d *dec) error {
	name := d.str(1024)
	off, length := d.i64(), d.i64()
	if err := d.done(); err != nil {
		return err
	}
	if err := ss.id.canRead(name); err != nil {
		return err
	}
	data, err := ss.be().Get(ss.ctx, name, off, length)
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

func (ss *session) stat(d *dec) error {
	name := d.str(1024)
	if err := d.done(); err != nil {
		return err
	}
	if err := ss.id.canRead(name); err != nil {
		return err
	}
	in, err := ss.be().Stat(ss.ctx, name)
	if err != nil {
		return err
	}
	var e enc
	e.info(in)
	return ss.ok(e.b)
}

func (ss *session) list(d *dec) error {
	prefix := d.str(1024)
	after := d.str(1024)
	if err := d.done(); err != nil {
		return err
	}
	config, prefixes, err := ss.id.listPlan(prefix)
	if err != nil {
		return err
	}
	var page enc
	count := 0
	flush := func() error {
		if count == 0 {
			return nil
		}
		var e enc
		e.u32(uint32(count))
		e.b = append(e.b, page.b...)
		page.b, count = page.b[:0], 0
		return ss.send(msgItems, e.b)
	}
	emit := func(in backend.Info) error {
		if in.Name <= after {
			return nil
		}
		if !ss.id.Admin && ss.id.canRead(in.Name) != nil {
			return nil
		}
		page.info(in)
		if count++; count >= listPage {
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

func (ss *session) delete(d *dec) error {
	name := d.str(1024)
	if err := d.done(); err != nil {
		return err
	}
	if err := ss.id.canDelete(name); err != nil {
		return err
	}
	if err := ss.be().Delete(ss.ctx, name); err != nil {
		return err
	}
	return ss.ok(nil)
}
