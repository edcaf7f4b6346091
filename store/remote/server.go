package remote

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/journal"
)

// ServerOptions tune a Server. Zero values take the defaults.
type ServerOptions struct {
	// Infof and Errorf log one line (no trailing newline needed); nil
	// discards.
	Infof  func(format string, args ...any)
	Errorf func(format string, args ...any)
	// MaxConns bounds concurrent connections (default 256); clients over
	// the limit are refused with a "busy" error and retry.
	MaxConns int
	// HandshakeTimeout bounds the time from accept to an authenticated
	// hello (default 10 s).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection that sends no request for that long
	// (default 10 min).
	IdleTimeout time.Duration
	// IOTimeout bounds the time a frame may make no progress, reading or
	// writing (default 2 min).
	IOTimeout time.Duration
	// MaxObjectSize bounds one object put: for admin tokens (default
	// 2 GiB); node tokens are held to 64 MiB.
	MaxObjectSize int64
}

// Server serves a store to clients. Create it with NewServer, run Serve,
// stop it with Shutdown.
type Server struct {
	st *store.Store
	// auth is the token table (nil: no authentication, every client
	// is admin); SetAuth swaps it while serving.
	auth atomic.Pointer[Auth]
	open bool
	opt  ServerOptions

	mu        sync.Mutex
	listeners map[net.Listener]bool
	conns     map[*session]bool
	shutdown  bool
	connWG    sync.WaitGroup
	nconns    atomic.Int64

	jmu      sync.Mutex
	journals map[string]*sharedJournal

	// dropAck, when set (tests), is asked after each journal write whether
	// to drop the connection instead of acknowledging it.
	dropAck func() bool
}

// sharedJournal is a node's journal, open once for every session using it.
type sharedJournal struct {
	node string
	// mu serialises the check-and-append of journal writes.
	mu   sync.Mutex
	j    store.Journal
	refs int
}

// SetAuth replaces the token table (the auth file was edited: backup-cli
// server reloads it on SIGHUP). New connections use it; connections
// already authenticated keep what their token allowed when they logged in.
// A server started without authentication cannot be given one.
func (s *Server) SetAuth(a *Auth) error {
	if s.open || a == nil {
		return errors.New("authentication can only be changed on a server started with an auth file, and not removed: restart the server")
	}
	s.auth.Store(a)
	return nil
}

// NewServer returns a server for st. With auth nil every client is admin
// (a warning is logged when Serve starts).
func NewServer(st *store.Store, auth *Auth, opt ServerOptions) *Server {
	if opt.Infof == nil {
		opt.Infof = func(string, ...any) {}
	}
	if opt.Errorf == nil {
		opt.Errorf = func(string, ...any) {}
	}
	if opt.MaxConns <= 0 {
		opt.MaxConns = 256
	}
	if opt.HandshakeTimeout <= 0 {
		opt.HandshakeTimeout = 10 * time.Second
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 10 * time.Minute
	}
	if opt.IOTimeout <= 0 {
		opt.IOTimeout = 2 * time.Minute
	}
	if opt.MaxObjectSize <= 0 {
		opt.MaxObjectSize = 2 << 30
	}
	srv := &Server{st: st, open: auth == nil, opt: opt, listeners: map[net.Listener]bool{}, conns: map[*session]bool{}, journals: map[string]*sharedJournal{}}
	srv.auth.Store(auth)
	return srv
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("store server closed")

// Serve accepts connections on l until Shutdown (then it returns
// ErrServerClosed) or an accept error.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = true
	s.mu.Unlock()
	if s.open {
		s.opt.Errorf("warning: no auth file: every client that reaches %s has full (admin) access to store %s", l.Addr(), s.st.Location())
	}
	s.opt.Infof("serving store %s on %s (protocol %d)", s.st.Location(), l.Addr(), ProtocolVersion)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			down := s.shutdown
			delete(s.listeners, l)
			s.mu.Unlock()
			if down {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.opt.Errorf("accept on %s: %v; retrying in %s", l.Addr(), err, delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.start(nc)
	}
}

func (s *Server) start(nc net.Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	ss := &session{srv: s, nc: nc, br: bufio.NewReaderSize(nc, 64<<10), bw: bufio.NewWriterSize(nc, 64<<10), ctx: ctx, cancel: cancel, opened: map[string]bool{}}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		nc.Close()
		cancel()
		return
	}
	over := len(s.conns) >= s.opt.MaxConns
	if !over {
		s.conns[ss] = true
		s.connWG.Add(1)
	}
	s.mu.Unlock()
	if over {
		s.opt.Errorf("connection from %s refused: %d connections (the --max-conns limit)", nc.RemoteAddr(), s.opt.MaxConns)
		go func() {
			defer cancel()
			nc.SetDeadline(time.Now().Add(s.opt.HandshakeTimeout))
			writeFrame(ss.bw, msgError, encodeError(codeBusy, fmt.Sprintf("store server busy: %d connections; retry later", s.opt.MaxConns)))
			ss.bw.Flush()
			nc.Close()
		}()
		return
	}
	go ss.run()
}

// Shutdown stops accepting, lets requests in progress finish and be
// answered, closes every connection and then the journals. When ctx ends
// first, the remaining connections are closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	for ss := range s.conns {
		ss.stopIdle()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for ss := range s.conns {
			ss.cancel()
			ss.nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
	s.jmu.Lock()
	defer s.jmu.Unlock()
	for node, sj := range s.journals {
		if cerr := sj.j.Close(); cerr != nil {
			s.opt.Errorf("close journal of node %q: %v", node, cerr)
		}
		delete(s.journals, node)
	}
	return err
}

func (s *Server) isShutdown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

// openJournal returns the node's shared journal, opening it on first use.
func (s *Server) openJournal(ctx context.Context, node string) (*sharedJournal, error) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if sj, ok := s.journals[node]; ok {
		sj.refs++
		return sj, nil
	}
	j, err := s.st.OpenJournal(ctx, node)
	if err != nil {
		return nil, err
	}
	sj := &sharedJournal{node: node, j: j, refs: 1}
	s.journals[node] = sj
	return sj, nil
}

func (s *Server) releaseJournal(node string) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	sj, ok := s.journals[node]
	if !ok {
		return
	}
	if sj.refs--; sj.refs > 0 {
		return
	}
	delete(s.journals, node)
	// Wait for a write in progress by a session that is gone.
	sj.mu.Lock()
	defer sj.mu.Unlock()
	if err := sj.j.Close(); err != nil {
		s.opt.Errorf("close journal of node %q: %v", node, err)
	}
}

func (s *Server) journal(node string) *sharedJournal {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	return s.journals[node]
}

// session is one client connection.
type session struct {
	srv    *Server
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	ctx    context.Context
	cancel context.CancelFunc
	id     Identity
	client string

	// stateMu guards idle and stopping: Shutdown interrupts an idle
	// session's wait for a request, and lets a busy one finish.
	stateMu  sync.Mutex
	idle     bool
	stopping bool

	opened   map[string]bool // journals this session opened
	requests int64
	buf      []byte
}

func (ss *session) stopIdle() {
	ss.stateMu.Lock()
	defer ss.stateMu.Unlock()
	ss.stopping = true
	if ss.idle {
		ss.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// setIdle marks the session waiting for a request (true: with the idle
// deadline) or serving one; it reports false when the session must end.
func (ss *session) setIdle(idle bool) bool {
	ss.stateMu.Lock()
	defer ss.stateMu.Unlock()
	if idle && !ss.stopping {
		ss.nc.SetReadDeadline(time.Now().Add(ss.srv.opt.IdleTimeout))
	}
	ss.idle = idle
	return !ss.stopping
}

func (ss *session) run() {
	s := ss.srv
	remote := ss.nc.RemoteAddr().String()
	start := time.Now()
	var endErr error
	defer func() {
		if p := recover(); p != nil {
			endErr = fmt.Errorf("panic: %v", p)
			s.opt.Errorf("connection %s (%s): panic serving a request: %v\n%s", remote, ss.id, p, debug.Stack())
		}
		ss.cancel()
		ss.nc.Close()
		for node := range ss.opened {
			s.releaseJournal(node)
		}
		s.mu.Lock()
		delete(s.conns, ss)
		s.mu.Unlock()
		if ss.id.Label != "" {
			how := "closed"
			if endErr != nil {
				how = "closed: " + endErr.Error()
			}
			s.opt.Infof("connection %s (%s, %s) %s after %d requests in %s", remote, ss.id, ss.client, how, ss.requests, time.Since(start).Round(time.Millisecond))
		}
		s.connWG.Done()
	}()
	if err := ss.handshake(); err != nil {
		s.opt.Errorf("connection %s refused: %v", remote, err)
		return
	}
	s.opt.Infof("connection %s opened: %s, client %s", remote, ss.id, ss.client)
	endErr = ss.loop()
}

func (ss *session) handshake() error {
	s := ss.srv
	ss.nc.SetDeadline(time.Now().Add(s.opt.HandshakeTimeout))
	_, p, err := readFrame(ss.br, func(t byte) int {
		if t == msgHello {
			return MaxHandshakeFrame
		}
		return 0
	}, nil)
	if err != nil {
		if errors.Is(err, errUnknownType) || errors.Is(err, errFrameTooLarge) {
			ss.fail(codeBadRequest, "expected a hello frame of at most 4 KiB: this is a store server (backup-cli server)")
		}
		return fmt.Errorf("handshake: %w", err)
	}
	h, err := decodeHello(p)
	if err != nil {
		ss.fail(codeBadRequest, err.Error())
		return fmt.Errorf("handshake: %w", err)
	}
	if h.Version != ProtocolVersion {
		msg := fmt.Sprintf("protocol version %d is not supported: this store server speaks version %d; use a backup-cli and plugin of the same release as the server", h.Version, ProtocolVersion)
		ss.fail(codeBadVersion, msg)
		return errors.New(msg)
	}
	ss.client = h.Client
	if s.open {
		ss.id = anyone
	} else {
		id, ok := s.auth.Load().Lookup(h.Token)
		if !ok {
			ss.fail(codeDenied, "the store server does not know this token: check --token/--token-file (or backup.lock) against the server's auth file")
			return fmt.Errorf("unknown token from client %q", h.Client)
		}
		ss.id = id
	}
	ok := helloOK{Version: ProtocolVersion, Admin: ss.id.Admin, Label: ss.id.Label, Nodes: ss.id.Nodes}
	if err := writeFrame(ss.bw, msgHelloOK, ok.encode()); err != nil {
		return err
	}
	if err := ss.bw.Flush(); err != nil {
		return err
	}
	ss.nc.SetDeadline(time.Time{})
	return nil
}

// fail sends a final error frame, best effort (the connection closes next).
func (ss *session) fail(code byte, msg string) {
	ss.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	writeFrame(ss.bw, msgError, encodeError(code, msg))
	ss.bw.Flush()
}

// wireErr marks an error of the connection itself: the session ends.
type wireErr struct{ err error }

func (e wireErr) Error() string { return e.err.Error() }
func (e wireErr) Unwrap() error { return e.err }

func (ss *session) progress() { ss.nc.SetReadDeadline(time.Now().Add(ss.srv.opt.IOTimeout)) }

func (ss *session) loop() error {
	s := ss.srv
	for {
		if !ss.setIdle(true) {
			return nil
		}
		typ, n, err := readHeader(ss.br)
		running := ss.setIdle(false)
		if err != nil {
			if !running || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		ss.progress()
		limit := frameLimit(typ)
		isRequest := typ >= 0x10 && typ < 0x40
		if int64(n) > int64(max(limit, MaxFrame)) {
			ss.fail(codeBadRequest, fmt.Sprintf("%s frame of %d bytes exceeds the %d-byte limit", msgName(typ), n, max(limit, MaxFrame)))
			return fmt.Errorf("%s frame of %d bytes refused", msgName(typ), n)
		}
		if limit == 0 || !isRequest {
			// Skip the payload without keeping it; the connection stays
			// usable.
			if _, err := io.CopyN(io.Discard, ss.br, int64(n)); err != nil {
				return err
			}
			err := badRequest("unknown request type %s", msgName(typ))
			s.opt.Errorf("connection %s (%s): %v", ss.nc.RemoteAddr(), ss.id, err)
			if err := ss.reply(err); err != nil {
				return err
			}
			continue
		}
		ss.buf, err = readPayload(ss.br, int(n), ss.buf, ss.progress)
		if err != nil {
			return err
		}
		ss.requests++
		ss.nc.SetWriteDeadline(time.Now().Add(s.opt.IOTimeout))
		err = ss.handle(typ, ss.buf)
		if cap(ss.buf) > 1<<20 {
			ss.buf = nil
		}
		var we wireErr
		if errors.As(err, &we) {
			return we.err
		}
		if err != nil {
			s.opt.Errorf("connection %s (%s): %s: %v", ss.nc.RemoteAddr(), ss.id, msgName(typ), err)
		}
		if err := ss.reply(err); err != nil {
			return err
		}
	}
}

// reply sends the final frame of a request: Error for err, else nothing
// (handlers send their OK themselves), and flushes.
func (ss *session) reply(err error) error {
	if err != nil {
		if werr := writeFrame(ss.bw, msgError, encodeError(codeOf(err), err.Error())); werr != nil {
			return werr
		}
	}
	return ss.bw.Flush()
}

// send writes a stream or OK frame.
func (ss *session) send(typ byte, p []byte) error {
	ss.nc.SetWriteDeadline(time.Now().Add(ss.srv.opt.IOTimeout))
	if err := writeFrame(ss.bw, typ, p); err != nil {
		return wireErr{err}
	}
	return nil
}

func (ss *session) ok(p []byte) error { return ss.send(msgOK, p) }

func (ss *session) handle(typ byte, p []byte) error {
	d := &dec{b: p}
	switch typ {
	case msgPut:
		return ss.put(d)
	case msgGet:
		return ss.get(d)
	case msgStat:
		return ss.stat(d)
	case msgList:
		return ss.list(d)
	case msgDelete:
		return ss.delete(d)
	case msgMissing:
		return ss.missing(d)
	case msgPutBodies:
		return ss.putBodies(d)
	case msgReadBodies:
		return ss.readBodies(d)
	case msgJOpen:
		return ss.jopen(d)
	case msgJAppend, msgJReplace:
		return ss.jwrite(d, typ == msgJReplace)
	case msgJRecords, msgJRead:
		return ss.jrecords(d, typ == msgJRead)
	case msgJTrim:
		return ss.jtrim(d)
	case msgJClose:
		return ss.jclose(d)
	}
	return badRequest("unknown request type %s", msgName(typ))
}

func (ss *session) be() backend.Backend { return ss.srv.st.Objects() }

// packs is the chunk layer the server serves its node clients from: the
// packs of its own store.
func (ss *session) packs() (*store.Packs, error) { return ss.srv.st.Packs("serve chunks") }

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
	encodeInfo(&e, in)
	return ss.ok(e.b)
}

func encodeInfo(e *enc, in backend.Info) {
	e.str(in.Name)
	e.i64(in.Size)
	e.time(in.ModTime)
}

func decodeInfo(d *dec) backend.Info {
	return backend.Info{Name: d.str(1024), Size: d.i64(), ModTime: d.time()}
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
		encodeInfo(&page, in)
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

func (ss *session) missing(d *dec) error {
	ids := d.ids()
	if err := d.done(); err != nil {
		return err
	}
	packs, err := ss.packs()
	if err != nil {
		return err
	}
	miss, err := packs.Missing(ss.ctx, ids)
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
	packs, err := ss.packs()
	if err != nil {
		return err
	}
	added, err := packs.PutBodies(ss.ctx, bodies)
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
	packs, err := ss.packs()
	if err != nil {
		return err
	}
	var e enc
	send := func(b store.ChunkBody) error {
		e.b = e.b[:0]
		e.body(b)
		return ss.send(msgBody, e.b)
	}
	// One worker: the bodies go out on this one connection, in pack order.
	_, err = packs.ReadBodies(ss.ctx, nil, ids, 1, false, func() (func(store.ChunkBody) error, func() error) { return send, nil })
	if err != nil {
		return err
	}
	return ss.ok(nil)
}

func (ss *session) node(d *dec, op string) (string, error) {
	node := d.str(256)
	if d.err != nil {
		return "", d.err
	}
	if err := manifest.ValidNodeName(node); err != nil {
		return "", badRequest("%s: %v", op, err)
	}
	if !ss.id.hasNode(node) {
		return "", denied("%s of node %q: denied to %s: not one of its nodes", op, node, ss.id)
	}
	return node, nil
}

func encodeState(e *enc, j store.Journal) {
	last, ok := j.Last()
	e.u64(j.NextSeq())
	e.i64(j.Size())
	e.i64(j.Recovered())
	e.bool(ok)
	if ok {
		e.record(last)
	}
}

func (ss *session) jopen(d *dec) error {
	node, err := ss.node(d, "open journal")
	if err != nil {
		return err
	}
	if err := d.done(); err != nil {
		return err
	}
	var sj *sharedJournal
	if ss.opened[node] {
		sj = ss.srv.journal(node)
	} else {
		if sj, err = ss.srv.openJournal(ss.ctx, node); err != nil {
			return err
		}
		ss.opened[node] = true
	}
	var e enc
	sj.mu.Lock()
	encodeState(&e, sj.j)
	sj.mu.Unlock()
	return ss.ok(e.b)
}

// opened returns the session's open journal of node.
func (ss *session) openedJournal(node, op string) (*sharedJournal, error) {
	if !ss.opened[node] {
		return nil, badRequest("%s: the journal of node %q is not open on this connection", op, node)
	}
	sj := ss.srv.journal(node)
	if sj == nil {
		return nil, fmt.Errorf("%s: journal of node %q: not open on the server", op, node)
	}
	return sj, nil
}

// jwrite appends (or replaces) a record if the server's journal is where
// the client expects it. A retry after a lost acknowledgement finds the
// record already stored and is answered with it: never stored twice.
func (ss *session) jwrite(d *dec, replace bool) error {
	op := "journal append"
	if replace {
		op = "journal replace"
	}
	node, err := ss.node(d, op)
	if err != nil {
		return err
	}
	expected := d.u64()
	r := d.record()
	if err := d.done(); err != nil {
		return err
	}
	sj, err := ss.openedJournal(node, op)
	if err != nil {
		return err
	}
	sj.mu.Lock()
	defer sj.mu.Unlock()
	next := sj.j.NextSeq()
	var stored journal.Record
	switch {
	case next == expected:
		if replace {
			stored, err = sj.j.Replace(r)
		} else {
			stored, err = sj.j.Append(r)
		}
		if err != nil {
			return err
		}
		if ss.srv.dropAck != nil && ss.srv.dropAck() {
			return wireErr{errors.New("test: acknowledgement dropped")}
		}
	case next == expected+1 && sameRecord(sj.j, expected, r):
		stored, _ = sj.j.Last() // the acknowledgement was lost: stored once
	default:
		last, _ := sj.j.Last()
		return &Error{Code: codeConflict, Msg: fmt.Sprintf("%s of node %q version %d: the client expected next seq %d, the server's journal is at next seq %d (last record seq %d, version %d): another writer, or a change the server lost; restart the plugin", op, node, r.Version, expected, next, last.Seq, last.Version)}
	}
	var e enc
	e.u64(stored.Seq)
	e.time(stored.Time)
	e.u64(sj.j.NextSeq())
	e.i64(sj.j.Size())
	return ss.ok(e.b)
}

func sameRecord(j store.Journal, seq uint64, r journal.Record) bool {
	last, ok := j.Last()
	return ok && last.Seq == seq && last.Version == r.Version && slices.Equal(last.Statements, r.Statements)
}

func (ss *session) jrecords(d *dec, unopened bool) error {
	op := "journal records"
	if unopened {
		op = "journal read"
	}
	node, err := ss.node(d, op)
	if err != nil {
		return err
	}
	after := d.u64()
	if err := d.done(); err != nil {
		return err
	}
	var e enc
	fn := func(r journal.Record) error {
		e.b = e.b[:0]
		e.record(r)
		return ss.send(msgRecord, e.b)
	}
	if unopened {
		err = ss.srv.st.ReadJournal(ss.ctx, node, after, fn)
	} else {
		var sj *sharedJournal
		if sj, err = ss.openedJournal(node, op); err != nil {
			return err
		}
		err = sj.j.Records(after, fn)
	}
	if err != nil {
		return err
	}
	return ss.ok(nil)
}

func (ss *session) jtrim(d *dec) error {
	node, err := ss.node(d, "journal trim")
	if err != nil {
		return err
	}
	upto := d.u64()
	if err := d.done(); err != nil {
		return err
	}
	sj, err := ss.openedJournal(node, "journal trim")
	if err != nil {
		return err
	}
	m, err := ss.srv.st.LatestManifest(ss.ctx, node)
	if err != nil {
		return fmt.Errorf("journal trim of node %q: %w", node, err)
	}
	if upto > m.JournalSeq {
		return &Error{Code: codeConflict, Msg: fmt.Sprintf("journal trim of node %q to seq %d refused: the newest manifest (%d) covers records up to seq %d only", node, upto, m.Seq, m.JournalSeq)}
	}
	if err := sj.j.Trim(upto); err != nil {
		return err
	}
	var e enc
	e.i64(sj.j.Size())
	return ss.ok(e.b)
}

func (ss *session) jclose(d *dec) error {
	node, err := ss.node(d, "journal close")
	if err != nil {
		return err
	}
	if err := d.done(); err != nil {
		return err
	}
	if ss.opened[node] {
		delete(ss.opened, node)
		ss.srv.releaseJournal(node)
	}
	return ss.ok(nil)
}
