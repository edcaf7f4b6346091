package remote

import (
	"context"
	"errors"
	"fmt"

	"github.com/clnbackup/backup/store/backend"
)

// objects is the backend.Backend of the client.
type objects struct{ cl *Client }

var _ backend.Backend = objects{}

func (o objects) Location() string { return o.cl.u.Raw }
func (o objects) Close() error     { return o.cl.Close() }

func (o objects) wrap(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var re *Error
	if errors.As(err, &re) {
		return fmt.Errorf("%s %s on store server %s: %w", op, name, o.cl.u.Addr, err)
	}
	return err
}

// PutIfAbsent stores data. A retry after a lost connection that finds the
// name taken compares the stored object with data: identical means the
// first attempt stored it.
func (o objects) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	if err := backend.ValidName(name); err != nil {
		return err
	}
	retried := false
	err := o.cl.do(ctx, o.cl.general, func(c *conn, attempt int) error {
		retried = attempt > 0
		if err := c.send(msgPut, encode(putRequest{Name: name, Size: uint64(len(data))})); err != nil {
			return err
		}
		for rest := data; len(rest) > 0; {
			n := min(len(rest), dataPiece)
			if err := c.send(msgData, rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		if err := c.flush(); err != nil {
			return err
		}
		_, err := c.answer(nil)
		return err
	})
	if retried && errors.Is(err, backend.ErrExists) {
		if have, gerr := o.ReadWhole(ctx, name, int64(len(data))); gerr == nil && string(have) == string(data) {
			return nil
		}
	}
	return o.wrap("put", name, err)
}

// Get reads the object; after a lost connection it asks for the bytes
// not received yet.
func (o objects) Get(ctx context.Context, name string, off, length int64) ([]byte, error) {
	if err := backend.ValidName(name); err != nil {
		return nil, err
	}
	var got []byte
	err := o.cl.do(ctx, o.cl.general, func(c *conn, _ int) error {
		req := getRequest{Name: name, Off: off + int64(len(got)), Length: -1}
		if length >= 0 {
			req.Length = length - int64(len(got))
		}
		_, err := c.call(msgGet, encode(req), func(typ byte, p []byte) error {
			if typ != msgData {
				return protoErr(fmt.Errorf("%s frame in a get answer", msgName(typ)))
			}
			// A bounded read never holds more than it asked for, whatever
			// the server sends.
			if length >= 0 && int64(len(p)) > length-int64(len(got)) {
				return protoErr(fmt.Errorf("the server sent more than the %d bytes asked for of %s", length, name))
			}
			got = append(got, p...)
			return nil
		})
		return err
	})
	if got == nil && err == nil {
		got = []byte{}
	}
	return got, o.wrap("get", name, err)
}

// ReadWhole implements backend.WholeReader: one get to the end, refused
// (and the connection dropped) as soon as the server has sent more than
// max bytes.
func (o objects) ReadWhole(ctx context.Context, name string, max int64) ([]byte, error) {
	if err := backend.ValidName(name); err != nil {
		return nil, err
	}
	var got []byte
	err := o.cl.do(ctx, o.cl.general, func(c *conn, _ int) error {
		got = got[:0]
		_, err := c.call(msgGet, encode(getRequest{Name: name, Length: -1}), func(typ byte, p []byte) error {
			if typ != msgData {
				return protoErr(fmt.Errorf("%s frame in a get answer", msgName(typ)))
			}
			if int64(len(p)) > max-int64(len(got)) {
				return netError{err: fmt.Errorf("object %s: the server sent more than the %d bytes it can have: %w (the store is damaged, or not written by backup-cli); run backup-cli verify", name, max, backend.ErrTooLarge), fatal: true}
			}
			got = append(got, p...)
			return nil
		})
		return err
	})
	if got == nil && err == nil {
		got = []byte{}
	}
	if err != nil {
		return nil, o.wrap("get", name, err)
	}
	return got, nil
}

// Stat is idempotent: a lost connection is simply retried.
func (o objects) Stat(ctx context.Context, name string) (backend.Info, error) {
	if err := backend.ValidName(name); err != nil {
		return backend.Info{}, err
	}
	var in backend.Info
	err := o.cl.do(ctx, o.cl.general, func(c *conn, _ int) error {
		p, err := c.call(msgStat, encode(nameRequest{Name: name}), nil)
		if err != nil {
			return err
		}
		r, err := decodeStatReply(p)
		if err != nil {
			return protoErr(err)
		}
		in = r.Info
		return nil
	})
	return in, o.wrap("stat", name, err)
}

// List streams the names; after a lost connection it resumes after the
// last name delivered.
func (o objects) List(ctx context.Context, prefix string, fn func(backend.Info) error) error {
	after := ""
	err := o.cl.do(ctx, o.cl.general, func(c *conn, _ int) error {
		_, err := c.call(msgList, encode(listRequest{Prefix: prefix, After: after}), func(typ byte, p []byte) error {
			if typ != msgItems {
				return protoErr(fmt.Errorf("%s frame in a list answer", msgName(typ)))
			}
			page, err := decodeItemsReply(p)
			if err != nil {
				return protoErr(err)
			}
			for _, in := range page.Items {
				after = in.Name
				if err := fn(in); err != nil {
					return err
				}
			}
			return nil
		})
		return err
	})
	return o.wrap("list", prefix, err)
}

// Delete is idempotent (deleting a missing object is not an error), so a
// lost connection is simply retried.
func (o objects) Delete(ctx context.Context, name string) error {
	if err := backend.ValidName(name); err != nil {
		return err
	}
	err := o.cl.do(ctx, o.cl.general, func(c *conn, _ int) error {
		_, err := c.call(msgDelete, encode(nameRequest{Name: name}), nil)
		return err
	})
	return o.wrap("delete", name, err)
}
