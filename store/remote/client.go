package remote

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/journal"
)

func init() { store.RegisterDialer("socket", Dial) }

// generalConns is the number of connections for object and chunk
// requests; journal requests have a connection of their own, so a large
// upload never delays the plugin's hot path.
const generalConns = 4

// connectTimeout bounds one connection attempt (TCP or SOCKS5, and the
// handshake).
const connectTimeout = 30 * time.Second

// Client is a connection to a store server: the store.Remote of socket:
// URLs. It is safe for concurrent use.
type Client struct {
	u        store.URL
	token    string
	retryFor time.Duration
	name     string
	info     helloOK

	general *pool
	jlane   *pool

	connID atomic.Uint64
	mu     sync.Mutex
	live   map[*conn]bool
	closed bool
}

var _ store.Remote = (*Client)(nil)

// Dial connects to the store server u names (through its SOCKS5 proxy when
// u.Proxy is set) and authenticates with opts.Token. It tries once; later
// calls retry a lost connection for opts.RetryFor.
func Dial(ctx context.Context, u store.URL, opts store.Options) (store.Remote, error) {
	return DialClient(ctx, u, opts)
}

// DialClient is Dial returning the concrete type.
func DialClient(ctx context.Context, u store.URL, opts store.Options) (*Client, error) {
	if u.Scheme != "socket" || u.Addr == "" {
		return nil, fmt.Errorf("store URL %q is not a socket: URL", u.Raw)
	}
	cl := &Client{u: u, token: opts.Token, retryFor: opts.RetryFor, live: map[*conn]bool{}}
	if cl.retryFor == 0 {
		cl.retryFor = store.DefaultRetryFor
	}
	host, _ := os.Hostname()
	cl.name = fmt.Sprintf("%s pid %d on %s", filepath.Base(os.Args[0]), os.Getpid(), host)
	cl.general, cl.jlane = newPool(generalConns), newPool(1)
	c, info, err := cl.connect(ctx)
	if err != nil {
		return nil, cl.describe(err)
	}
	cl.info = info
	sl, _ := cl.general.get(context.Background())
	sl.c = c
	cl.general.put(sl)
	return cl, nil
}

// describe adds what to do to a connection failure.
func (cl *Client) describe(err error) error {
	var re *Error
	if errors.As(err, &re) {
		return fmt.Errorf("store server %s: %w", cl.u.Addr, err)
	}
	via := ""
	if cl.u.Proxy != "" {
		via = " through the SOCKS5 proxy " + cl.u.Proxy
	}
	return fmt.Errorf("connect to store server %s%s: %w (check that backup-cli server runs there and is reachable)", cl.u.Addr, via, err)
}

// Admin reports whether the client's token is an admin token.
func (cl *Client) Admin() bool { return cl.info.Admin }

// Nodes are the nodes a node token may use.
func (cl *Client) Nodes() []string { return slices.Clone(cl.info.Nodes) }

// Objects is the server's object view for this client.
func (cl *Client) Objects() backend.Backend { return objects{cl} }

// Chunks is nil for an admin token (the store then reads and writes packs
// itself, so gc, forget and verify work over the wire).
func (cl *Client) Chunks() store.ChunkService {
	if cl.info.Admin {
		return nil
	}
	return chunks{cl}
}

// Journals opens node journals on the server.
func (cl *Client) Journals() store.Journals { return journals{cl} }

// Close closes every connection. A journal opened through the client is
// released by the server.
func (cl *Client) Close() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed {
		return nil
	}
	cl.closed = true
	for c := range cl.live {
		c.nc.Close()
	}
	return nil
}

var errClientClosed = errors.New("store server connection closed")

func (cl *Client) isClosed() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.closed
}

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
	p := h.encode()
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
	return !errors.Is(err, errMalformed) && !errors.Is(err, errClientClosed)
}

// do runs fn on a connection of p. A lost connection is replaced and fn
// retried (attempt counts the tries) with backoff, 100 ms doubling to
// 5 s, until the server has been unreachable for the retry period. fn must
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
				delay = min(2*delay, 5*time.Second)
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

func (cl *Client) viaProxy() string {
	if cl.u.Proxy == "" {
		return ""
	}
	return " (and the SOCKS5 proxy " + cl.u.Proxy + ")"
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
		var e enc
		e.str(name)
		e.u64(uint64(len(data)))
		if err := c.send(msgPut, e.b); err != nil {
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
		if have, gerr := o.Get(ctx, name, 0, -1); gerr == nil && string(have) == string(data) {
			return nil
		}
	}
	return o.wrap("put", name, err)
}

func (o objects) Get(ctx context.Context, name string, off, length int64) ([]byte, error) {
	if err := backend.ValidName(name); err != nil {
		return nil, err
	}
	var got []byte
	err := o.cl.do(ctx, o.cl.general, func(c *conn, _ int) error {
		var e enc
		e.str(name)
		e.i64(off + int64(len(got)))
		if length < 0 {
			e.i64(-1)
		} else {
			e.i64(length - int64(len(got)))
		}
		_, err := c.call(msgGet, e.b, func(typ byte, p []byte) error {
			if typ != msgData {
				return protoErr(fmt.Errorf("%s frame in a get answer", msgName(typ)))
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

func (o objects) Stat(ctx context.Context, name string) (backend.Info, error) {
	if err := backend.ValidName(name); err != nil {
		return backend.Info{}, err
	}
	var in backend.Info
	err := o.cl.do(ctx, o.cl.general, func(c *conn, _ int) error {
		var e enc
		e.str(name)
		p, err := c.call(msgStat, e.b, nil)
		if err != nil {
			return err
		}
		d := dec{b: p}
		in = decodeInfo(&d)
		if err := d.done(); err != nil {
			return protoErr(err)
		}
		return nil
	})
	return in, o.wrap("stat", name, err)
}

// List streams the names; after a lost connection it resumes after the
// last name delivered.
func (o objects) List(ctx context.Context, prefix string, fn func(backend.Info) error) error {
	after := ""
	err := o.cl.do(ctx, o.cl.general, func(c *conn, _ int) error {
		var e enc
		e.str(prefix)
		e.str(after)
		_, err := c.call(msgList, e.b, func(typ byte, p []byte) error {
			if typ != msgItems {
				return protoErr(fmt.Errorf("%s frame in a list answer", msgName(typ)))
			}
			d := dec{b: p}
			n := d.u32()
			if d.err == nil && uint64(n) > uint64(len(d.b))/20 {
				return protoErr(fmt.Errorf("list page of %d entries in %d bytes", n, len(d.b)))
			}
			infos := make([]backend.Info, 0, n)
			for i := uint32(0); i < n && d.err == nil; i++ {
				infos = append(infos, decodeInfo(&d))
			}
			if err := d.done(); err != nil {
				return protoErr(err)
			}
			for _, in := range infos {
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

func (o objects) Delete(ctx context.Context, name string) error {
	if err := backend.ValidName(name); err != nil {
		return err
	}
	err := o.cl.do(ctx, o.cl.general, func(c *conn, _ int) error {
		var e enc
		e.str(name)
		_, err := c.call(msgDelete, e.b, nil)
		return err
	})
	return o.wrap("delete", name, err)
}

// chunks is the ChunkService of a node token.
type chunks struct{ cl *Client }

// missingBatch is the number of ids per Missing request.
const missingBatch = 16 << 10

func (ch chunks) Missing(ctx context.Context, ids []chunker.ID) ([]bool, error) {
	out := make([]bool, 0, len(ids))
	for start := 0; start < len(ids); start += missingBatch {
		batch := ids[start:min(len(ids), start+missingBatch)]
		err := ch.cl.do(ctx, ch.cl.general, func(c *conn, _ int) error {
			var e enc
			e.u32(uint32(len(batch)))
			for _, id := range batch {
				e.id(id)
			}
			p, err := c.call(msgMissing, e.b, nil)
			if err != nil {
				return err
			}
			d := dec{b: p}
			n := d.u32()
			if d.err == nil && int(n) != len(batch) {
				return protoErr(fmt.Errorf("missing: %d answers for %d ids", n, len(batch)))
			}
			for range batch {
				out = append(out, d.bool())
			}
			if err := d.done(); err != nil {
				out = out[:start]
				return protoErr(err)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("store server %s: %w", ch.cl.u.Addr, err)
		}
	}
	return out, nil
}

// putBatch bounds the payload of one PutBodies request: a whole pack of
// the writer (which flushes at the store's pack size, 8 MiB by default, plus
// one chunk), so the server writes it as one pack; a single larger body
// travels alone.
const putBatch = 24 << 20

func (ch chunks) PutBodies(ctx context.Context, bodies []store.ChunkBody) (int64, error) {
	var added int64
	for len(bodies) > 0 {
		n, size := 0, 4
		for n < len(bodies) && (n == 0 || size+45+len(bodies[n].Body) <= putBatch) {
			size += 45 + len(bodies[n].Body)
			n++
		}
		batch := bodies[:n]
		bodies = bodies[n:]
		err := ch.cl.do(ctx, ch.cl.general, func(c *conn, _ int) error {
			e := enc{b: make([]byte, 0, size)}
			e.u32(uint32(len(batch)))
			for _, b := range batch {
				e.body(b)
			}
			p, err := c.call(msgPutBodies, e.b, nil)
			if err != nil {
				return err
			}
			d := dec{b: p}
			a := d.i64()
			if err := d.done(); err != nil {
				return protoErr(err)
			}
			added += a
			return nil
		})
		if err != nil {
			return added, fmt.Errorf("store server %s: %w", ch.cl.u.Addr, err)
		}
	}
	return added, nil
}

// readBatch is the number of ids per ReadBodies request.
const readBatch = 32 << 10

// ReadBodies streams the bodies; after a lost connection it asks again for
// the ones not delivered yet.
func (ch chunks) ReadBodies(ctx context.Context, ids []chunker.ID, fn func(store.ChunkBody) error) error {
	seen := make(map[chunker.ID]bool, len(ids))
	distinct := make([]chunker.ID, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			distinct = append(distinct, id)
		}
	}
	clear(seen)
	delivered := seen
	for start := 0; start < len(distinct); start += readBatch {
		batch := distinct[start:min(len(distinct), start+readBatch)]
		err := ch.cl.do(ctx, ch.cl.general, func(c *conn, _ int) error {
			var e enc
			want := batch[:0:0]
			for _, id := range batch {
				if !delivered[id] {
					want = append(want, id)
				}
			}
			if len(want) == 0 {
				return nil
			}
			e.u32(uint32(len(want)))
			for _, id := range want {
				e.id(id)
			}
			_, err := c.call(msgReadBodies, e.b, func(typ byte, p []byte) error {
				if typ != msgBody {
					return protoErr(fmt.Errorf("%s frame in a read-bodies answer", msgName(typ)))
				}
				d := dec{b: p}
				b := d.body()
				if err := d.done(); err != nil {
					return protoErr(err)
				}
				if delivered[b.ID] {
					return nil
				}
				delivered[b.ID] = true
				return fn(b)
			})
			return err
		})
		if err != nil {
			var re *Error
			if errors.As(err, &re) {
				return fmt.Errorf("store server %s: %w", ch.cl.u.Addr, err)
			}
			return err
		}
	}
	return nil
}

// journals is the JournalService of the client.
type journals struct{ cl *Client }

func (js journals) OpenJournal(ctx context.Context, node string) (store.Journal, error) {
	j := &remoteJournal{cl: js.cl, node: node}
	err := js.cl.do(ctx, js.cl.jlane, func(c *conn, _ int) error { return j.ensureOpen(c) })
	if err != nil {
		return nil, fmt.Errorf("open journal of node %q on store server %s: %w", node, js.cl.u.Addr, err)
	}
	return j, nil
}

// CheckJournal leaves the journal to the server's own verify (a client sees
// only the records after a node's newest manifest): the server holds the
// journals of the nodes it serves.
func (js journals) CheckJournal(context.Context, string) (bool, error) { return true, nil }

func (js journals) ReadJournal(ctx context.Context, node string, afterSeq uint64, fn func(journal.Record) error) error {
	after := afterSeq
	err := js.cl.do(ctx, js.cl.general, func(c *conn, _ int) error {
		return readRecords(c, msgJRead, node, &after, fn)
	})
	if err != nil {
		var re *Error
		if errors.As(err, &re) {
			return fmt.Errorf("read journal of node %q on store server %s: %w", node, js.cl.u.Addr, err)
		}
	}
	return err
}

func readRecords(c *conn, typ byte, node string, after *uint64, fn func(journal.Record) error) error {
	var e enc
	e.str(node)
	e.u64(*after)
	_, err := c.call(typ, e.b, func(t byte, p []byte) error {
		if t != msgRecord {
			return protoErr(fmt.Errorf("%s frame in a records answer", msgName(t)))
		}
		d := dec{b: p}
		r := d.record()
		if err := d.done(); err != nil {
			return protoErr(err)
		}
		*after = r.Seq
		return fn(r)
	})
	return err
}

// remoteJournal is a node journal kept by the server. Its state (Last,
// NextSeq, Size) is the one of the last answer, so that reading it costs
// no round trip.
type remoteJournal struct {
	cl   *Client
	node string
	// mu serialises requests.
	mu     sync.Mutex
	openOn uint64 // the connection the server-side handle belongs to

	smu       sync.Mutex
	opened    bool
	last      journal.Record
	hasLast   bool
	next      uint64
	size      int64
	recovered int64
	closed    bool
}

var _ store.Journal = (*remoteJournal)(nil)

// ensureOpen opens the journal on the server for connection c, once per
// connection: a journal opened before a reconnect is reopened
// transparently. The first open sets the client's view of the journal;
// later ones keep it (a retried append must compare with what the client
// knew).
func (j *remoteJournal) ensureOpen(c *conn) error {
	if j.openOn == c.id {
		return nil
	}
	var e enc
	e.str(j.node)
	p, err := c.call(msgJOpen, e.b, nil)
	if err != nil {
		return err
	}
	d := dec{b: p}
	next, size, recovered, has := d.u64(), d.i64(), d.i64(), d.bool()
	var last journal.Record
	if has {
		last = d.record()
	}
	if err := d.done(); err != nil {
		return protoErr(err)
	}
	j.openOn = c.id
	j.smu.Lock()
	defer j.smu.Unlock()
	if !j.opened {
		j.opened = true
		j.next, j.size, j.recovered, j.hasLast, j.last = next, size, recovered, has, last
	}
	return nil
}

func (j *remoteJournal) checkOpen(op string) error {
	j.smu.Lock()
	defer j.smu.Unlock()
	if j.closed {
		return fmt.Errorf("journal of node %q on store server %s: %s: %w", j.node, j.cl.u.Addr, op, journal.ErrClosed)
	}
	return nil
}

func (j *remoteJournal) Append(r journal.Record) (journal.Record, error) {
	return j.write(msgJAppend, r)
}

func (j *remoteJournal) Replace(r journal.Record) (journal.Record, error) {
	return j.write(msgJReplace, r)
}

// write sends the record with the seq the client expects it to get. The
// server stores it only at that seq, and answers a retry whose first try
// was stored (its acknowledgement lost) with the stored record.
func (j *remoteJournal) write(typ byte, r journal.Record) (journal.Record, error) {
	op := "append"
	if typ == msgJReplace {
		op = "replace"
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.checkOpen(op); err != nil {
		return journal.Record{}, err
	}
	j.smu.Lock()
	expected := j.next
	j.smu.Unlock()
	var e enc
	e.str(j.node)
	e.u64(expected)
	e.record(r)
	var seq, next uint64
	var size int64
	var at time.Time
	err := j.cl.do(context.Background(), j.cl.jlane, func(c *conn, _ int) error {
		if err := j.ensureOpen(c); err != nil {
			return err
		}
		p, err := c.call(typ, e.b, nil)
		if err != nil {
			return err
		}
		d := dec{b: p}
		seq, at, next, size = d.u64(), d.time(), d.u64(), d.i64()
		if err := d.done(); err != nil {
			return protoErr(err)
		}
		return nil
	})
	if err != nil {
		return journal.Record{}, fmt.Errorf("journal of node %q on store server %s: %s version %d: %w", j.node, j.cl.u.Addr, op, r.Version, err)
	}
	r.Seq, r.Time = seq, at
	stored := r
	stored.Statements = slices.Clone(r.Statements)
	j.smu.Lock()
	j.last, j.hasLast, j.next, j.size = stored, true, next, size
	j.smu.Unlock()
	return r, nil
}

func (j *remoteJournal) Records(afterSeq uint64, fn func(journal.Record) error) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.checkOpen("records"); err != nil {
		return err
	}
	after := afterSeq
	err := j.cl.do(context.Background(), j.cl.jlane, func(c *conn, _ int) error {
		if err := j.ensureOpen(c); err != nil {
			return err
		}
		return readRecords(c, msgJRecords, j.node, &after, fn)
	})
	var re *Error
	if errors.As(err, &re) {
		return fmt.Errorf("journal of node %q on store server %s: %w", j.node, j.cl.u.Addr, err)
	}
	return err
}

func (j *remoteJournal) Last() (journal.Record, bool) {
	j.smu.Lock()
	defer j.smu.Unlock()
	r := j.last
	r.Statements = slices.Clone(r.Statements)
	return r, j.hasLast
}

func (j *remoteJournal) NextSeq() uint64 {
	j.smu.Lock()
	defer j.smu.Unlock()
	return j.next
}

func (j *remoteJournal) Size() int64 {
	j.smu.Lock()
	defer j.smu.Unlock()
	return j.size
}

func (j *remoteJournal) Recovered() int64 {
	j.smu.Lock()
	defer j.smu.Unlock()
	return j.recovered
}

// Trim asks the server to drop records up to uptoSeq; it refuses beyond the
// node's newest manifest.
func (j *remoteJournal) Trim(uptoSeq uint64) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.checkOpen("trim"); err != nil {
		return err
	}
	var size int64
	err := j.cl.do(context.Background(), j.cl.jlane, func(c *conn, _ int) error {
		if err := j.ensureOpen(c); err != nil {
			return err
		}
		var e enc
		e.str(j.node)
		e.u64(uptoSeq)
		p, err := c.call(msgJTrim, e.b, nil)
		if err != nil {
			return err
		}
		d := dec{b: p}
		size = d.i64()
		if err := d.done(); err != nil {
			return protoErr(err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("journal of node %q on store server %s: trim to seq %d: %w", j.node, j.cl.u.Addr, uptoSeq, err)
	}
	j.smu.Lock()
	j.size = size
	j.smu.Unlock()
	return nil
}

// Close releases the journal on the server (best effort: a connection
// that is gone released it already).
func (j *remoteJournal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.smu.Lock()
	if j.closed {
		j.smu.Unlock()
		return nil
	}
	j.closed = true
	j.smu.Unlock()
	if j.cl.isClosed() || j.openOn == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := j.cl.do(ctx, j.cl.jlane, func(c *conn, _ int) error {
		if j.openOn != c.id {
			return nil // a new connection: nothing open there
		}
		var e enc
		e.str(j.node)
		_, err := c.call(msgJClose, e.b, nil)
		return err
	})
	var re *Error
	if errors.As(err, &re) {
		return fmt.Errorf("journal of node %q on store server %s: close: %w", j.node, j.cl.u.Addr, err)
	}
	return nil
}
