package history

import (
	"context"
	"errors"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

// ManifestSummary is one restore point as `backup-cli list` shows it.
type ManifestSummary struct {
	Seq     uint64    `json:"seq"`
	Created time.Time `json:"created"`
	// Version is the data_version the restore point restores to.
	Version uint32 `json:"data_version"`
	// SnapshotVersion is the data_version of its snapshot.
	SnapshotVersion uint32 `json:"snapshot_data_version"`
	// DatabaseBytes is the size of the restored database file.
	DatabaseBytes int64 `json:"database_bytes"`
	// ChangeRecords is the number of sealed changes after the snapshot.
	ChangeRecords int `json:"change_records"`
	// AddedBytes is what the restore point added to the store.
	AddedBytes int64 `json:"added_bytes"`
}

// JournalSummary describes the records not yet covered by a manifest.
type JournalSummary struct {
	Records      int    `json:"records"`
	FirstVersion uint32 `json:"first_data_version,omitempty"`
	LastVersion  uint32 `json:"last_data_version,omitempty"`
	Bytes        int64  `json:"bytes"`
	// LastTime is when the plugin received the newest record (absent
	// without records): status tells from it when the node last changed.
	LastTime time.Time `json:"last_time,omitzero"`
}

// NodeSummary is one node as `backup-cli list` shows it.
type NodeSummary struct {
	Name      string            `json:"name"`
	Manifests []ManifestSummary `json:"manifests"`
	Journal   JournalSummary    `json:"journal"`
	// NewestVersion is the newest data_version the store holds.
	NewestVersion uint32 `json:"newest_data_version"`
	// LogicalBytes is the size of all its restore points' databases.
	LogicalBytes int64 `json:"logical_bytes"`
	// Errors are what could not be read (a damaged or foreign manifest,
	// the journal): the rest of the summary holds what could, so one bad
	// object hides nothing else of the node or of other nodes.
	Errors []string `json:"errors,omitempty"`
}

// Summarize describes a node's restore points and journal. It reads the
// journal without locking it, so it works while the plugin writes. A
// manifest that cannot be read is skipped and named in Errors and in the
// error returned, beside the summary of everything else; an error with no
// Errors means the node could not be listed at all.
func Summarize(ctx context.Context, st *store.Store, node string) (NodeSummary, error) {
	s := NodeSummary{Name: node, Manifests: []ManifestSummary{}}
	seqs, err := st.ManifestSeqs(ctx, node)
	if err != nil {
		return s, err // the node itself is out of reach (denied, no store): nothing to summarize
	}
	var errs []error
	var journalSeq uint64
	for _, seq := range seqs {
		m, err := st.Manifest(ctx, node, seq)
		if err != nil {
			if ctx.Err() != nil {
				return s, ctx.Err()
			}
			errs = append(errs, err)
			continue
		}
		records := 0
		for _, c := range m.Changes {
			records += c.Records
		}
		s.Manifests = append(s.Manifests, ManifestSummary{Seq: m.Seq, Created: m.Created, Version: m.LastVersion(),
			SnapshotVersion: m.Snapshot.Version, DatabaseBytes: m.Snapshot.Size(), ChangeRecords: records, AddedBytes: m.Stats.AddedBytes})
		s.LogicalBytes += m.Snapshot.Size()
		s.NewestVersion = m.LastVersion()
		journalSeq = m.JournalSeq
	}
	err = st.ReadJournal(ctx, node, journalSeq, func(r journal.Record) error {
		if s.Journal.Records == 0 {
			s.Journal.FirstVersion = r.Version
		}
		s.Journal.Records++
		s.Journal.LastVersion = r.Version
		s.Journal.LastTime = r.Time
		for _, st := range r.Statements {
			s.Journal.Bytes += int64(len(st))
		}
		s.NewestVersion = r.Version
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range errs {
		s.Errors = append(s.Errors, e.Error())
	}
	return s, errors.Join(errs...)
}

// StoreSummary is every node of a store and the store's size, as
// `backup-cli list` shows it and `backup-cli status` reuses it.
type StoreSummary struct {
	Store        string        `json:"store"`
	Nodes        []NodeSummary `json:"nodes"`
	LogicalBytes int64         `json:"logical_bytes"`
	// StoredBytes is every object but the journal files.
	StoredBytes int64 `json:"stored_bytes"`
	// JournalFileBytes is the journals' files on disk (preallocated).
	JournalFileBytes int64 `json:"journal_file_bytes"`
	Objects          int   `json:"objects"`
	// ObjectCounts splits Objects by class (an object store bills per
	// request and some per object).
	ObjectCounts ObjectCounts `json:"object_counts"`
	Chunks       int          `json:"chunks"`
	// SizeKnown is false through a store server with a node token: the
	// stored bytes, objects and chunks are then 0 (only the server and
	// admin tokens see the whole store).
	SizeKnown bool `json:"size_known"`
	// Unreadable are the nodes with objects list could not read (their
	// summaries name them): list shows everything else and then fails.
	Unreadable []string `json:"unreadable_nodes,omitempty"`
	// Quota is what the store server counts against this client's token
	// (absent: no quota, or not through a server).
	Quota *store.Quota `json:"quota,omitempty"`
}

// ObjectCounts are a store's objects by class.
type ObjectCounts struct {
	Packs     int `json:"packs"`
	Index     int `json:"index"`
	Manifests int `json:"manifests"`
	// Journal is journal segment files, or record objects in a bucket.
	Journal int `json:"journal"`
	// Other is config, node records and leases.
	Other int `json:"other"`
}

// SummarizeStore summarizes the nodes (node "": every node of the store)
// and, for a client that sees the whole store, counts its chunks and bytes:
// a node token sees neither. A node with an unreadable object is summarized
// with its errors and named in Unreadable; an error means the store or a
// node could not be listed at all.
func SummarizeStore(ctx context.Context, st *store.Store, node string) (StoreSummary, error) {
	var err error
	nodes := []string{node}
	if node == "" {
		if nodes, err = st.Nodes(ctx); err != nil {
			return StoreSummary{}, err
		}
	}
	// Only a client that sees the packs can count the chunks.
	chunks := 0
	if packs, err := st.Packs("count chunks"); err == nil {
		if chunks, err = packs.CountChunks(ctx); err != nil {
			return StoreSummary{}, err
		}
	}
	res := StoreSummary{Store: st.Location(), Nodes: []NodeSummary{}, Chunks: chunks}
	for _, n := range nodes {
		// A node with an unreadable object is listed with its errors
		// (Summarize keeps what it could read); the others still are.
		s, err := Summarize(ctx, st, n)
		if err != nil {
			if ctx.Err() != nil || len(s.Errors) == 0 {
				return StoreSummary{}, err // the node could not be listed at all (denied, unreachable)
			}
			res.Unreadable = append(res.Unreadable, n)
		}
		res.Nodes = append(res.Nodes, s)
		res.LogicalBytes += s.LogicalBytes
	}
	q, ok, err := st.Quota(ctx)
	if err != nil {
		return StoreSummary{}, err
	}
	if ok && q.Limit > 0 {
		res.Quota = &q
	}
	if res.SizeKnown = st.FullAccess(); res.SizeKnown {
		u, err := st.Usage(ctx)
		if err != nil {
			return StoreSummary{}, err
		}
		res.StoredBytes, res.JournalFileBytes, res.Objects = u.Bytes-u.JournalBytes, u.JournalBytes, u.Objects
		res.ObjectCounts = ObjectCounts{Packs: u.Packs, Index: u.IndexObjects, Manifests: u.Manifests, Journal: u.JournalObjects,
			Other: u.Objects - u.Packs - u.IndexObjects - u.Manifests - u.JournalObjects}
	}
	return res, nil
}
