package remote

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
)

// The server's limits on what clients may make it hold: memory for the
// frames being read and served (memBudget), connections before and after
// authentication (Server.start, Server.admit), and the log lines refusals
// cost (refusalLog). docs/remote-protocol.md, "Limits", describes them for
// operators.

// smallFrame is the payload size below which a request frame is read
// without taking from the memory budget: every connection may hold one
// (the bufio buffers are as large), so a well-behaved client's journal
// appends never wait behind another client's big frames.
const smallFrame = 64 << 10

// memBudget bounds the bytes of request frames the server holds at once,
// across every connection, so memory stays bounded whatever the number of
// connections: a frame's cost (frameCost) is taken before its payload is
// read and given back once its request is answered. Waiters are served in
// order, so a big frame is not starved by small ones.
type memBudget struct {
	total int64
	sem   *semaphore.Weighted
}

func newMemBudget(total int64) *memBudget {
	return &memBudget{total: total, sem: semaphore.NewWeighted(total)}
}

// frameCost is what a request frame of n payload bytes makes the server
// hold until it is answered: a put-bodies request's bodies are copied into
// a pack and the pack is built beside them; a journal write's statements
// are copied out of the payload and encoded again for the journal. A cost
// over the whole budget takes the whole budget (the request runs alone).
func (b *memBudget) frameCost(typ byte, n int64) int64 {
	if n < smallFrame {
		return 0
	}
	switch typ {
	case msgPutBodies, msgJAppend, msgJReplace:
		n *= 3
	}
	return min(n, b.total)
}

// acquire takes cost bytes, waiting at most wait; it fails when the wait
// ends or ctx does (the connection is closed or the server stops).
func (b *memBudget) acquire(ctx context.Context, cost int64, wait time.Duration) error {
	if cost <= 0 {
		return nil
	}
	cost = min(cost, b.total)
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return b.sem.Acquire(ctx, cost)
}

// release gives back what acquire took.
func (b *memBudget) release(cost int64) {
	if cost > 0 {
		b.sem.Release(min(cost, b.total))
	}
}

// refusalLog rate-limits the log lines of refused connections: one line
// per key (an address and a reason) per interval, the next one saying how
// many were not logged. A flood of refused connections then costs a line a
// minute per address instead of filling the disk, while a single refusal
// is still logged at once.
type refusalLog struct {
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	seen map[string]*refusals
}

type refusals struct {
	logged time.Time
	missed int
}

// maxRefusalKeys bounds the keys remembered; beyond it, old keys are
// forgotten, and if all are recent, new keys share one entry.
const maxRefusalKeys = 4096

func newRefusalLog(every time.Duration) *refusalLog {
	return &refusalLog{every: every, now: time.Now, seen: map[string]*refusals{}}
}

// note records a refusal of key; it reports whether to log it now and how
// many refusals of key went unlogged before it.
func (r *refusalLog) note(key string) (log bool, missed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	e, ok := r.seen[key]
	if !ok {
		if len(r.seen) >= maxRefusalKeys {
			for k, old := range r.seen {
				if now.Sub(old.logged) >= r.every {
					delete(r.seen, k)
				}
			}
		}
		if len(r.seen) >= maxRefusalKeys {
			key = "(other addresses)"
			if e, ok = r.seen[key]; !ok {
				e = &refusals{}
				r.seen[key] = e
			}
		} else {
			e = &refusals{}
			r.seen[key] = e
		}
		if !ok {
			e.logged = now
			return true, 0
		}
	}
	if now.Sub(e.logged) < r.every {
		e.missed++
		return false, 0
	}
	missed = e.missed
	e.logged, e.missed = now, 0
	return true, missed
}

// hostOf is the address a connection comes from, without its port: the key
// of the per-address limits.
func hostOf(a net.Addr) string {
	s := a.String()
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}

// refuse logs a connection refused before its handshake (rate-limited by
// host and limit), sends it a busy error, best effort, and closes it.
func (s *Server) refuse(nc net.Conn, host, limit, reason string) {
	s.logRefusal(host, limit, fmt.Sprintf("connection from %s refused: %s", nc.RemoteAddr(), reason))
	s.counters.errors[codeBusy].Add(1)
	go func() {
		nc.SetWriteDeadline(time.Now().Add(time.Second))
		w := bufio.NewWriterSize(nc, 512)
		writeFrame(w, msgError, encodeError(codeBusy, "store server busy: "+reason+"; retry later"))
		w.Flush()
		nc.Close()
	}()
}

// logRefusal logs line unless a refusal from host of the same class (a
// limit's name, "handshake") was logged less than a minute ago: then it
// is counted, and the count goes with the next line.
func (s *Server) logRefusal(host, class, line string) {
	if log, missed := s.refusals.note(host + " " + class); log {
		if missed > 0 {
			line += fmt.Sprintf(" (and %d more from %s since the last such line)", missed, host)
		}
		s.opt.Errorf("%s", line)
	}
}
