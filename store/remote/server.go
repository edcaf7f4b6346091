package remote

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clnbackup/backup/store"
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

	// quotas counts what quota tokens use; quotaStop ends its counts.
	quotas    *quotaBook
	quotaStop context.CancelFunc
	quotaCtx  context.Context

	jmu      sync.Mutex
	journals map[string]*sharedJournal

	// dropAck, when set (tests), is asked after each journal write whether
	// to drop the connection instead of acknowledging it.
	dropAck func() bool
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
	go s.quotas.count(s.quotaCtx, s.st, a, s.opt.Errorf)
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
	srv.quotaCtx, srv.quotaStop = context.WithCancel(context.Background())
	srv.quotas = newQuotaBook()
	go srv.quotas.count(srv.quotaCtx, st, auth, opt.Errorf)
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
	s.quotaStop()
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
