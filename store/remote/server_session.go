package remote

import (
	"bufio"
	"context"
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
	}
	return badRequest("unknown request type %s", msgName(typ))
}
