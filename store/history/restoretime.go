package history

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

// TimePoint is a state of a node's database the store can restore, with
// when the plugin received its last change: what restore --time chooses
// between.
type TimePoint struct {
	// Version is the state's data_version: restore it with
	// RestoreOptions.Version.
	Version uint32 `json:"data_version"`
	// Received is when the plugin received the change that made this
	// state (a record's Time) or, for a restore point whose records carry
	// no time, when its manifest was written (the change was received
	// before then).
	Received time.Time `json:"received"`
	// From names where the time comes from: "record SEQ" (a journal
	// record, sealed or not) or "manifest SEQ".
	From string `json:"from"`
}

// ErrBeforeOldest is returned (wrapped) by StateAt when the time asked for
// is before every state the store holds for the node.
var ErrBeforeOldest = errors.New("no state received at or before the time asked for")

// StateAt maps a time to the state restore --time restores: the newest
// state of the node whose last change was received at or before t. The
// candidates are every record of the sealed change chunks the node's
// manifests name and of its journal after the newest manifest (each with
// the Time the plugin received it), and every manifest's own state at the
// time it was written (which covers a snapshot whose records are gone). Of
// those received at or before t, the one with the highest data_version
// wins. A t before every candidate is refused with ErrBeforeOldest, naming
// the oldest state and its time.
func StateAt(ctx context.Context, st *store.Store, node string, t time.Time) (TimePoint, error) {
	seqs, err := st.ManifestSeqs(ctx, node)
	if err != nil {
		return TimePoint{}, err
	}
	if len(seqs) == 0 {
		if _, err := st.Node(ctx, node); err != nil {
			return TimePoint{}, err
		}
		return TimePoint{}, fmt.Errorf("node %q has no restore point in store %s", node, st.Location())
	}
	var best, oldest TimePoint
	found, seenAny := false, false
	consider := func(p TimePoint) {
		if !seenAny || p.Received.Before(oldest.Received) || (p.Received.Equal(oldest.Received) && p.Version < oldest.Version) {
			oldest, seenAny = p, true
		}
		if p.Received.After(t) {
			return
		}
		if !found || p.Version > best.Version || (p.Version == best.Version && p.Received.After(best.Received)) {
			best, found = p, true
		}
	}
	// Every sealed change chunk once: later manifests name the chunks of
	// earlier ones again.
	all := &manifest.Manifest{Node: node}
	seen := map[chunker.ID]bool{}
	var latest *manifest.Manifest
	for _, seq := range seqs {
		m, err := st.Manifest(ctx, node, seq)
		if err != nil {
			return TimePoint{}, fmt.Errorf("find the state of node %q at %s: %w", node, t.Format(time.RFC3339), err)
		}
		latest = m
		if !m.Created.IsZero() {
			consider(TimePoint{Version: m.LastVersion(), Received: m.Created, From: fmt.Sprintf("manifest %d", m.Seq)})
		}
		for _, c := range m.Changes {
			if !seen[c.ID] {
				seen[c.ID] = true
				all.Changes = append(all.Changes, c)
			}
		}
	}
	record := func(r journal.Record) error {
		if !r.Time.IsZero() { // a record of unknown time is covered by its manifest's
			consider(TimePoint{Version: r.Version, Received: r.Time, From: fmt.Sprintf("record %d", r.Seq)})
		}
		return nil
	}
	if err := forEachChange(ctx, st, all, false, record); err != nil {
		return TimePoint{}, fmt.Errorf("find the state of node %q at %s: read sealed changes: %w", node, t.Format(time.RFC3339), err)
	}
	if err := st.ReadJournal(ctx, node, latest.JournalSeq, record); err != nil {
		return TimePoint{}, fmt.Errorf("find the state of node %q at %s: journal after manifest %d: %w", node, t.Format(time.RFC3339), latest.Seq, err)
	}
	if !found {
		return TimePoint{}, fmt.Errorf("node %q: %w (%s): the oldest state the store holds is data_version %d, received at %s (%s); choose a time at or after it, or restore it with --version %d",
			node, ErrBeforeOldest, t.Format(time.RFC3339Nano), oldest.Version, oldest.Received.Format(time.RFC3339Nano), oldest.From, oldest.Version)
	}
	return best, nil
}
