package remote

import (
	"bufio"
	"context"
	"errors"
	"maps"
	"net"
	"strings"
	"testing"
	"time"
)

// dialRawFrom is dialRaw from a local address of the loopback network
// (127.0.0.2, ...), so a test plays clients on different addresses.
func dialRawFrom(t *testing.T, addr, local string) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc), bw: bufio.NewWriter(nc)}
}

// TestMemBudgetCost: what a frame costs against the budget: nothing for a
// small one, three times its size for the requests whose bytes are copied
// (put-bodies, journal writes), never more than the whole budget.
func TestMemBudgetCost(t *testing.T) {
	t.Parallel()
	b := newMemBudget(100 << 20)
	tests := []struct {
		typ  byte
		n    int64
		want int64
	}{
		{msgJAppend, 200, 0},
		{msgJAppend, smallFrame - 1, 0},
		{msgJAppend, smallFrame, 3 * smallFrame},
		{msgJReplace, 1 << 20, 3 << 20},
		{msgPutBodies, 8 << 20, 24 << 20},
		{msgMissing, 1 << 20, 1 << 20},
		{msgData, 4 << 20, 4 << 20},
		{msgPutBodies, MaxRecordFrame, 100 << 20},
	}
	for _, tc := range tests {
		if got := b.frameCost(tc.typ, tc.n); got != tc.want {
			t.Errorf("frameCost(%s, %d) = %d, want %d", msgName(tc.typ), tc.n, got, tc.want)
		}
	}
}

// TestMemBudgetWaits: an acquire that does not fit waits until another
// releases (in order), gives up after its wait or when its context ends,
// and a cost over the whole budget takes the whole budget.
func TestMemBudgetWaits(t *testing.T) {
	t.Parallel()
	b := newMemBudget(10)
	if err := b.acquire(ctx, 6, time.Second); err != nil {
		t.Fatal(err)
	}
	// Does not fit: times out.
	if err := b.acquire(ctx, 6, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire over the budget: %v, want a timeout", err)
	}
	// Its context ends.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.acquire(cctx, 6, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire with a cancelled context: %v", err)
	}
	// Waits, then gets it once the first is released.
	got := make(chan error, 1)
	go func() { got <- b.acquire(ctx, 6, time.Minute) }()
	select {
	case err := <-got:
		t.Fatalf("acquire did not wait: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	b.release(6)
	if err := <-got; err != nil {
		t.Fatalf("acquire after a release: %v", err)
	}
	b.release(6)
	// Over the whole budget: takes all of it, and gives all back.
	if err := b.acquire(ctx, 1000, time.Second); err != nil {
		t.Fatalf("acquire over the total: %v", err)
	}
	if err := b.acquire(ctx, 1, 20*time.Millisecond); err == nil {
		t.Fatal("budget not all taken by a cost over the total")
	}
	b.release(1000)
	if err := b.acquire(ctx, 10, time.Second); err != nil {
		t.Fatalf("budget not given back: %v", err)
	}
}

// TestRefusalLog: one line per key per interval, the next saying how many
// were not logged; keys beyond the table share one entry.
func TestRefusalLog(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	r := newRefusalLog(time.Minute)
	r.now = func() time.Time { return now }
	type step struct {
		after  time.Duration
		key    string
		log    bool
		missed int
	}
	steps := []step{
		{0, "a", true, 0},
		{time.Second, "a", false, 0},
		{time.Second, "a", false, 0},
		{0, "b", true, 0},
		{time.Minute, "a", true, 2},
		{time.Second, "a", false, 0},
		{time.Minute, "a", true, 1},
		{time.Minute, "b", true, 0},
	}
	for i, s := range steps {
		now = now.Add(s.after)
		log, missed := r.note(s.key)
		if log != s.log || missed != s.missed {
			t.Fatalf("step %d (%q): log %v missed %d, want %v %d", i, s.key, log, missed, s.log, s.missed)
		}
	}
	for i := range maxRefusalKeys + 10 {
		r.note(strings.Repeat("k", i%7) + string(rune('0'+i%10)) + time.Duration(i).String())
	}
	if n := len(r.seen); n > maxRefusalKeys+1 {
		t.Fatalf("%d keys remembered, want at most %d", n, maxRefusalKeys+1)
	}
}

// TestIdentityCovers: a session goes on after a reload only if its token
// still allows all it did.
func TestIdentityCovers(t *testing.T) {
	t.Parallel()
	admin := Identity{Admin: true}
	ab := Identity{Nodes: []string{"a", "b"}}
	a := Identity{Nodes: []string{"a"}}
	tests := []struct {
		now, old Identity
		want     bool
	}{
		{admin, admin, true},
		{admin, ab, true},
		{ab, admin, false},
		{ab, a, true},
		{a, ab, false},
		{ab, ab, true},
	}
	for _, tc := range tests {
		if got := tc.now.covers(tc.old); got != tc.want {
			t.Errorf("%v covers %v: %v, want %v", tc.now, tc.old, got, tc.want)
		}
	}
}

// TestConnLimits: connections logging in are limited per address and in
// all, apart from authenticated ones, so idle sockets from one address do
// not keep a client on another from logging in; one token holds at most
// its share of connections.
func TestConnLimits(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, testAuth(t))
	ts.opt.MaxHandshakesPerAddr = 3
	ts.opt.MaxHandshakes = 5
	ts.opt.MaxConnsPerToken = 2
	ts.opt.MaxConns = 4
	ts.stop()
	ts.start()
	busy := func(c *rawConn, what string) {
		t.Helper()
		c.expectError(what, codeBusy, true)
	}
	handshaking := func() int {
		ts.mu.Lock()
		srv := ts.srv
		ts.mu.Unlock()
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.handshaking
	}
	waitHandshaking := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); handshaking() != want; {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections logging in, want %d", handshaking(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Three idle sockets from 127.0.0.2: the fourth is refused at once.
	var idle []*rawConn
	for range 3 {
		idle = append(idle, dialRawFrom(t, ts.addr, "127.0.0.2"))
	}
	waitHandshaking(3)
	busy(dialRawFrom(t, ts.addr, "127.0.0.2"), "fourth socket logging in from one address")
	// Two more from 127.0.0.3 fill the handshake slots.
	for range 2 {
		idle = append(idle, dialRawFrom(t, ts.addr, "127.0.0.3"))
	}
	waitHandshaking(5)
	busy(dialRawFrom(t, ts.addr, "127.0.0.4"), "socket over --max-handshakes")
	for _, c := range idle {
		c.nc.Close()
	}
	waitHandshaking(0)
	// Logged-in clients take authenticated slots: alice logs in twice;
	// her third is refused.
	dialRawFrom(t, ts.addr, "127.0.0.2").login(tokAlice)
	dialRawFrom(t, ts.addr, "127.0.0.2").login(tokAlice)
	third := dialRawFrom(t, ts.addr, "127.0.0.2")
	third.hello(ProtocolVersion, tokAlice)
	if msg := third.expectError("alice's third connection", codeBusy, true); !strings.Contains(msg, "--max-conns-per-token") {
		t.Fatalf("third connection refused with %q, want the per-token limit named", msg)
	}
	// Bob is not held back by alice's limit; the fourth authenticated
	// connection fills --max-conns.
	dialRawFrom(t, ts.addr, "127.0.0.2").login(tokBob)
	dialRawFrom(t, ts.addr, "127.0.0.2").login(tokBob)
	fifth := dialRawFrom(t, ts.addr, "127.0.0.2")
	fifth.hello(ProtocolVersion, tokAdmin)
	if msg := fifth.expectError("fifth connection", codeBusy, true); !strings.Contains(msg, "--max-conns") {
		t.Fatalf("fifth connection refused with %q", msg)
	}
	// Stats counts each refusal by its reason, the idle sockets that
	// went away as failed handshakes, and the busy replies.
	want := ServerStats{Accepted: 4, Authenticated: 4, Refused: map[string]int64{"max-handshakes": 1, "max-handshakes-per-addr": 1,
		"max-conns-per-addr": 0, "max-conns": 1, "max-conns-per-token": 1, "unknown-token": 0, "bad-version": 0, "tls": 0, "handshake": 5},
		Errors: map[string]int64{"busy": 4}}
	var got ServerStats
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ts.mu.Lock()
		got = ts.srv.Stats()
		ts.mu.Unlock()
		// The refused fifth connection leaves the handshake count when its
		// session ends, just after its refusal is counted.
		if got.Accepted == want.Accepted && got.Authenticated == want.Authenticated && maps.Equal(got.Refused, want.Refused) && maps.Equal(got.Errors, want.Errors) && got.Handshaking == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v, want %+v", got, want)
		}
	}
	if got.BytesIn == 0 || got.BytesOut == 0 || len(got.Requests) != 0 {
		t.Errorf("stats %+v: want bytes both ways, no request", got)
	}
}
