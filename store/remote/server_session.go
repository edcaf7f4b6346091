package remote

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"
)

// session is one client connection.
type session struct {
	srv    *Server
	nc     net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	ctx    context.Context
	cancel context.CancelFunc
	host   string // the remote address without its port
	id     Identity
	client string
	// tokenHash and authed are set (under srv.mu) once the hello is
	// accepted: SetAuth finds the sessions of a revoked token by them.
	tokenHash [sha256.Size]byte
	authed    bool
	// refusedBy is the refusal reason (refused*) of a handshake refused
	// for a limit or a protocol version, -1 otherwise: for Stats.
	refusedBy int

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
		s.forget(ss)
		if ss.id.Label != "" {
			how := "closed"
			if endErr != nil {
				how = "closed: " + endErr.Error()
			}
			s.opt.Infof("connection %s (%s, client %q) %s after %d requests in %s", remote, ss.id, ss.client, how, ss.requests, time.Since(start).Round(time.Millisecond))
		}
		s.connWG.Done()
	}()
	if err := ss.handshake(); err != nil {
		// Rate-limited: anyone may open connections that fail here. Unknown
		// tokens and TLS failures are counted apart from other failures (a
		// port probe's EOF).
		class := "handshake"
		var te transportError
		switch {
		case errors.Is(err, errUnknownToken):
			class = "unknown token"
		case errors.As(err, &te):
			class = te.kind
		}
		s.counters.refused[refusalOfHandshake(ss, err)].Add(1)
		s.logRefusal(ss.host, class, fmt.Sprintf("connection %s refused: %v", remote, err))
		return
	}
	s.opt.Infof("connection %s opened: %s, client %q", remote, ss.id, ss.client)
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
		ss.refusedBy = refusedBadVersion
		ss.fail(codeBadVersion, msg)
		return errors.New(msg)
	}
	ss.client = h.Client
	if err := s.admit(ss, h.Token, h.Client); err != nil {
		var re *Error
		if errors.As(err, &re) {
			ss.fail(re.Code, re.Msg)
			if re.Code == codeDenied {
				return fmt.Errorf("%w from client %q", errUnknownToken, h.Client)
			}
		}
		return fmt.Errorf("client %q: %w", h.Client, err)
	}
	ok := helloOK{Version: ProtocolVersion, Admin: ss.id.Admin, Label: ss.id.Label, Nodes: ss.id.Nodes}
	if err := writeFrame(ss.bw, msgHelloOK, encode(ok)); err != nil {
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
	ss.srv.counters.errors[code].Add(1)
	ss.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	writeFrame(ss.bw, msgError, encodeError(code, msg))
	ss.bw.Flush()
}

// errUnknownToken is wrapped by the handshake's error for a token the auth
// file does not hold.
var errUnknownToken = errors.New("unknown token")

// wireErr marks an error of the connection itself: the session ends.
type wireErr struct{ err error }

func (e wireErr) Error() string { return e.err.Error() }
func (e wireErr) Unwrap() error { return e.err }

func (ss *session) progress() { ss.nc.SetReadDeadline(time.Now().Add(ss.srv.opt.IOTimeout)) }

// loop serves requests until the client leaves, the connection fails or
// the server stops.
func (ss *session) loop() error {
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
		if err := ss.serve(typ, n); err != nil {
			return err
		}
	}
}

// serve reads and answers one request whose header (typ, n payload bytes)
// was read, within the server's memory budget. An error ends the session.
func (ss *session) serve(typ byte, n uint32) error {
	s := ss.srv
	ss.progress()
	limit := frameLimit(typ)
	isRequest := typ >= 0x10 && typ < 0x40
	if int64(n) > int64(max(limit, MaxFrame)) {
		ss.fail(codeBadRequest, fmt.Sprintf("%s frame of %d bytes exceeds the %d-byte limit", msgName(typ), n, max(limit, MaxFrame)))
		return fmt.Errorf("%s frame of %d bytes refused", msgName(typ), n)
	}
	if limit == 0 || !isRequest {
		return ss.skipUnknown(typ, n)
	}
	cost := s.mem.frameCost(typ, int64(n))
	if err := s.mem.acquire(ss.ctx, cost, s.opt.IOTimeout); err != nil {
		return ss.refuseBusy(typ, n)
	}
	ss.progress()
	var err error
	ss.buf, err = readPayload(ss.br, int(n), ss.buf, ss.progress)
	if err != nil {
		s.mem.release(cost)
		return err
	}
	ss.requests++
	s.counters.requests[typ].Add(1)
	ss.nc.SetWriteDeadline(time.Now().Add(s.opt.IOTimeout))
	if typ == msgPut {
		extra, err := ss.holdPutData()
		if err != nil {
			s.mem.release(cost)
			return err
		}
		cost += extra
	}
	err = ss.handle(typ, ss.buf)
	// Only a small buffer is kept for the next request: the budget
	// counts what requests hold, not what idle connections keep.
	if cap(ss.buf) > smallFrame {
		ss.buf = nil
	}
	s.mem.release(cost)
	return ss.answer(typ, err)
}

// skipUnknown skips the payload of a frame that is no request without
// keeping it, and answers a bad request; the connection stays usable.
func (ss *session) skipUnknown(typ byte, n uint32) error {
	if _, err := io.CopyN(io.Discard, ss.br, int64(n)); err != nil {
		return err
	}
	err := badRequest("unknown request type %s", msgName(typ))
	ss.srv.opt.Errorf("connection %s (%s): %v", ss.nc.RemoteAddr(), ss.id, err)
	return ss.reply(err)
}

// refuseBusy answers a request the memory budget could not take: refused
// unread (its payload skipped), the connection stays usable and the
// client retries.
func (ss *session) refuseBusy(typ byte, n uint32) error {
	s := ss.srv
	if ss.ctx.Err() != nil {
		return ss.ctx.Err()
	}
	if _, err := io.CopyN(io.Discard, ss.br, int64(n)); err != nil {
		return err
	}
	s.logRefusal(ss.host, "--max-memory", fmt.Sprintf("connection %s (%s): %s of %d bytes refused: the --max-memory budget (%d bytes) stayed taken for %s", ss.nc.RemoteAddr(), ss.id, msgName(typ), n, s.opt.MaxMemory, s.opt.IOTimeout))
	busy := &Error{Code: codeBusy, Msg: fmt.Sprintf("store server busy: requests in progress hold its --max-memory budget of %d bytes; retry later", s.opt.MaxMemory)}
	return ss.reply(busy)
}

// holdPutData takes the budget for the data frames of the put request in
// ss.buf, which follow it. They cannot be skipped unread here, so a put
// that cannot have it ends the connection; the client retries on a new one.
func (ss *session) holdPutData() (int64, error) {
	s := ss.srv
	extra := s.mem.frameCost(msgData, ss.putSize(ss.buf))
	if err := s.mem.acquire(ss.ctx, extra, s.opt.IOTimeout); err != nil {
		ss.fail(codeBusy, fmt.Sprintf("store server busy: requests in progress hold its --max-memory budget of %d bytes; retry later", s.opt.MaxMemory))
		return 0, fmt.Errorf("put of %d bytes refused: the --max-memory budget stayed taken: %w", extra, err)
	}
	return extra, nil
}

// answer ends a request handled with err: a connection error ends the
// session, any other is logged and sent as the request's error frame.
func (ss *session) answer(typ byte, err error) error {
	var we wireErr
	if errors.As(err, &we) {
		return we.err
	}
	if err != nil {
		ss.srv.opt.Errorf("connection %s (%s): %s: %v", ss.nc.RemoteAddr(), ss.id, msgName(typ), err)
	}
	return ss.reply(err)
}

// reply sends the final frame of a request: Error for err, else nothing
// (handlers send their OK themselves), and flushes.
func (ss *session) reply(err error) error {
	if err != nil {
		code := codeOf(err)
		ss.srv.counters.errors[code].Add(1)
		if werr := writeFrame(ss.bw, msgError, encodeError(code, err.Error())); werr != nil {
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

// handle runs the handler of a request type. Each handler decodes its own
// payload with its message's decoder (messages*.go) and sends its OK
// frame; the error it returns is the request's error frame.
func (ss *session) handle(typ byte, p []byte) error {
	switch typ {
	case msgPut:
		return ss.put(p)
	case msgGet:
		return ss.get(p)
	case msgStat:
		return ss.stat(p)
	case msgList:
		return ss.list(p)
	case msgDelete:
		return ss.delete(p)
	case msgQuota:
		return ss.quota(p)
	case msgMissing:
		return ss.missing(p)
	case msgPutBodies:
		// The longest work a node may ask for: stopped if the client
		// goes away meanwhile.
		defer ss.watchPeer()()
		return ss.putBodies(p)
	case msgReadBodies:
		return ss.readBodies(p)
	case msgJOpen:
		return ss.jopen(p)
	case msgJAppend, msgJReplace:
		return ss.jwrite(p, typ == msgJReplace)
	case msgJRecords, msgJRead:
		return ss.jrecords(p, typ == msgJRead)
	case msgJTrim:
		return ss.jtrim(p)
	case msgJClose:
		return ss.jclose(p)
	case msgJStart:
		return ss.jstart(p)
	}
	return badRequest("unknown request type %s", msgName(typ))
}

// putSize is the size a put request declares (0 if malformed: its handler
// refuses it), bounded by the largest object a put may carry.
func (ss *session) putSize(p []byte) int64 {
	req, err := decodePutRequest(p)
	if err != nil {
		return 0
	}
	return int64(min(req.Size, uint64(ss.srv.opt.MaxObjectSize)))
}

// watchPeer watches the connection while a request runs without reading
// from it, and cancels the session's work if the client closes it (a
// client sends nothing while it waits for its answer). The returned stop
// ends the watch before the session reads again.
func (ss *session) watchPeer() (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := ss.br.Peek(1); err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				ss.cancel()
			}
		}
	}()
	return func() {
		ss.nc.SetReadDeadline(time.Unix(1, 0))
		<-done
		ss.nc.SetReadDeadline(time.Now().Add(ss.srv.opt.IOTimeout))
	}
}
