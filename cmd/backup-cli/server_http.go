package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/monitor"
	"github.com/clnbackup/backup/store/remote"
)

// statusHTTP is the server's --http listener and its handler, set up
// before the store is served so that a bad flag fails at start.
type statusHTTP struct {
	l   net.Listener
	tls *tls.Config
	// authorize is nil on a loopback-only address without --http-auth.
	authorize func(string) bool
	// adminTokens is set when the --auth file's admin tokens are checked:
	// they need the running server, which is made later.
	adminTokens bool
	// authFile and tokens are the --http-auth file and its tokens in
	// force (reloaded on SIGHUP).
	authFile string
	tokens   atomic.Pointer[monitor.TokenFile]
	srv      *http.Server
}

// listenStatusHTTP checks --http's access rule and listens: a token is
// required (an --http-auth file's, or else an admin token of --auth)
// unless the address is loopback-only, and a non-loopback address with
// neither is refused, as the page would show every node's state to anyone.
func listenStatusHTTP(o *serverOpts, auth *remote.Auth, tlsCfg *tls.Config, errorf func(string, ...any)) (*statusHTTP, error) {
	if o.httpAddr == "" {
		if o.httpAuth != "" {
			return nil, errors.New("--http-auth is for the status page: give --http ADDR too")
		}
		return nil, nil
	}
	if o.httpStale <= 0 {
		return nil, fmt.Errorf("--http-stale %s: give a positive duration (e.g. 15m)", o.httpStale)
	}
	h := &statusHTTP{}
	if o.httpAuth != "" {
		tf, err := monitor.LoadTokens(o.httpAuth)
		if err != nil {
			return nil, err
		}
		h.authFile = o.httpAuth
		h.tokens.Store(tf)
		h.authorize = func(tok string) bool { return h.tokens.Load().Allows(tok) }
	}
	l, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return nil, fmt.Errorf("--http: listen on %s: %w", o.httpAddr, err)
	}
	if h.authorize == nil && !loopbackOnly(l.Addr()) {
		if auth == nil || !auth.HasAdmin() {
			l.Close()
			return nil, fmt.Errorf("--http %s is reachable from other machines and no token would be asked for: give --http-auth FILE (one token a line, chmod 600), or an --auth file with an admin token (backup-cli server add-token --admin), or listen on 127.0.0.1", o.httpAddr)
		}
		h.adminTokens = true
	}
	if tlsCfg != nil {
		h.tls = tlsCfg.Clone()
	} else if !loopbackOnly(l.Addr()) {
		errorf("warning: the status page on %s is plain HTTP: its bearer tokens and the nodes' state cross the network in clear; use TLS (--tls-self-signed also makes --http speak HTTPS) or a tunnel", l.Addr())
	}
	h.l = l
	return h, nil
}

// serve serves the status page of st and srv's counters until shutdown.
func (h *statusHTTP) serve(st *store.Store, srv *remote.Server, stale time.Duration, infof, errorf func(string, ...any)) {
	if h.adminTokens {
		h.authorize = srv.IsAdminToken
	}
	handler := monitor.New(monitor.Options{Store: st, Stats: srv.Stats, Stale: stale, Authorize: h.authorize, Errorf: errorf})
	h.srv = &http.Server{Handler: handler, TLSConfig: h.tls, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
		// Its own errors (a failed TLS handshake) go to the server's log,
		// in its format.
		ErrorLog: log.New(logWriter(func(line string) { errorf("--http: %s", strings.TrimSpace(line)) }), "", 0)}
	scheme, who := "http", "anyone on this machine"
	if h.tls != nil {
		scheme = "https"
	}
	switch {
	case h.adminTokens:
		who = "admin tokens of the auth file"
	case h.authorize != nil:
		who = "tokens of the --http-auth file"
	}
	infof("status page on %s://%s/ and metrics on /metrics (read by %s)", scheme, h.l.Addr(), who)
	go func() {
		var err error
		if h.tls != nil {
			err = h.srv.ServeTLS(h.l, "", "")
		} else {
			err = h.srv.Serve(h.l)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			errorf("--http on %s stopped: %v; the store server goes on serving", h.l.Addr(), err)
		}
	}()
}

// reload reads the --http-auth file again (SIGHUP); a file that fails to
// load leaves the tokens in use unchanged.
func (h *statusHTTP) reload(infof, errorf func(string, ...any)) {
	if h == nil || h.authFile == "" {
		return
	}
	tf, err := monitor.LoadTokens(h.authFile)
	if err != nil {
		errorf("SIGHUP: %v; keeping the status page's tokens in use", err)
		return
	}
	h.tokens.Store(tf)
	infof("reloaded %s: the status page takes its tokens", h.authFile)
}

// logWriter passes each write (a log line) to a logger.
type logWriter func(string)

func (w logWriter) Write(p []byte) (int, error) {
	w(string(p))
	return len(p), nil
}

// shutdown stops the status page, letting scrapes in progress finish.
func (h *statusHTTP) shutdown(ctx context.Context) {
	if h == nil || h.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	h.srv.Shutdown(ctx)
}
