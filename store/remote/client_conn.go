package remote

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// maxBackoff caps the pause between connection attempts. A node's
// lightningd waits in db_write meanwhile, and an attempt on a server that
// is down costs a refused TCP connect: a server back between two attempts
// is found within a second.
const maxBackoff = time.Second

// connectTimeout bounds one connection attempt (TCP or SOCKS5, TLS, and
// the handshake).
const connectTimeout = 30 * time.Second

// pool is a fixed set of connection slots; a nil connection is dialled on
// use. Slots with a live connection are handed out first, so connections
// are only opened when requests overlap.
type pool struct {
	sem   chan struct{}
	mu    sync.Mutex
	slots []*slot // live connections at the end
}

type slot struct{ c *conn }

func newPool(n int) *pool {
	p := &pool{sem: make(chan struct{}, n)}
	for i := 0; i < n; i++ {
		p.slots = append(p.slots, &slot{})
	}
	return p
}

func (p *pool) get(ctx context.Context) (*slot, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	sl := p.slots[len(p.slots)-1]
	p.slots = p.slots[:len(p.slots)-1]
	return sl, nil
}

func (p *pool) put(sl *slot) {
	p.mu.Lock()
	if sl.c != nil {
		p.slots = append(p.slots, sl)
	} else {
		p.slots = append([]*slot{sl}, p.slots...)
	}
	p.mu.Unlock()
	<-p.sem
}

// conn is one authenticated connection.
type conn struct {
	id  uint64
	nc  net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	buf []byte // stream frame payloads, reused
	// stall, when set, is how long the server may make no progress on a
	// request before the connection counts as lost (and the request is
	// retried on a new one): calls without a deadline of their own, such
	// as the plugin's journal appends, never wait forever on a server that
	// accepted the connection but stopped answering.
	stall time.Duration
}

// stallTimeout bounds how long a request without a deadline waits for the
// server to make progress.
var stallTimeout = time.Minute

// progress pushes the stall deadline on.
func (c *conn) progress() {
	if c.stall > 0 {
		c.nc.SetDeadline(time.Now().Add(c.stall))
	}
}

// netError is a failure of the connection: the request may be retried on
// a new one. Protocol violations are fatal: not retried.
type netError struct {
	err   error
	fatal bool
}

func (e netError) Error() string { return e.err.Error() }
func (e netError) Unwrap() error { return e.err }

func (cl *Client) connect(ctx context.Context) (*conn, helloOK, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	if cl.u.Proxy != "" {
		nc, err = dialSOCKS5(ctx, cl.u.Proxy, cl.u.Addr)
	} else {
		d := net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 4}}
		nc, err = d.DialContext(ctx, "tcp", cl.u.Addr)
	}
	if err != nil {
		return nil, helloOK{}, err
	}
	if cl.u.TLS != "" {
		tc, err := cl.startTLS(ctx, nc)
		if err != nil {
			nc.Close()
			return nil, helloOK{}, err
		}
		nc = tc
	}
	c := &conn{id: cl.connID.Add(1), nc: nc, br: bufio.NewReaderSize(nc, 64<<10), bw: bufio.NewWriterSize(nc, 64<<10)}
	dl, _ := ctx.Deadline()
	nc.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	info, err := c.handshake(cl.token, cl.name)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		nc.Close()
		return nil, helloOK{}, err
	}
	nc.SetDeadline(time.Time{})
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed {
		nc.Close()
		return nil, helloOK{}, errClientClosed
	}
	cl.live[c] = true
	return c, info, nil
}

func (c *conn) handshake(token, name string) (helloOK, error) {
	h := hello{Magic: magic, Version: ProtocolVersion, Token: token, Client: name}
	p := encode(h)
	if len(p) > MaxHandshakeFrame {
		return helloOK{}, &Error{Code: codeBadRequest, Msg: "token too long"}
	}
	if err := writeFrame(c.bw, msgHello, p); err != nil {
		return helloOK{}, err
	}
	if err := c.bw.Flush(); err != nil {
		return helloOK{}, err
	}
	typ, p, err := readFrame(c.br, func(t byte) int {
		if t == msgHelloOK || t == msgError {
			return MaxHandshakeFrame << 4
		}
		return 0
	}, nil)
	if err != nil {
		return helloOK{}, err
	}
	if typ == msgError {
		return helloOK{}, decodeError(p)
	}
	info, err := decodeHelloOK(p)
	if err != nil {
		return helloOK{}, err
	}
	if info.Version != ProtocolVersion {
		return helloOK{}, &Error{Code: codeBadVersion, Msg: fmt.Sprintf("the store server speaks protocol version %d, this program version %d: use a backup-cli and plugin of the same release as the server", info.Version, ProtocolVersion)}
	}
	return info, nil
}

func (cl *Client) drop(c *conn) {
	c.nc.Close()
	cl.mu.Lock()
	delete(cl.live, c)
	cl.mu.Unlock()
}

// retriable reports whether a failed connection attempt is worth retrying.
func retriable(err error) bool {
	var re *Error
	if errors.As(err, &re) {
		return re.Code == codeBusy
	}
	return !errors.Is(err, errMalformed) && !errors.Is(err, errClientClosed) && !errors.Is(err, ErrTLS)
}

// do runs fn on a connection of p. A lost connection is replaced and fn
// retried (attempt counts the tries) with backoff, 100 ms doubling to
// maxBackoff, until the server has been unreachable for the retry period. fn must
// make its request safe to repeat.
func (cl *Client) do(ctx context.Context, p *pool, fn func(c *conn, attempt int) error) error {
	sl, err := p.get(ctx)
	if err != nil {
		return err
	}
	defer p.put(sl)
	var failedAt time.Time
	var lastErr error
	delay := 100 * time.Millisecond
	fail := func(err error) error {
		lastErr = err
		if failedAt.IsZero() {
			failedAt = time.Now()
		}
		if cl.retryFor < 0 || time.Since(failedAt) >= cl.retryFor {
			return fmt.Errorf("store server %s was unreachable for %s (%v): check that backup-cli server runs there and that the network%s lets this host reach it: %w", cl.u.Addr, time.Since(failedAt).Round(time.Millisecond), lastErr, cl.viaProxy(), ErrUnreachable)
		}
		return nil
	}
	for attempt := 0; ; {
		if cl.isClosed() {
			return errClientClosed
		}
		if sl.c == nil {
			cctx, cancel := ctx, context.CancelFunc(func() {})
			if !failedAt.IsZero() && cl.retryFor >= 0 {
				// A connection attempt may not outlast the retry period.
				cctx, cancel = context.WithDeadline(ctx, failedAt.Add(cl.retryFor))
			}
			c, _, err := cl.connect(cctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !retriable(err) {
					return cl.describe(err)
				}
				if ferr := fail(err); ferr != nil {
					return ferr
				}
				wait := min(delay, time.Until(failedAt.Add(cl.retryFor)))
				delay = min(2*delay, maxBackoff)
				t := time.NewTimer(max(wait, time.Millisecond))
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				}
				continue
			}
			sl.c = c
			// The server answered: a later failure is a new outage,
			// retried quickly again (the retry period still runs from the
			// first failure).
			delay = 100 * time.Millisecond
		}
		err := cl.run(ctx, sl.c, func(c *conn) error { return fn(c, attempt) })
		attempt++
		var ne netError
		if err == nil || !errors.As(err, &ne) {
			return err
		}
		cl.drop(sl.c)
		sl.c = nil
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if cl.isClosed() {
			return errClientClosed
		}
		if ne.fatal {
			return fmt.Errorf("store server %s: %w", cl.u.Addr, ne.err)
		}
		if ferr := fail(ne.err); ferr != nil {
			return ferr
		}
	}
}

// run runs fn with ctx's deadline and cancellation applied to the
// connection.
func (cl *Client) run(ctx context.Context, c *conn, fn func(c *conn) error) error {
	dl, hasDL := ctx.Deadline()
	if hasDL {
		c.nc.SetDeadline(dl)
	}
	if !hasDL && ctx.Done() == nil {
		c.stall = stallTimeout // nothing else would ever end the wait
		defer func() { c.stall = 0; c.nc.SetDeadline(time.Time{}) }()
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Unix(1, 0)) })
	err := fn(c)
	if !stop() {
		// The connection's state is unknown: drop it.
		return netError{err: ctx.Err()}
	}
	if hasDL {
		c.nc.SetDeadline(time.Time{})
	}
	return err
}

func (c *conn) send(typ byte, p []byte) error {
	c.progress()
	if err := writeFrame(c.bw, typ, p); err != nil {
		return netError{err: err}
	}
	return nil
}

func (c *conn) flush() error {
	if err := c.bw.Flush(); err != nil {
		return netError{err: err}
	}
	return nil
}

// call sends one request and reads its answer: stream frames go to item
// (their payload is only valid during the call); the OK payload is
// returned. An error from item stops the calls to it; the rest of the
// answer is read (the connection stays usable) and the error returned.
func (c *conn) call(typ byte, p []byte, item func(typ byte, p []byte) error) ([]byte, error) {
	if err := c.send(typ, p); err != nil {
		return nil, err
	}
	if err := c.flush(); err != nil {
		return nil, err
	}
	return c.answer(item)
}

func (c *conn) answer(item func(typ byte, p []byte) error) ([]byte, error) {
	var itemErr error
	for {
		c.progress()
		typ, n, err := readHeader(c.br)
		if err != nil {
			return nil, netError{err: err}
		}
		limit := frameLimit(typ)
		if limit == 0 || typ < msgData {
			return nil, netError{err: fmt.Errorf("protocol error: unexpected %s frame from the server", msgName(typ)), fatal: true}
		}
		if int64(n) > int64(limit) {
			return nil, netError{err: fmt.Errorf("protocol error: %s frame of %d bytes from the server exceeds %d", msgName(typ), n, limit), fatal: true}
		}
		switch typ {
		case msgOK, msgError:
			p, err := readPayload(c.br, int(n), nil, c.progress)
			if err != nil {
				return nil, netError{err: err}
			}
			if typ == msgError {
				return nil, decodeError(p)
			}
			return p, itemErr
		}
		c.buf, err = readPayload(c.br, int(n), c.buf, c.progress)
		if err != nil {
			return nil, netError{err: err}
		}
		if itemErr == nil && item != nil {
			itemErr = item(typ, c.buf)
			var ne netError
			if errors.As(itemErr, &ne) {
				return nil, itemErr
			}
		}
		if cap(c.buf) > 1<<20 {
			c.buf = nil
		}
	}
}

// protoErr reports a malformed answer from the server.
func protoErr(err error) error {
	return netError{err: fmt.Errorf("protocol error: %w", err), fatal: true}
}
