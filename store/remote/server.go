package remote

import (
	"bufio"
	"context"
	"crypto/sha256"
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
	// MaxConns bounds concurrent authenticated connections (default
	// 256); clients over the limit are refused with a "busy" error and
	// retry. Connections still in their handshake have limits of their
	// own (MaxHandshakes), so unauthenticated sockets cannot take these
	// slots.
	MaxConns int
	// MaxConnsPerToken bounds the authenticated connections of one token
	// (default 32: a node's plugin uses a few), so one token, or a thief
	// of it, cannot hold every slot.
	MaxConnsPerToken int
	// MaxHandshakes bounds the connections accepted but not yet
	// authenticated (default 64); MaxHandshakesPerAddr bounds those from
	// one address (default 8), so idle sockets from one address cannot
	// keep others from logging in.
	MaxHandshakes        int
	MaxHandshakesPerAddr int
	// MaxConnsPerAddr bounds all connections from one address, when set
	// (default 0: no limit; behind Tor or a tunnel every client comes
	// from the same address).
	MaxConnsPerAddr int
	// HandshakeTimeout bounds the time from accept to an authenticated
	// hello (default 5 s).
	HandshakeTimeout time.Duration
	// MaxMemory bounds the bytes of request frames held at once across
	// every connection (default 256 MiB; at least what the largest frame
	// costs is needed for it to run alone): a frame over 64 KiB waits for
	// its share before its payload is read, and is refused as busy after
	// IOTimeout of waiting.
	MaxMemory int64
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
	// Connection counts (under mu): in the handshake (all, by address),
	// authenticated (all, by token), and all by address.
	handshaking int
	hsByAddr    map[string]int
	authed      int
	byToken     map[[sha256.Size]byte]int
	byAddr      map[string]int

	mem      *memBudget
	refusals *refusalLog
	// counters are the monitoring counters (Stats).
	counters serverCounters

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
// server reloads it on SIGHUP). New connections use it; a connection whose
// token is gone from it, or allows less than when it logged in, is closed
// at once (requests in progress are cut short), so revoking a token takes
// effect on reload. A server started without authentication cannot be
// given one.
func (s *Server) SetAuth(a *Auth) error {
	if s.open || a == nil {
		return errors.New("authentication can only be changed on a server started with an auth file, and not removed: restart the server")
	}
	var cut []*session
	var why []string
	s.mu.Lock()
	s.auth.Store(a)
	for ss := range s.conns {
		if !ss.authed {
			continue
		}
		now, ok := a.lookupHash(ss.tokenHash)
		switch {
		case !ok:
			cut, why = append(cut, ss), append(why, "its token was removed from the auth file")
		case !now.covers(ss.id):
			cut, why = append(cut, ss), append(why, fmt.Sprintf("its token now allows only %s", now))
		}
	}
	s.mu.Unlock()
	for i, ss := range cut {
		s.opt.Infof("connection %s (%s) closed: %s", ss.nc.RemoteAddr(), ss.id, why[i])
		ss.cancel()
		ss.nc.Close()
	}
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
	if opt.MaxConnsPerToken <= 0 {
		opt.MaxConnsPerToken = 32
	}
	if opt.MaxHandshakes <= 0 {
		opt.MaxHandshakes = 64
	}
	if opt.MaxHandshakesPerAddr <= 0 {
		opt.MaxHandshakesPerAddr = 8
	}
	if opt.HandshakeTimeout <= 0 {
		opt.HandshakeTimeout = 5 * time.Second
	}
	if opt.MaxMemory <= 0 {
		opt.MaxMemory = DefaultMaxMemory
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
	srv := &Server{st: st, open: auth == nil, opt: opt, listeners: map[net.Listener]bool{}, conns: map[*session]bool{}, journals: map[string]*sharedJournal{},
		hsByAddr: map[string]int{}, byAddr: map[string]int{}, byToken: map[[sha256.Size]byte]int{},
		mem: newMemBudget(opt.MaxMemory), refusals: newRefusalLog(time.Minute)}
	srv.auth.Store(auth)
	srv.quotaCtx, srv.quotaStop = context.WithCancel(context.Background())
	srv.quotas = newQuotaBook()
	go srv.quotas.count(srv.quotaCtx, st, auth, opt.Errorf)
	return srv
}

// DefaultMaxMemory is ServerOptions.MaxMemory's default: room for the
// largest request (a 64 MiB journal record or put-bodies, costed three
// times) and the small ones beside it.
const DefaultMaxMemory = 256 << 20

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

// start serves a new connection unless it would pass a limit on
// connections not yet authenticated (or on one address's connections).
func (s *Server) start(nc net.Conn) {
	ctx, cancel := context.WithCancel(context.Background())
	host := hostOf(nc.RemoteAddr())
	cc := countingConn{Conn: nc, in: &s.counters.bytesIn, out: &s.counters.bytesOut}
	ss := &session{srv: s, nc: nc, host: host, br: bufio.NewReaderSize(cc, 64<<10), bw: bufio.NewWriterSize(cc, 64<<10), ctx: ctx, cancel: cancel,
		opened: map[string]bool{}, refusedBy: -1}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		nc.Close()
		cancel()
		return
	}
	var limit, reason string
	switch {
	case s.handshaking >= s.opt.MaxHandshakes:
		limit, reason = "--max-handshakes", fmt.Sprintf("%d connections are logging in (the --max-handshakes limit)", s.handshaking)
	case s.hsByAddr[host] >= s.opt.MaxHandshakesPerAddr:
		limit, reason = "--max-handshakes-per-addr", fmt.Sprintf("%d connections from %s are logging in (the --max-handshakes-per-addr limit)", s.hsByAddr[host], host)
	case s.opt.MaxConnsPerAddr > 0 && s.byAddr[host] >= s.opt.MaxConnsPerAddr:
		limit, reason = "--max-conns-per-addr", fmt.Sprintf("%d connections from %s (the --max-conns-per-addr limit)", s.byAddr[host], host)
	default:
		s.handshaking++
		s.hsByAddr[host]++
		s.byAddr[host]++
		s.conns[ss] = true
		s.connWG.Add(1)
	}
	s.mu.Unlock()
	if limit != "" {
		cancel()
		s.counters.refused[refusalOfLimit(limit)].Add(1)
		s.refuse(nc, host, limit, reason)
		return
	}
	go ss.run()
}

// admit authenticates a session that sent its hello and counts it among
// the authenticated connections, under the limits on those (all, one
// token's). It holds mu, so SetAuth sees every session either before
// (and it logs in with the new table) or after (and is checked).
func (s *Server) admit(ss *session, token, client string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := anyone
	var hash [sha256.Size]byte
	if !s.open {
		var ok bool
		if id, ok = s.auth.Load().Lookup(token); !ok {
			return &Error{Code: codeDenied, Msg: "the store server does not know this token: check --token/--token-file (or backup.lock) against the server's auth file"}
		}
		hash = sha256.Sum256([]byte(token))
	}
	switch {
	case s.authed >= s.opt.MaxConns:
		ss.refusedBy = refusedMaxConns
		return &Error{Code: codeBusy, Msg: fmt.Sprintf("store server busy: %d connections (the --max-conns limit); retry later", s.authed)}
	case !s.open && s.byToken[hash] >= s.opt.MaxConnsPerToken:
		ss.refusedBy = refusedMaxConnsPerToken
		return &Error{Code: codeBusy, Msg: fmt.Sprintf("store server busy: %d connections with this token (%s, the --max-conns-per-token limit); close other clients using it or retry later", s.byToken[hash], id.Label)}
	}
	s.leaveHandshake(ss.host)
	s.authed++
	s.byToken[hash]++
	s.counters.accepted.Add(1)
	ss.id, ss.tokenHash, ss.authed = id, hash, true
	return nil
}

// leaveHandshake uncounts a connection of host from those logging in;
// the caller holds mu.
func (s *Server) leaveHandshake(host string) {
	s.handshaking--
	if s.hsByAddr[host]--; s.hsByAddr[host] <= 0 {
		delete(s.hsByAddr, host)
	}
}

// forget uncounts a session that ended.
func (s *Server) forget(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, ss)
	if ss.authed {
		s.authed--
		if s.byToken[ss.tokenHash]--; s.byToken[ss.tokenHash] <= 0 {
			delete(s.byToken, ss.tokenHash)
		}
	} else {
		s.leaveHandshake(ss.host)
	}
	if s.byAddr[ss.host]--; s.byAddr[ss.host] <= 0 {
		delete(s.byAddr, ss.host)
	}
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
