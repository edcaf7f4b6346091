package plugin

// The Backup of the real store: a node's history (store/history) and its
// journal (store/journal). This file is the only one of the package that
// knows how the backup is stored.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/clnbackup/backup/internal/secretfile"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/crypt"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
	"github.com/clnbackup/backup/store/remote" // socket: URLs (store servers)
	"github.com/clnbackup/backup/store/s3"     // s3:// URLs (buckets)
)

// CacheDirName is the directory, in the lightning directory, where
// compaction keeps a copy of the node's newest snapshot (mode 0700; it holds
// the database). Removing it only makes the next compaction read more.
const CacheDirName = "backup-cache"

// OpenStore is the Opener of the store a backup.lock names: it opens the
// store, takes the node's journal (exclusively: a second plugin on the same
// node fails with ErrNodeInUse) and reads what the backup holds. Its errors
// say what is wrong and what to do.
func OpenStore(ctx context.Context, lock Lock) (Backup, Start, error) {
	st, err := openStore(ctx, lock)
	if err != nil {
		return nil, Start{}, err
	}
	b, start, err := openNode(ctx, st, lock)
	if err != nil {
		st.Close()
		return nil, Start{}, err
	}
	return b, start, nil
}

func openStore(ctx context.Context, lock Lock) (*store.Store, error) {
	url := lock.URL
	u, err := store.ParseURL(url)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(u.Path); u.Scheme == "file" && err == nil && fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a file, not a backup store (a backup file of the Python backup plugin?): this plugin cannot add to it; "+
			"keep it (backup-cli restore still reads it) and create a store for this node with `backup-cli init --lightning-dir DIR file:///path/to/new/store` "+
			"after moving backup.lock away", u.Path)
	}
	// One read worker: a compaction must leave lightningd's hook path a
	// core (docs/benchmark.md, "Plugin compaction read workers").
	opts := store.Options{ReadWorkers: 1, Token: lock.Token, RetryFor: lock.ServerRetry, CredentialsFile: lock.S3Credentials}
	if lock.KeyFile != "" {
		kf, err := readKeyFile(lock.KeyFile)
		if err != nil {
			return nil, err
		}
		opts.Unlock.KeyFile = kf
	}
	var st *store.Store
	if u.Scheme != "file" {
		st, err = openServer(ctx, url, opts)
	} else if st, err = store.Open(ctx, url, opts); err != nil {
		err = fmt.Errorf("%w (is the store's file system mounted and readable?)", err)
	}
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%w: backup.lock names no \"key_file\": make one with `backup-cli key add --new-key-file %s %s` and add \"key_file\": \"%s\" to backup.lock",
			err, filepath.Join(lock.Dir, "backup.key"), url, filepath.Join(lock.Dir, "backup.key"))
	}
	if errors.Is(err, crypt.ErrWrongKey) {
		return nil, fmt.Errorf("%w: the key file %s named by backup.lock does not open the store (its key object was removed?): make a new one with `backup-cli key add --new-key-file FILE %s` and name it in backup.lock", err, lock.KeyFile, url)
	}
	return st, err
}

// readKeyFile reads the unlock key file backup.lock names, refused when
// other users may read it (checked on the file read).
func readKeyFile(path string) (*crypt.KeyFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("the key file named by backup.lock: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("the key file named by backup.lock: %w", err)
	}
	if err := secretfile.CheckMode(path, "the key of an encrypted store", fi.Mode()); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, 4096+1))
	if err != nil {
		return nil, fmt.Errorf("read the key file %s named by backup.lock: %w", path, err)
	}
	kf, err := crypt.ParseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("the key file %s named by backup.lock: %w", path, err)
	}
	return &kf, nil
}

// openServer connects to a store server or a bucket, retrying for opts.RetryFor while
// it cannot be reached (lightningd starting at boot before the network or
// Tor is up), but not when the server refused the token, the keys or the protocol,
// or TLS cannot work (a wrong pin, a TLS/plaintext mismatch).
func openServer(ctx context.Context, url string, opts store.Options) (*store.Store, error) {
	retry := opts.RetryFor
	if retry <= 0 {
		retry = store.DefaultRetryFor
	}
	deadline := time.Now().Add(retry)
	delay := 200 * time.Millisecond
	for {
		st, err := store.Open(ctx, url, opts)
		if err == nil {
			return st, nil
		}
		if errors.Is(err, remote.ErrDenied) || errors.Is(err, remote.ErrVersion) || errors.Is(err, store.ErrNotStore) ||
			errors.Is(err, remote.ErrTLS) || errors.Is(err, remote.ErrBadRequest) || errors.Is(err, s3.ErrAccessDenied) ||
			errors.Is(err, store.ErrLocked) || errors.Is(err, crypt.ErrWrongKey) {
			return nil, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%w (tried for %s: server_retry in backup.lock)", err, retry)
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(min(delay, left)):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func openNode(ctx context.Context, st *store.Store, lock Lock) (*storeBackup, Start, error) {
	n, err := history.OpenNode(ctx, st, lock.Node)
	switch {
	case errors.Is(err, journal.ErrLocked) || errors.Is(err, store.ErrLeaseHeld):
		return nil, Start{}, fmt.Errorf("node %q of store %s: %w: %w", lock.Node, st.Location(), ErrNodeInUse, err)
	case errors.Is(err, store.ErrNoNode):
		return nil, Start{}, fmt.Errorf("%w: backup.lock names node %q, which the store does not hold; "+
			"create it with `backup-cli init --lightning-dir DIR --node %s %s`, or correct backup.lock", err, lock.Node, lock.Node, lock.URL)
	case err != nil:
		return nil, Start{}, err
	}
	if lock.Dir != "" {
		// The previous snapshot's database, kept so that a compaction
		// reads from the store only the pages it lacks (history.Node.CacheDir).
		n.CacheDir = filepath.Join(lock.Dir, CacheDirName)
	}
	b := &storeBackup{st: st, node: n, name: lock.Node}
	start, err := b.load(ctx)
	if err != nil {
		n.Close()
		return nil, Start{}, err
	}
	return b, start, nil
}

// storeBackup is a Backup over one node of a store.
type storeBackup struct {
	st   *store.Store
	node *history.Node
	name string

	// mu guards the counters behind Pending.
	mu       sync.Mutex
	changes  int64 // change records since the newest snapshot
	bytes    int64 // journal frame bytes since the newest snapshot
	appended int64 // journal frame bytes appended since opened
	snapTime time.Time
}

// load reads what the backup holds: the newest manifest and the journal
// records after it (bounded by the compaction thresholds, read once at
// start so that the hot path never reads the history).
func (b *storeBackup) load(ctx context.Context) (Start, error) {
	latest, err := b.st.LatestManifest(ctx, b.name)
	if err != nil {
		return Start{}, err
	}
	j := b.node.Journal()
	if next := j.NextSeq(); next-1 < latest.JournalSeq {
		return Start{}, fmt.Errorf("the journal of node %q ends at record %d, but the store's manifest %d covers records up to %d: "+
			"the journal directory was lost or replaced, and new records would be hidden behind the manifest; "+
			"restore the node with `backup-cli restore` and back it up under a new node name (`backup-cli init --node NEW-NAME`)",
			b.name, next-1, latest.Seq, latest.JournalSeq)
	}
	s := Start{Store: b.st.Location(), Node: b.name, Manifest: latest.Seq, ManifestVersion: latest.LastVersion(), Held: latest.LastVersion(),
		Recovered: j.Recovered()}
	var group uint32 // version of the trailing run of records
	var groupChange bool
	err = j.Records(latest.JournalSeq, func(r journal.Record) error {
		if s.JournalRecords == 0 || r.Version != group {
			group, groupChange = r.Version, false
		}
		if !r.PragmaOnly() {
			groupChange = true
		}
		s.JournalRecords++
		b.bytes += frameBytes(r.Statements)
		return nil
	})
	if err != nil {
		return Start{}, fmt.Errorf("read the journal of node %q: %w", b.name, err)
	}
	if last, ok := j.Last(); ok && last.Seq > latest.JournalSeq {
		s.Held = last.Version
	}
	s.Replaceable = s.JournalRecords > 0 && group == s.Held && groupChange
	b.changes = int64(s.JournalRecords)
	for _, c := range latest.Changes {
		b.changes += int64(c.Records)
	}
	b.snapTime = latest.Created
	return s, nil
}

// frameBytes is the size of a journal record's frame (store/journal/FORMAT.md:
// 8 bytes of frame header, 25 of fixed payload, 4 per statement).
func frameBytes(writes []string) int64 {
	n := int64(8 + 25)
	for _, w := range writes {
		n += 4 + int64(len(w))
	}
	return n
}

func (b *storeBackup) Append(version uint32, writes []string) error {
	if err := b.node.LeaseErr(); err != nil {
		return fmt.Errorf("%w: stop this lightningd; if the other writer is stale, run backup-cli unlock", err)
	}
	if _, err := b.node.Journal().Append(journal.Record{Version: version, Statements: writes}); err != nil {
		return err
	}
	b.count(writes)
	return nil
}

func (b *storeBackup) Replace(version uint32, writes []string) error {
	if err := b.node.LeaseErr(); err != nil {
		return fmt.Errorf("%w: stop this lightningd; if the other writer is stale, run backup-cli unlock", err)
	}
	if _, err := b.node.Journal().Replace(journal.Record{Version: version, Statements: writes}); err != nil {
		return err
	}
	b.count(writes)
	return nil
}

func (b *storeBackup) count(writes []string) {
	b.mu.Lock()
	n := frameBytes(writes)
	b.changes++
	b.bytes += n
	b.appended += n
	b.mu.Unlock()
}

func (b *storeBackup) Pending() Pending {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Pending{Changes: b.changes, JournalBytes: b.bytes, SnapshotTime: b.snapTime, Appended: b.appended}
}

// FreeSpace is the free space of a file:// store's file system (statfs);
// known is false through a store server.
func (b *storeBackup) FreeSpace() (free uint64, known bool, err error) {
	return b.st.FreeBytes()
}

// errEnough stops a journal scan early.
var errEnough = errors.New("enough")

// Compactable follows history.Node.Compact's own test: there is something to
// compact when the newest manifest has sealed changes, or when the journal
// holds a record that may be sealed (any version but the newest, which a
// rewind could still replace). The scan stops at the first such record.
func (b *storeBackup) Compactable(ctx context.Context) (bool, LegacyStats, error) {
	latest, err := b.st.LatestManifest(ctx, b.name)
	if err != nil {
		return false, LegacyStats{}, err
	}
	if len(latest.Changes) > 0 {
		return true, LegacyStats{}, nil
	}
	j := b.node.Journal()
	last, _ := j.Last()
	records, sealable := 0, false
	err = j.Records(latest.JournalSeq, func(r journal.Record) error {
		if r.Version != last.Version {
			sealable = true
			return errEnough
		}
		records++
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return false, LegacyStats{}, fmt.Errorf("read the journal of node %q: %w", b.name, err)
	}
	if sealable {
		return true, LegacyStats{}, nil
	}
	u, err := b.st.Usage(ctx)
	if err != nil {
		return false, LegacyStats{}, err
	}
	return false, LegacyStats{BackupSize: u.Bytes, VersionCount: records + 1}, nil
}

// Compact seals the journal and writes a new snapshot (history.Node.Compact),
// then drops the store's chunk index and returns freed memory to the system,
// so that the idle plugin stays small.
func (b *storeBackup) Compact(ctx context.Context) (CompactOutcome, error) {
	b.mu.Lock()
	changes0, bytes0 := b.changes, b.bytes
	b.mu.Unlock()
	res, err := b.node.Compact(ctx, nil)
	b.st.ReleaseIndex()
	debug.FreeOSMemory() // give the compaction's memory back while idle
	out := CompactOutcome{Sealed: res.Sealed.Records, Added: res.Added, Fetched: res.Fetched, CacheErr: res.CacheErr, ProofErr: res.ProofErr, Duration: res.Duration, Phases: res.Phases}
	if err != nil || res.Manifest == nil {
		return out, err
	}
	out.Manifest, out.DataVersion = res.Manifest.Seq, res.Manifest.Snapshot.Version
	b.mu.Lock()
	// What was written while the compaction ran is what is left beyond
	// the new snapshot (give or take the newest change, never sealed).
	b.changes -= changes0
	b.bytes -= bytes0
	b.snapTime = res.Manifest.Created
	b.mu.Unlock()
	return out, nil
}

func (b *storeBackup) Status(ctx context.Context) (StoreStatus, error) {
	sum, err := history.Summarize(ctx, b.st, b.name)
	if err != nil {
		return StoreStatus{}, err
	}
	u, err := b.st.Usage(ctx)
	if err != nil {
		return StoreStatus{}, err
	}
	s := StoreStatus{Manifests: len(sum.Manifests), JournalRecords: sum.Journal.Records, JournalBytes: sum.Journal.Bytes,
		StoredBytes: u.Bytes, LogicalBytes: sum.LogicalBytes}
	if s.FreeBytes, s.FreeKnown, err = b.st.FreeBytes(); err != nil {
		return StoreStatus{}, err
	}
	if n := len(sum.Manifests); n > 0 {
		m := sum.Manifests[n-1]
		s.Newest = ManifestStatus{Seq: m.Seq, DataVersion: m.Version, SnapshotVersion: m.SnapshotVersion, Created: m.Created}
	}
	return s, nil
}

func (b *storeBackup) Close() error {
	err := b.node.Close()
	if cerr := b.st.Close(); err == nil {
		err = cerr
	}
	return err
}
