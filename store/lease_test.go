package store

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestLease(t *testing.T) {
	t.Parallel()
	st, dir := newTestStore(t)
	clock := &fakeClock{t: time.Now()}
	st.now = clock.now
	other, err := Open(ctx, "file://"+dir, Options{Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	h, err := st.AcquireLease(ctx, "n1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// A second writer is refused, told who holds the node until when.
	_, err = other.AcquireLease(ctx, "n1", time.Minute)
	if !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), h.Lease().Owner) || !strings.Contains(err.Error(), "until") {
		t.Fatalf("second acquire: %v", err)
	}
	if _, err := other.BreakLease(ctx, "n1", false); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("unlock of a live lease: %v", err)
	}
	// Refreshing keeps it past the first expiry.
	clock.add(40 * time.Second)
	if err := h.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	clock.add(40 * time.Second)
	if _, err := other.AcquireLease(ctx, "n1", time.Minute); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("acquire of a refreshed lease: %v", err)
	}
	// Expired: taken over; the old holder learns it lost the lease.
	clock.add(2 * time.Minute)
	h2, err := other.AcquireLease(ctx, "n1", time.Minute)
	if err != nil {
		t.Fatalf("take over an expired lease: %v", err)
	}
	if err := h.Refresh(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("refresh after takeover: %v", err)
	}
	if err := h2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if l, err := st.Lease(ctx, "n1"); err != nil || l != nil {
		t.Fatalf("lease after release: %v %v", l, err)
	}
	// Force breaks a live lease.
	if _, err := st.AcquireLease(ctx, "n1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if l, err := other.BreakLease(ctx, "n1", true); err != nil || l == nil {
		t.Fatalf("forced unlock: %v %v", l, err)
	}
}

// TestLeaseDeadOwnerSameHost: a lease whose owner process on this host is
// gone is taken over at once, before it expires.
func TestLeaseDeadOwnerSameHost(t *testing.T) {
	t.Parallel()
	st, _ := newTestStore(t)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skip("cannot run true:", err)
	}
	dead := cmd.Process.Pid
	host, _ := os.Hostname()
	l := Lease{Node: "n1", Owner: "crashed", Host: host, PID: dead, Acquired: time.Now(), Expires: time.Now().Add(time.Hour), Gen: 7}
	data, _ := json.Marshal(l)
	if err := st.be.PutIfAbsent(ctx, "nodes/n1/lease/00000000000000000007", data); err != nil {
		t.Fatal(err)
	}
	h, err := st.AcquireLease(ctx, "n1", time.Minute)
	if err != nil {
		t.Fatalf("take over a dead owner's lease: %v", err)
	}
	if h.Lease().Gen != 8 {
		t.Fatalf("generation %d", h.Lease().Gen)
	}
	// Another host's unexpired lease is live: unlock refuses it.
	l.Host, l.Gen, l.Owner = "elsewhere", 9, "remote"
	data, _ = json.Marshal(l)
	st.be.PutIfAbsent(ctx, "nodes/n1/lease/00000000000000000009", data)
	if _, err := st.BreakLease(ctx, "n1", false); !errors.Is(err, ErrLeaseHeld) || !strings.Contains(err.Error(), "elsewhere") {
		t.Fatalf("unlock of another host's live lease: %v", err)
	}
}

// TestPidAliveZombie: a killed process its parent has not reaped yet is dead.
func TestPidAliveZombie(t *testing.T) {
	t.Parallel()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start sleep:", err)
	}
	pid := cmd.Process.Pid
	_, start, _ := procStat(pid)
	if !pidAlive(pid, start) {
		t.Fatal("running process reported dead")
	}
	if pidAlive(pid, start+1) {
		t.Fatal("a different start time (reused pid) reported alive")
	}
	cmd.Process.Kill()
	deadline := time.Now().Add(5 * time.Second)
	for pidAlive(pid, start) {
		if time.Now().After(deadline) {
			t.Fatal("killed, unreaped process still reported alive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Wait()
}

// TestLeaseCheck: a holder may commit while its newest generation is
// younger than five sixths of the lifetime (by the monotonic clock, which
// the store's injected clock does not move), and again after a refresh.
func TestLeaseCheck(t *testing.T) {
	t.Parallel()
	st, _ := newTestStore(t)
	clock := &fakeClock{t: time.Now()}
	st.now = clock.now
	const ttl = 600 * time.Millisecond
	h, err := st.AcquireLease(ctx, "n1", ttl)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		do      func()
		expired bool
	}{
		{"just taken", func() {}, false},
		{"store clock jumps a day", func() { clock.add(24 * time.Hour) }, false},
		{"not refreshed for the lifetime", func() { time.Sleep(ttl) }, true},
		{"refreshed", func() {
			if err := h.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, s := range steps {
		s.do()
		if err := h.Check(); errors.Is(err, ErrLeaseExpired) != s.expired || (err != nil && !s.expired) {
			t.Fatalf("%s: Check() = %v, want expired %v", s.name, err, s.expired)
		}
	}
}
