package remote

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
)

// serverCounters are a Server's monitoring counters. Every field is an
// atomic updated where the event happens, so counting costs a request a few
// uncontended additions and never a lock; Stats reads them on a scrape.
type serverCounters struct {
	accepted atomic.Int64
	refused  [numRefusals]atomic.Int64
	// requests and errors are indexed by request type and error code (a
	// byte each on the wire).
	requests [256]atomic.Int64
	errors   [256]atomic.Int64
	bytesIn  atomic.Int64
	bytesOut atomic.Int64
}

// The reasons a connection is refused, as Stats names them: the limits'
// flags without dashes, and what went wrong in a failed handshake.
const (
	refusedMaxHandshakes = iota
	refusedMaxHandshakesPerAddr
	refusedMaxConnsPerAddr
	refusedMaxConns
	refusedMaxConnsPerToken
	refusedUnknownToken
	refusedBadVersion
	refusedTLS
	refusedHandshake
	numRefusals
)

// refusalNames are the refusal reasons' names in ServerStats.Refused (a
// metric's label values: a fixed set, so a flood of refusals cannot grow
// the metrics).
var refusalNames = [numRefusals]string{"max-handshakes", "max-handshakes-per-addr", "max-conns-per-addr", "max-conns",
	"max-conns-per-token", "unknown-token", "bad-version", "tls", "handshake"}

// refusalOfLimit maps a limit's flag to its refusal reason.
func refusalOfLimit(limit string) int {
	switch limit {
	case "--max-handshakes":
		return refusedMaxHandshakes
	case "--max-handshakes-per-addr":
		return refusedMaxHandshakesPerAddr
	case "--max-conns-per-addr":
		return refusedMaxConnsPerAddr
	}
	return refusedHandshake
}

// refusalOfHandshake classifies why a connection's handshake failed.
func refusalOfHandshake(ss *session, err error) int {
	var te transportError
	switch {
	case ss.refusedBy >= 0:
		return ss.refusedBy
	case errors.Is(err, errUnknownToken):
		return refusedUnknownToken
	case errors.As(err, &te):
		return refusedTLS
	}
	return refusedHandshake
}

// ServerStats are a server's counters since it started and its connections
// now, for monitoring (backup-cli server --http serves them as Prometheus
// metrics): the counters only grow, so rates come from their differences.
type ServerStats struct {
	// Accepted counts the connections that logged in.
	Accepted int64
	// Refused counts the connections refused, by reason: a limit
	// ("max-handshakes", "max-handshakes-per-addr", "max-conns-per-addr",
	// "max-conns", "max-conns-per-token") or a failed login
	// ("unknown-token", "bad-version", "tls", "handshake": anything
	// else, from a port probe's EOF to a timeout). Every reason is
	// present, with 0 when none happened.
	Refused map[string]int64
	// Requests counts the requests served, by type ("put",
	// "journal-append": the protocol's message names).
	Requests map[string]int64
	// Errors counts the error replies sent, by code ("not-found",
	// "denied", "busy"...), handshake failures included.
	Errors map[string]int64
	// BytesIn and BytesOut count the protocol bytes read from and
	// written to clients (inside TLS, when it is used).
	BytesIn, BytesOut int64
	// Authenticated and Handshaking are the connections open now,
	// logged in or still logging in.
	Authenticated, Handshaking int
}

// Stats returns the server's counters: cheap (no store access), for a
// metrics scrape.
func (s *Server) Stats() ServerStats {
	c := &s.counters
	st := ServerStats{Accepted: c.accepted.Load(), Refused: map[string]int64{}, Requests: map[string]int64{},
		Errors: map[string]int64{}, BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load()}
	for i, name := range refusalNames {
		st.Refused[name] = c.refused[i].Load()
	}
	for typ := range c.requests {
		if n := c.requests[typ].Load(); n > 0 {
			st.Requests[msgName(byte(typ))] = n
		}
	}
	for code := range c.errors {
		if n := c.errors[code].Load(); n > 0 {
			st.Errors[codeName(byte(code))] = n
		}
	}
	s.mu.Lock()
	st.Authenticated, st.Handshaking = s.authed, s.handshaking
	s.mu.Unlock()
	return st
}

// IsAdminToken reports whether token is an admin token of the server's
// auth table in force (reloaded on SIGHUP): backup-cli server --http lets
// admin tokens read its status. A server without auth file has no tokens
// and reports false.
func (s *Server) IsAdminToken(token string) bool {
	if s.open {
		return false
	}
	id, ok := s.auth.Load().Lookup(token)
	return ok && id.Admin
}

// HasAdmin reports whether the table holds an admin token, so that a
// service that admits only admin tokens can refuse to start without one.
func (a *Auth) HasAdmin() bool {
	for _, e := range a.entries {
		if e.id.Admin {
			return true
		}
	}
	return false
}

// codeName names an error code in ServerStats.Errors.
func codeName(code byte) string {
	switch code {
	case codeNotFound:
		return "not-found"
	case codeExists:
		return "exists"
	case codeDenied:
		return "denied"
	case codeBadRequest:
		return "bad-request"
	case codeConflict:
		return "conflict"
	case codeInternal:
		return "internal"
	case codeBadVersion:
		return "bad-version"
	case codeTrimmed:
		return "trimmed"
	case codeChunkMissing:
		return "chunk-missing"
	case codeBadChunk:
		return "bad-chunk"
	case codeBusy:
		return "busy"
	case codeCorrupt:
		return "corrupt"
	case codeRange:
		return "range"
	}
	return "other"
}

// countingConn counts the bytes a session reads and writes into the
// server's counters; the session's buffers sit on top of it, so it adds
// one atomic addition per 64 KiB buffer fill or flush.
type countingConn struct {
	net.Conn
	in, out *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

var _ io.ReadWriter = countingConn{}
