package history

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/packs"
)

// gc --exclusive: the whole store's garbage in one run, with no grace
// period, when nothing writes.
//
// Why no grace period is needed: the two phases of gc (store/packs gc.go)
// exist because a writer may have found a chunk stored and be about to
// commit a manifest naming it while gc decides it is garbage. Every
// manifest is committed by a writer that holds its node's lease (a Node's
// seal and compaction, and Init), and a writer commits only while its lease
// is unexpired (store.Writer.Fence with LeaseHolder.Check). GCExclusive
// takes every node's lease before it marks: a writer that held one is
// gone (its lease expired, or its process is dead), and it refuses if any
// is live. No manifest can then be committed from before the final mark
// until the run ends, so a chunk unreferenced at the mark stays
// unreferenced and is deleted at once.
//
// What still guards:
//   - A live lease is never broken: the run refuses, naming the holders.
//   - A writer whose lease expired without it noticing (stalled, store
//     unreachable) stops at its commit: Check counts five sixths of the
//     lifetime since its last refresh began, while the lease is taken
//     over only after the whole lifetime (clock skew between hosts must
//     stay below a sixth of it, ten seconds).
//   - A node created during the run has no lease the run holds. Its Init
//     takes its lease (so a node being initialised when the run starts
//     makes it refuse), and the run lists the nodes again after it wrote
//     the condemned record and before it deletes anything: a node it does
//     not hold stops the run with nothing deleted. A node created after
//     that list starts its writer after the record exists, and a writer
//     never reuses a condemned copy (it stores the chunk again).
//   - The leases are refreshed during the run; one lost (somebody forced
//     unlock) stops it.
//   - The gc lock still keeps two gc runs apart.

// LeasesHeldError is gc --exclusive's refusal: live writers hold these
// nodes' leases, and a live lease is never broken.
type LeasesHeldError struct {
	Held []store.Lease
}

// ErrLeasesHeld is wrapped by LeasesHeldError, for errors.Is.
var ErrLeasesHeld = errors.New("nodes are being written")

func (e *LeasesHeldError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gc --exclusive: %d node(s) have a live writer: ", len(e.Held))
	for i, l := range e.Held {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "node %q held by %s (host %s, pid %d), lease last refreshed %s, expires %s", l.Node, l.Owner, l.Host, l.PID,
			l.Acquired.UTC().Format(time.RFC3339), l.Expires.UTC().Format(time.RFC3339))
	}
	b.WriteString(". Nothing was changed. Stop those writers (the plugin: stop lightningd) and run gc --exclusive again, " +
		"or run gc without --exclusive, which works while nodes write; backup-cli unlock is only for writers that are dead")
	return b.String()
}

// Unwrap lets errors.Is find ErrLeasesHeld.
func (e *LeasesHeldError) Unwrap() error { return ErrLeasesHeld }

// GCExclusive reclaims every chunk no restore point needs in one run, with
// no grace period: it holds every node's lease while it runs (see the top
// of this file), refusing with a LeasesHeldError if any node's writer is
// live, and releases them at the end, on failure and on cancellation
// alike. A dry run takes no lease: it reports the same refusal, or what a
// run would delete.
func GCExclusive(ctx context.Context, st *store.Store, opts packs.GCOptions) (packs.GCReport, error) {
	opts.Exclusive = true
	p, err := st.Packs("gc")
	if err != nil {
		return packs.GCReport{}, err
	}
	if opts.DryRun {
		if err := liveHolders(ctx, st); err != nil {
			return packs.GCReport{DryRun: true, Exclusive: true}, err
		}
		return p.GC(ctx, opts, LiveChunks(st))
	}
	held, err := takeAllLeases(ctx, st)
	defer func() {
		for _, k := range held {
			k.release(context.Background())
		}
	}()
	if err != nil {
		return packs.GCReport{Exclusive: true}, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go watchLeases(ctx, held, cancel)
	opts.BeforeDelete = func(ctx context.Context) error {
		nodes, err := st.Nodes(ctx)
		if err != nil {
			return fmt.Errorf("list the nodes again before deleting: %w", err)
		}
		for _, n := range nodes {
			if held[n] == nil {
				return fmt.Errorf("node %q was created during gc --exclusive, which does not hold its lease; run gc --exclusive again", n)
			}
		}
		for n, k := range held {
			if err := k.check(); err != nil {
				return fmt.Errorf("gc --exclusive no longer holds the lease of node %q: %w", n, err)
			}
			// The refresher notices a lease removed (unlock --force)
			// only at its next tick: read each one now.
			l, err := st.Lease(ctx, n)
			if err != nil {
				return fmt.Errorf("read the lease of node %q again before deleting: %w", n, err)
			}
			if l == nil || l.Owner != k.owner {
				return fmt.Errorf("gc --exclusive lost the lease of node %q (removed, or taken by %v): a writer may be running; run gc --exclusive again when it is not", n, l)
			}
		}
		return nil
	}
	rep, err := p.GC(ctx, opts, LiveChunks(st))
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = fmt.Errorf("%w (stopped because: %v)", err, cause)
	}
	return rep, err
}

// takeAllLeases takes the lease of every node, listing the nodes again
// until no new one appears. It returns what it took even on error (the
// caller releases it); a LeasesHeldError names every live holder.
func takeAllLeases(ctx context.Context, st *store.Store) (map[string]*keptLease, error) {
	held := map[string]*keptLease{}
	for try := 0; try < 5; try++ {
		nodes, err := st.Nodes(ctx)
		if err != nil {
			return held, fmt.Errorf("gc --exclusive: list nodes: %w", err)
		}
		var busy []store.Lease
		added := 0
		for _, n := range nodes {
			if held[n] != nil {
				continue
			}
			k, err := keepLease(ctx, st, n)
			if errors.Is(err, store.ErrLeaseHeld) {
				l, lerr := st.Lease(ctx, n)
				if lerr != nil || l == nil {
					return held, fmt.Errorf("gc --exclusive: node %q: %w", n, err)
				}
				busy = append(busy, *l)
				continue
			}
			if err != nil {
				return held, fmt.Errorf("gc --exclusive: take the lease of node %q: %w", n, err)
			}
			held[n] = k
			added++
		}
		if len(busy) > 0 {
			return held, &LeasesHeldError{Held: busy}
		}
		if added == 0 {
			return held, nil
		}
	}
	return held, fmt.Errorf("gc --exclusive: nodes kept appearing while it took their leases (%d held); run it again when no node is being created", len(held))
}

// liveHolders is the refusal a run would meet: a LeasesHeldError naming
// every node whose writer is live, or nil.
func liveHolders(ctx context.Context, st *store.Store) error {
	nodes, err := st.Nodes(ctx)
	if err != nil {
		return fmt.Errorf("gc --exclusive: list nodes: %w", err)
	}
	var busy []store.Lease
	for _, n := range nodes {
		l, err := st.Lease(ctx, n)
		if err != nil {
			return fmt.Errorf("gc --exclusive: %w", err)
		}
		if st.LeaseLive(l) {
			busy = append(busy, *l)
		}
	}
	if len(busy) > 0 {
		return &LeasesHeldError{Held: busy}
	}
	return nil
}

// watchLeases stops the run (cancel) as soon as one of the leases it holds
// is lost or expired.
func watchLeases(ctx context.Context, held map[string]*keptLease, cancel context.CancelCauseFunc) {
	nodes := slices.Sorted(maps.Keys(held))
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, n := range nodes {
				if err := held[n].check(); err != nil {
					cancel(fmt.Errorf("gc --exclusive lost the lease of node %q: %w", n, err))
					return
				}
			}
		}
	}
}
