package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store"
)

// The states of a node's writer, as status reports them.
const (
	// WriterLive: a writer holds the lease and refreshes it.
	WriterLive = "live"
	// WriterExpired: the lease was not refreshed before it expired; the
	// writer stopped (or cannot reach the store) since its expiry.
	WriterExpired = "expired"
	// WriterDead: the lease has not expired yet but its owner process on
	// this host is gone (the next writer takes it over at once).
	WriterDead = "dead"
	// WriterNone: no lease, because the node never had a writer or its
	// writer released the lease when it stopped cleanly.
	WriterNone = "none"
)

// WriterStatus is the state of a node's writer lease, for an operator
// watching many nodes: a writer that stopped refreshing its lease is a
// lightningd (or plugin) that stopped backing up.
type WriterStatus struct {
	// State is WriterLive, WriterExpired, WriterDead or WriterNone.
	State string `json:"state"`
	// Lease is the lease in force (absent with WriterNone).
	Lease *store.Lease `json:"lease,omitempty"`
	// LastRefresh is when the lease was last taken or refreshed.
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	// StaleSince is when the writer stopped being live: the lease's expiry
	// (expired), its last refresh (dead owner); zero when live or none.
	StaleSince time.Time `json:"stale_since,omitzero"`
}

// NodeStatus is one node as `backup-cli status` shows it: whether its
// writer is alive and how far its backup lags behind.
type NodeStatus struct {
	Name   string       `json:"name"`
	Writer WriterStatus `json:"writer"`
	// LastChange is when the node's data last changed, as far as the store
	// knows: the newest journal record's time, else the newest sealed
	// change's, else the newest snapshot's (zero: no restore point).
	LastChange time.Time `json:"last_change,omitzero"`
	// LastChangeFrom says which of the three LastChange comes from:
	// "journal", "sealed change" or "snapshot".
	LastChangeFrom string `json:"last_change_from,omitempty"`
	// NewestVersion is the newest data_version the store holds.
	NewestVersion uint32 `json:"newest_data_version"`
	// Snapshot is when the newest snapshot was taken (the first restore
	// point that has it), and SnapshotVersion its data_version.
	Snapshot        time.Time `json:"snapshot,omitzero"`
	SnapshotVersion uint32    `json:"snapshot_data_version"`
	// Backlog is the journal records not sealed into a restore point yet.
	Backlog JournalSummary `json:"backlog"`
	// RestorePoints is the number of the node's manifests.
	RestorePoints int `json:"restore_points"`
	// LogicalBytes is the size of all its restore points' databases, and
	// AddedBytes what writing them added to the store (list's figures).
	LogicalBytes int64 `json:"logical_bytes"`
	AddedBytes   int64 `json:"added_bytes"`
	// Errors are what could not be read; the rest holds what could.
	Errors []string `json:"errors,omitempty"`
}

// StoreStatus is every node's status and the store's size and free space.
type StoreStatus struct {
	Store string `json:"store"`
	// At is the store's clock when the status was taken: ages are
	// relative to it.
	At    time.Time    `json:"at"`
	Nodes []NodeStatus `json:"nodes"`
	// StoredBytes, JournalFileBytes and Objects are list's figures, known
	// when SizeKnown (a file:// store, or a server with an admin token).
	StoredBytes      int64 `json:"stored_bytes"`
	JournalFileBytes int64 `json:"journal_file_bytes"`
	Objects          int   `json:"objects"`
	SizeKnown        bool  `json:"size_known"`
	// FreeBytes is the space left on the store's file system, known when
	// FreeKnown (a file:// store; a server's disk is not visible).
	FreeBytes uint64 `json:"free_bytes"`
	FreeKnown bool   `json:"free_known"`
	// Unreadable are the nodes with objects that could not be read.
	Unreadable []string `json:"unreadable_nodes,omitempty"`
}

// Status takes the status of every node of the store (node "": all), for
// `backup-cli status`: list's summary of each node (SummarizeStore) plus
// its writer lease, the time of its last change and its snapshot's age.
// Times are judged by the store's clock (store.Options.Now). It reads
// without taking any lease, so it works while the plugins write. Like
// SummarizeStore, a node with an unreadable object is reported with its
// errors and named in Unreadable.
func Status(ctx context.Context, st *store.Store, node string) (StoreStatus, error) {
	if node != "" {
		if _, err := st.Node(ctx, node); err != nil {
			// A misspelt name must not pass for a node without a writer.
			return StoreStatus{}, fmt.Errorf("%w (backup-cli list names the store's nodes)", err)
		}
	}
	sum, err := SummarizeStore(ctx, st, node)
	if err != nil {
		return StoreStatus{}, err
	}
	res := StoreStatus{Store: sum.Store, At: st.Now().UTC(), Nodes: make([]NodeStatus, 0, len(sum.Nodes)),
		StoredBytes: sum.StoredBytes, JournalFileBytes: sum.JournalFileBytes, Objects: sum.Objects, SizeKnown: sum.SizeKnown,
		Unreadable: sum.Unreadable}
	if res.FreeBytes, res.FreeKnown, err = st.FreeBytes(); err != nil {
		return StoreStatus{}, err
	}
	for _, s := range sum.Nodes {
		ns, err := nodeStatus(ctx, st, s)
		if err != nil {
			return StoreStatus{}, err
		}
		res.Nodes = append(res.Nodes, ns)
	}
	return res, nil
}

// nodeStatus adds the writer lease and the times to a node's summary.
func nodeStatus(ctx context.Context, st *store.Store, s NodeSummary) (NodeStatus, error) {
	ns := NodeStatus{Name: s.Name, NewestVersion: s.NewestVersion, Backlog: s.Journal, RestorePoints: len(s.Manifests),
		LogicalBytes: s.LogicalBytes, Errors: s.Errors}
	l, err := st.Lease(ctx, s.Name)
	if err != nil {
		return NodeStatus{}, fmt.Errorf("status of node %q: %w", s.Name, err)
	}
	ns.Writer = writerStatus(st, l)
	for _, m := range s.Manifests {
		ns.AddedBytes += m.AddedBytes
	}
	if n := len(s.Manifests); n > 0 {
		// The newest snapshot was taken when the first restore point
		// that carries it was written: walk back over the seals after it.
		i := n - 1
		for i > 0 && s.Manifests[i].ChangeRecords > 0 && s.Manifests[i-1].SnapshotVersion == s.Manifests[i].SnapshotVersion &&
			s.Manifests[i-1].ChangeRecords <= s.Manifests[i].ChangeRecords {
			i--
		}
		ns.Snapshot, ns.SnapshotVersion = s.Manifests[i].Created, s.Manifests[i].SnapshotVersion
		ns.LastChange, ns.LastChangeFrom = ns.Snapshot, "snapshot"
	}
	switch {
	case s.Journal.Records > 0:
		ns.LastChange, ns.LastChangeFrom = s.Journal.LastTime, "journal"
	case len(s.Manifests) > 0 && s.Manifests[len(s.Manifests)-1].ChangeRecords > 0:
		t, err := lastSealedTime(ctx, st, s.Name, s.Manifests[len(s.Manifests)-1].Seq)
		if err != nil {
			if ctx.Err() != nil {
				return NodeStatus{}, ctx.Err()
			}
			// The snapshot's time stands; say what could not be read.
			ns.Errors = append(ns.Errors, err.Error())
			break
		}
		ns.LastChange, ns.LastChangeFrom = t, "sealed change"
	}
	return ns, nil
}

// writerStatus judges a lease (nil: none) by the rule a new writer applies.
func writerStatus(st *store.Store, l *store.Lease) WriterStatus {
	if l == nil {
		return WriterStatus{State: WriterNone}
	}
	w := WriterStatus{Lease: l, LastRefresh: l.Acquired}
	switch {
	case st.LeaseLive(l):
		w.State = WriterLive
	case !st.Now().Before(l.Expires):
		w.State, w.StaleSince = WriterExpired, l.Expires
	default:
		w.State, w.StaleSince = WriterDead, l.Acquired
	}
	return w
}

// lastSealedTime is the time of the newest record in the last change chunk
// of manifest seq: one chunk read.
func lastSealedTime(ctx context.Context, st *store.Store, node string, seq uint64) (time.Time, error) {
	m, err := st.Manifest(ctx, node, seq)
	if err != nil {
		return time.Time{}, err
	}
	if len(m.Changes) == 0 {
		return time.Time{}, fmt.Errorf("manifest %d of node %q: no sealed change", seq, node)
	}
	c := m.Changes[len(m.Changes)-1]
	l, err := st.Lookup(ctx, []chunker.ID{c.ID})
	if err != nil {
		return time.Time{}, fmt.Errorf("time of the newest sealed change of node %q: %w", node, err)
	}
	recs, err := readChangeChunk(ctx, st, l, c)
	if err != nil {
		return time.Time{}, fmt.Errorf("time of the newest sealed change of node %q (manifest %d): %w", node, seq, err)
	}
	if len(recs) == 0 {
		return time.Time{}, errors.New("empty change chunk")
	}
	return recs[len(recs)-1].Time, nil
}

// Stale returns the nodes whose writer has not been live for longer than
// max before s.At (lease expired, or owner process gone), and the nodes
// with no writer lease at all (never had a writer, or it stopped cleanly):
// the nodes that are not being backed up, for alerting.
func (s StoreStatus) Stale(max time.Duration) []NodeStatus {
	var out []NodeStatus
	for _, n := range s.Nodes {
		switch n.Writer.State {
		case WriterNone:
			out = append(out, n)
		case WriterExpired, WriterDead:
			if s.At.Sub(n.Writer.StaleSince) > max {
				out = append(out, n)
			}
		}
	}
	return out
}
