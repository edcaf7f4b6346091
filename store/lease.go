package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/backend"
)

// One writer per node. The lease is a chain of immutable objects
// nodes/<node>/lease/<generation>: the highest generation is the lease in
// force. Taking or refreshing it is a put-if-absent of the next generation,
// so of two contenders exactly one wins, with nothing but the backend's
// put-if-absent (which every backend has, object stores included).

// ErrLeaseHeld is returned (wrapped) when another live owner holds a
// node's lease.
var ErrLeaseHeld = errors.New("node is held by another writer")

// ErrLeaseLost is returned (wrapped) when a holder finds its lease taken.
var ErrLeaseLost = errors.New("lease lost")

// DefaultLeaseTTL is how long a lease lasts without a refresh. Holders
// refresh it every third of that.
const DefaultLeaseTTL = time.Minute

// Lease is one generation of a node's lease.
type Lease struct {
	Node  string `json:"node"`
	Owner string `json:"owner"`
	Host  string `json:"host"`
	PID   int    `json:"pid"`
	// Start is the owner process's start time (clock ticks after boot,
	// from /proc), so that a reused pid is not taken for the owner.
	Start    uint64    `json:"pid_start,omitempty"`
	Acquired time.Time `json:"acquired"`
	Expires  time.Time `json:"expires"`
	Gen      uint64    `json:"gen"`
}

// String describes the holder for messages.
func (l *Lease) String() string {
	return fmt.Sprintf("owner %s (host %s, pid %d) until %s", l.Owner, l.Host, l.PID, l.Expires.UTC().Format(time.RFC3339))
}

func leasePrefix(node string) string { return nodePrefix(node) + "lease/" }

// Lease returns the lease in force for a node, or nil when there is none.
func (s *Store) Lease(ctx context.Context, node string) (*Lease, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return nil, err
	}
	l, _, err := currentLease(ctx, s, node)
	return l, err
}

// currentLease returns the highest generation and every older object name.
func currentLease(ctx context.Context, s *Store, node string) (*Lease, []string, error) {
	var names []string
	err := s.be.List(ctx, leasePrefix(node), func(in backend.Info) error {
		names = append(names, in.Name)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read lease of node %q: %w", node, err)
	}
	if len(names) == 0 {
		return nil, nil, nil
	}
	newest := names[len(names)-1]
	data, err := backend.ReadWhole(ctx, s.be, newest, maxRecordObject)
	if err != nil {
		if errors.Is(err, backend.ErrNotFound) {
			return nil, names, nil // released meanwhile
		}
		return nil, nil, fmt.Errorf("read lease of node %q: %w", node, err)
	}
	var l Lease
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, nil, fmt.Errorf("read lease of node %q: damaged lease object %s: %w", node, newest, err)
	}
	return &l, names[:len(names)-1], nil
}

// LeaseLive reports whether a lease's owner may still be writing, by the
// rule AcquireLease and unlock apply (not expired by the store's clock, and
// on this host its process exists, so lightningd restarting after a crash
// needs no manual step): status reports what a new writer would find, and
// gc --exclusive names such holders and refuses.
func (s *Store) LeaseLive(l *Lease) bool {
	if l == nil || !s.now().Before(l.Expires) {
		return false
	}
	if host, _ := os.Hostname(); l.Host == host && !pidAlive(l.PID, l.Start) {
		return false
	}
	return true
}

// pidAlive reports whether process pid exists and is not a zombie (a
// killed process whose parent has not reaped it yet is dead for us), and,
// when start is known, whether it is the same process (not a reused pid).
func pidAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	state, began, ok := procStat(pid)
	if !ok {
		return true // no /proc: trust kill(2)
	}
	if state == 'Z' || state == 'X' {
		return false
	}
	return start == 0 || began == start
}

// procStat reads a process's state and start time (clock ticks after boot)
// from /proc/<pid>/stat.
func procStat(pid int) (state byte, start uint64, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 || i+2 >= len(data) {
		return 0, 0, false
	}
	fields := strings.Fields(string(data[i+2:]))
	if len(fields) < 20 {
		return 0, 0, false
	}
	start, _ = strconv.ParseUint(fields[19], 10, 64) // field 22 overall
	return fields[0][0], start, true
}

// LeaseHolder is a writer's hold on a node.
type LeaseHolder struct {
	s     *Store
	ttl   time.Duration
	lease Lease
	node  string
	// written is when (this process's monotonic clock) the put of the
	// generation written last began, read by Check while a refresher
	// writes it.
	written atomic.Pointer[time.Time]
}

// AcquireLease takes a node's lease for this process. It fails with
// ErrLeaseHeld, naming the holder, when a live owner has it; a lease that
// expired, or whose owner process on this host is gone, is taken over.
func (s *Store) AcquireLease(ctx context.Context, node string, ttl time.Duration) (*LeaseHolder, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	host, _ := os.Hostname()
	var id [8]byte
	rand.Read(id[:])
	_, started, _ := procStat(os.Getpid())
	h := &LeaseHolder{s: s, ttl: ttl, node: node, lease: Lease{Node: node, Owner: hex.EncodeToString(id[:]), Host: host, PID: os.Getpid(), Start: started}}
	for try := 0; try < 3; try++ {
		cur, old, err := currentLease(ctx, s, node)
		if err != nil {
			return nil, err
		}
		if s.LeaseLive(cur) {
			return nil, fmt.Errorf("node %q: %w: %s; if that writer is dead, run backup-cli unlock --node %s", node, ErrLeaseHeld, cur, node)
		}
		gen := uint64(1)
		if cur != nil {
			gen = cur.Gen + 1
		} else if len(old) > 0 {
			gen = genOf(old[len(old)-1]) + 1
		}
		err = h.put(ctx, gen)
		if errors.Is(err, backend.ErrExists) {
			continue // another contender won this generation: look again
		}
		if err != nil {
			return nil, err
		}
		h.cleanup(ctx, gen)
		return h, nil
	}
	return nil, fmt.Errorf("node %q: %w: lost the race for the lease three times", node, ErrLeaseHeld)
}

func genOf(name string) uint64 {
	g, _ := strconv.ParseUint(name[strings.LastIndexByte(name, '/')+1:], 10, 64)
	return g
}

func (h *LeaseHolder) put(ctx context.Context, gen uint64) error {
	l := h.lease
	l.Gen = gen
	l.Acquired = h.s.now().UTC()
	l.Expires = l.Acquired.Add(h.ttl)
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%s%020d", leasePrefix(l.Node), gen)
	began := time.Now()
	if err := h.s.be.PutIfAbsent(ctx, name, data); err != nil {
		return fmt.Errorf("write lease of node %q: %w", l.Node, err)
	}
	h.lease = l
	h.written.Store(&began)
	return nil
}

// cleanup removes generations older than gen.
func (h *LeaseHolder) cleanup(ctx context.Context, gen uint64) {
	h.s.be.List(ctx, leasePrefix(h.lease.Node), func(in backend.Info) error {
		if genOf(in.Name) < gen {
			h.s.be.Delete(ctx, in.Name)
		}
		return nil
	})
}

// ErrLeaseExpired is returned (wrapped) by LeaseHolder.Check when the
// holder's lease ran out without a refresh.
var ErrLeaseExpired = errors.New("lease expired")

// Check says whether the holder may still act on the lease: it fails with
// ErrLeaseExpired once five sixths of the lease's lifetime have passed since
// the holder began writing its newest generation. Writers call it just
// before committing a manifest: once a lease has expired anyone may take it
// (another writer, or gc --exclusive, which deletes every chunk no manifest
// names), so a holder that could not refresh in time must not commit. The
// last sixth covers the commit itself and some clock skew between hosts.
// It counts on this process's monotonic clock, which a jump of the wall
// clock (or the store's injected clock) does not move.
func (h *LeaseHolder) Check() error {
	written := h.written.Load()
	if written == nil {
		return fmt.Errorf("node %q: %w: never written", h.node, ErrLeaseExpired)
	}
	if age := time.Since(*written); age > h.ttl-h.ttl/6 {
		return fmt.Errorf("node %q: %w: last refreshed %s ago, lifetime %s (store unreachable?); another writer or gc --exclusive may hold the node now, so nothing was committed; reopen the node",
			h.node, ErrLeaseExpired, age.Round(time.Second), h.ttl)
	}
	return nil
}

// Lease is the generation this holder wrote last.
func (h *LeaseHolder) Lease() Lease { return h.lease }

// TTL is how long the lease lasts without a refresh.
func (h *LeaseHolder) TTL() time.Duration { return h.ttl }

// Refresh extends the lease. It fails with ErrLeaseLost if another writer
// took it (after it expired): the caller must stop writing.
func (h *LeaseHolder) Refresh(ctx context.Context) error {
	cur, _, err := currentLease(ctx, h.s, h.lease.Node)
	if err != nil {
		return err
	}
	if cur == nil || cur.Owner != h.lease.Owner {
		by := "nobody (it was removed)"
		if cur != nil {
			by = cur.String()
		}
		return fmt.Errorf("node %q: %w: now held by %s", h.lease.Node, ErrLeaseLost, by)
	}
	if err := h.put(ctx, cur.Gen+1); err != nil {
		if errors.Is(err, backend.ErrExists) {
			return fmt.Errorf("node %q: %w to another writer", h.lease.Node, ErrLeaseLost)
		}
		return err
	}
	h.cleanup(ctx, h.lease.Gen)
	return nil
}

// Release gives the lease up, if this holder still has it.
func (h *LeaseHolder) Release(ctx context.Context) error {
	cur, _, err := currentLease(ctx, h.s, h.lease.Node)
	if err != nil || cur == nil || cur.Owner != h.lease.Owner {
		return err
	}
	h.cleanup(ctx, cur.Gen+1)
	return nil
}

// BreakLease removes a node's lease (backup-cli unlock). It refuses a live
// lease unless force is set, and returns the lease it removed (nil if none).
func (s *Store) BreakLease(ctx context.Context, node string, force bool) (*Lease, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return nil, err
	}
	cur, _, err := currentLease(ctx, s, node)
	if err != nil {
		return nil, err
	}
	if s.LeaseLive(cur) && !force {
		return nil, fmt.Errorf("node %q: %w: %s; add --force only if you are sure that writer is gone (two writers for one node corrupt its history)", node, ErrLeaseHeld, cur)
	}
	err = s.be.List(ctx, leasePrefix(node), func(in backend.Info) error {
		return s.be.Delete(ctx, in.Name)
	})
	if err != nil {
		return nil, fmt.Errorf("unlock node %q: %w", node, err)
	}
	return cur, nil
}

// checkLeaseOwner fails, wrapping ErrLeaseHeld or ErrLeaseExpired, unless
// the node's lease in force is live and owner's: what a request that only
// the node's writer may make (starting its journal) checks, wherever it
// arrives. (A function, not a method: Store keeps under 40 methods.)
func checkLeaseOwner(ctx context.Context, s *Store, node, owner string) error {
	if s.cfg.Encrypted() && s.keyring == nil {
		// A keyless store server cannot read sealed leases: the client
		// checked its lease in its own view before asking.
		return nil
	}
	cur, _, err := currentLease(ctx, s, node)
	if err != nil {
		return err
	}
	switch {
	case cur == nil:
		return fmt.Errorf("node %q: nobody holds its lease, and only its writer may do this: take the lease first", node)
	case cur.Owner != owner:
		return fmt.Errorf("node %q: %w: %s, not the caller (owner %s)", node, ErrLeaseHeld, cur, owner)
	case !s.LeaseLive(cur):
		return fmt.Errorf("node %q: %w: the caller's lease expired at %s; take it again", node, ErrLeaseExpired, cur.Expires.UTC().Format(time.RFC3339))
	}
	return nil
}
