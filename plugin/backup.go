package plugin

import (
	"context"
	"errors"
	"time"

	"github.com/clnbackup/backup/store/history"
)

// Backup is everything the plugin needs from the storage it writes to. The
// protocol code knows nothing else about storage: OpenStore implements it
// over the store's history and journal packages, and tests may wrap that.
//
// Append, Replace and Pending are called from the plugin's read loop, one at
// a time, and must not do work that grows with the history. Compactable,
// Compact and Status run on other goroutines, concurrently with them (but
// never two Compacts at once).
type Backup interface {
	// Append makes one db_write change durable (written and synced)
	// before it returns: only then may lightningd be told to commit it.
	Append(version uint32, writes []string) error
	// Replace is the one-step rewind: lightningd died before committing
	// the change the backup holds for version, and sent version again with
	// these writes. It durably replaces that change and the PRAGMA-only
	// records after it, so that no restore ever contains the old one.
	Replace(version uint32, writes []string) error
	// Pending reports what was written since the newest snapshot, from
	// memory, for the automatic compaction triggers.
	Pending() Pending
	// Compactable reports whether Compact would write a new restore point.
	// When it would not, it returns the statistics that backup-compact
	// answers with (the Python plugin's shape).
	Compactable(ctx context.Context) (bool, LegacyStats, error)
	// Compact writes a new snapshot restore point from what the backup
	// holds, while Append continues. A zero Manifest means there was
	// nothing to compact.
	Compact(ctx context.Context) (CompactOutcome, error)
	// Status describes the stored history for backup-status. It may be
	// slow (it reads every manifest and lists the store).
	Status(ctx context.Context) (StoreStatus, error)
	// Close releases the backup (the node's journal lock). Everything
	// appended before is durable already.
	Close() error
}

// Opener opens the backup a backup.lock names. The plugin calls it once, at
// the first init or db_write.
type Opener func(ctx context.Context, lock Lock) (Backup, Start, error)

// Lock is the content of backup.lock: where the plugin writes.
type Lock struct {
	// URL is the store's URL ("backend_url", the Python plugin's key).
	URL string
	// Node is the node's name in the store ("default" when absent).
	Node string
	// Token is the secret a store server (socket: URLs) knows the node
	// by; empty for local stores and servers without authentication.
	Token string
	// ServerRetry is how long a db_write waits for an unreachable store
	// server before it is refused ("server_retry"; 0: the default).
	ServerRetry time.Duration
	// S3Credentials is the file of an s3:// store's keys
	// ("s3_credentials": AWS's shared credentials format, mode 0600),
	// read instead of the environment lightningd gives the plugin.
	S3Credentials string
	// KeyFile is the unlock key file of an encrypted store ("key_file":
	// an absolute path, mode 0600, written by backup-cli init
	// --lightning-dir on an encrypted store); "" for a plain store.
	KeyFile string
	// Dir is the lightning directory the file was read from (not part of
	// the file). The store keeps its compaction cache in Dir/backup-cache;
	// "" means no cache.
	Dir string
}

// Start is what an opened backup holds, for the version rules and the
// start-up log.
type Start struct {
	// Store is the store's URL, for messages.
	Store string
	// Node is the node's name in the store.
	Node string
	// Held is the newest data_version the backup holds: what a restore
	// gives, and what lightningd's next write must follow.
	Held uint32
	// Replaceable is true when the newest change (version Held, not a
	// PRAGMA) is still in the journal, so that a re-sent Held can replace
	// it (lightningd died between the hook and its commit).
	Replaceable bool
	// Manifest and ManifestVersion are the newest restore point and the
	// data_version it restores to; JournalRecords counts the journal
	// records after it.
	Manifest        uint64
	ManifestVersion uint32
	JournalRecords  int
	// Recovered is the bytes of a torn, never acknowledged journal record
	// that opening the journal dropped.
	Recovered int64
}

// Pending is what the backup holds beyond its newest snapshot.
type Pending struct {
	// Changes counts the change records since the newest snapshot (sealed
	// or still in the journal).
	Changes int64
	// JournalBytes is the journal bytes written since the newest snapshot.
	JournalBytes int64
	// SnapshotTime is when the newest restore point was written.
	SnapshotTime time.Time
	// Appended is the journal bytes appended since the backup was
	// opened, never lowered by a compaction: the low-space warning
	// measures the journal's growth rate with it.
	Appended int64
}

// LegacyStats is backup-compact's answer when there is nothing to compact,
// in the Python plugin's shape.
type LegacyStats struct {
	// BackupSize is the bytes the store holds.
	BackupSize int64 `json:"backupsize"`
	// VersionCount is the journal records after the newest snapshot plus
	// one for the snapshot.
	VersionCount int `json:"version_count"`
}

// CompactOutcome describes a finished compaction.
type CompactOutcome struct {
	// Manifest is the new snapshot's restore point (0: nothing to compact).
	Manifest uint64
	// DataVersion is the new snapshot's data_version.
	DataVersion uint32
	// Sealed is the number of journal records moved into the store.
	Sealed int
	// Added is the bytes the compaction added to the store.
	Added int64
	// Fetched is the bytes of pages the compaction read from the store
	// (little once the compaction cache holds the previous snapshot).
	Fetched int64
	// CacheErr says why the compaction cache could not be kept (the next
	// compaction then reads the whole snapshot from the store).
	CacheErr error
	// ProofErr says why the kept cache has no proof: the next compaction
	// then hashes it whole and runs integrity_check (slower, still right).
	ProofErr error
	// Duration is how long the compaction took; Phases where it went.
	Duration time.Duration
	Phases   []history.Phase
}

// StoreStatus is the stored history as backup-status shows it.
type StoreStatus struct {
	// Manifests is the number of restore points; Newest the newest one.
	Manifests int
	Newest    ManifestStatus
	// JournalRecords and JournalBytes (statement bytes) are the changes
	// after the newest restore point, not yet sealed into the store.
	JournalRecords int
	JournalBytes   int64
	// StoredBytes is what the whole store occupies; LogicalBytes the sum
	// of this node's restore points' database sizes.
	StoredBytes  int64
	LogicalBytes int64
	// FreeBytes is the free space of the store's file system, known
	// (FreeKnown) for a file:// store: a full disk refuses db_writes.
	FreeBytes uint64
	FreeKnown bool
}

// ManifestStatus is one restore point.
type ManifestStatus struct {
	Seq uint64 `json:"seq"`
	// DataVersion is the data_version it restores to; SnapshotVersion the
	// data_version of its snapshot.
	DataVersion     uint32    `json:"data_version"`
	SnapshotVersion uint32    `json:"snapshot_data_version"`
	Created         time.Time `json:"created"`
}

// ErrNodeInUse is wrapped by an Opener's error when another running plugin
// holds the node's journal: two lightningd must never write one node.
var ErrNodeInUse = errors.New("node is being backed up by another running plugin")
