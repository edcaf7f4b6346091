package history

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/clnbackup/backup/internal/memlimit"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/legacy"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/journal"
)

// RestoreOptions choose what to restore and where.
type RestoreOptions struct {
	Node string
	// Manifest restores exactly that restore point (0: not chosen).
	Manifest uint64
	// Version restores the state at that data_version (nil: not chosen).
	Version *uint32
	// Dest is the database file to create; it must not exist.
	Dest     string
	Progress Progress
}

// RestoreResult says what was restored.
type RestoreResult struct {
	Node     string `json:"node"`
	Manifest uint64 `json:"manifest"`
	// Version is the data_version of the restored database.
	Version uint32 `json:"data_version"`
	// Changes is the number of change records applied after the snapshot.
	Changes int   `json:"changes_applied"`
	Bytes   int64 `json:"bytes"`
	// NewestVersion is the newest data_version the store holds for the
	// node; Version < NewestVersion means an old state was restored.
	NewestVersion uint32 `json:"newest_data_version"`
	Dest          string `json:"dest"`
}

// ErrExists is returned (wrapped) when the restore target exists.
var ErrExists = errors.New("restore target exists")

// Restore rebuilds a node's database at the chosen restore point: the
// newest state by default (newest manifest plus every later journal record).
// It writes a temporary file next to Dest, fetches and verifies every page,
// applies the changes, runs PRAGMA integrity_check, fsyncs, and only then
// links the file to Dest (never replacing an existing file).
func Restore(ctx context.Context, st *store.Store, opts RestoreOptions) (RestoreResult, error) {
	res := RestoreResult{Node: opts.Node, Dest: opts.Dest}
	if _, err := os.Lstat(opts.Dest); err == nil {
		return res, fmt.Errorf("restore node %q to %s: %w (move it away or choose another target)", opts.Node, opts.Dest, ErrExists)
	}
	seqs, err := st.ManifestSeqs(ctx, opts.Node)
	if err != nil {
		return res, err
	}
	if len(seqs) == 0 {
		if _, err := st.Node(ctx, opts.Node); err != nil {
			return res, err
		}
		return res, fmt.Errorf("node %q has no restore point in store %s", opts.Node, st.Location())
	}
	m, useJournal, err := chooseRestorePoint(ctx, st, opts, seqs, &res)
	if err != nil {
		return res, err
	}
	res.Manifest = m.Seq

	dir := filepath.Dir(opts.Dest)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(opts.Dest)+".restore-*")
	if err != nil {
		return res, fmt.Errorf("restore node %q: create temporary file in %s: %w", opts.Node, dir, err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			removeDatabase(tmpName)
		}
	}()
	if err := buildAt(ctx, st, m, tmp, opts.Progress); err != nil {
		return res, fmt.Errorf("restore node %q manifest %d: %w", opts.Node, m.Seq, err)
	}
	if err := tmp.Close(); err != nil {
		return res, fmt.Errorf("restore node %q: %w", opts.Node, err)
	}
	stop := func(r journal.Record) bool { return opts.Version != nil && r.Version > *opts.Version }
	version, applied, err := applyChanges(ctx, st, m, tmpName, useJournal, stop)
	if err != nil {
		return res, fmt.Errorf("restore node %q manifest %d: %w", opts.Node, m.Seq, err)
	}
	if opts.Version != nil && version != *opts.Version {
		return res, fmt.Errorf("restore node %q: data_version %d is not in the store (restore point %d reaches %d)", opts.Node, *opts.Version, m.Seq, version)
	}
	res.Version, res.Changes = version, applied
	if err := finishFile(tmpName, opts.Dest); err != nil {
		return res, fmt.Errorf("restore node %q: %w", opts.Node, err)
	}
	ok = true
	if fi, err := os.Stat(opts.Dest); err == nil {
		res.Bytes = fi.Size()
	}
	return res, nil
}

// chooseRestorePoint finds the manifest to restore from (the newest, or the
// one opts names by manifest or version; seqs lists the node's manifests),
// records the newest data_version the store holds in res, and says whether
// the journal's records after the manifest apply.
func chooseRestorePoint(ctx context.Context, st *store.Store, opts RestoreOptions, seqs []uint64, res *RestoreResult) (m *manifest.Manifest, useJournal bool, err error) {
	latest, err := st.Manifest(ctx, opts.Node, seqs[len(seqs)-1])
	if err != nil {
		if opts.Manifest == 0 || opts.Version != nil {
			return nil, false, err
		}
		// The newest manifest is unreadable (damaged, or junk): a chosen
		// restore point does not need it.
		if m, err = st.Manifest(ctx, opts.Node, opts.Manifest); err != nil {
			return nil, false, err
		}
		res.NewestVersion = m.LastVersion()
		return m, false, nil
	}
	newest, err := newestVersion(ctx, st, latest)
	if err != nil {
		if opts.Manifest == 0 && opts.Version == nil {
			return nil, false, err
		}
		// A damaged journal breaks only the newest state: a chosen
		// restore point can still be restored.
		newest = latest.LastVersion()
	}
	res.NewestVersion = newest
	switch {
	case opts.Manifest != 0 && opts.Version != nil:
		return nil, false, errors.New("choose a manifest or a version, not both")
	case opts.Manifest != 0:
		m, err = st.Manifest(ctx, opts.Node, opts.Manifest)
		return m, false, err
	case opts.Version != nil:
		if m, err = manifestForVersion(ctx, st, opts.Node, seqs, *opts.Version); err != nil {
			return nil, false, err
		}
		if *opts.Version > newest {
			return nil, false, fmt.Errorf("node %q: data_version %d is newer than the newest the store holds (%d)", opts.Node, *opts.Version, newest)
		}
		return m, m.Seq == latest.Seq, nil
	}
	return latest, true, nil
}

// buildAt writes m's snapshot into f, syncing it behind the writes.
func buildAt(ctx context.Context, st *store.Store, m *manifest.Manifest, f *os.File, progress Progress) error {
	if m.Snapshot.Pages == 0 {
		return nil
	}
	tab, err := loadPageTable(ctx, st, m.Snapshot)
	if err != nil {
		return err
	}
	// The table and the list of pages to fetch, held to the end, and the
	// lookups of three windows (one read, the next one planned, the pass
	// for the one after running).
	defer memlimit.Reserve(int64(len(tab))*(chunker.IDSize+4) + 3*int64(min(len(tab), restoreWindow))*windowBytesPerPage)()
	sb := newSyncBehind(f)
	_, _, err = writePagesBehind(ctx, st, f, sb, m.Snapshot, tab, false, progress)
	if werr := sb.wait(); err == nil {
		err = werr
	}
	return err
}

// applyChanges applies m's change chunks and, if useJournal, the node's
// journal records after m to the database at path, stopping before the
// first record for which stop is true. It returns the data_version reached
// and the number of records applied.
func applyChanges(ctx context.Context, st *store.Store, m *manifest.Manifest, path string, useJournal bool, stop func(journal.Record) bool) (uint32, int, error) {
	db, err := replay.Open(path)
	if err != nil {
		return 0, 0, err
	}
	version, applied := m.Snapshot.Version, 0
	done := false
	apply := func(r journal.Record) error {
		if err := ctx.Err(); err != nil {
			return err // the plugin stops a compaction at shutdown
		}
		if done || stop(r) {
			done = true
			return nil
		}
		if err := db.ApplyContext(ctx, r); err != nil {
			return err
		}
		version = r.Version
		applied++
		return nil
	}
	err = forEachChange(ctx, st, m, useJournal, apply)
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return version, applied, err
}

// forEachChange calls fn for m's sealed records and then, if useJournal, for
// the journal records that follow m, checking that none is missing.
func forEachChange(ctx context.Context, st *store.Store, m *manifest.Manifest, useJournal bool, fn func(journal.Record) error) error {
	// Looked up together, read one at a time in order.
	ids := make([]chunker.ID, len(m.Changes))
	for i, c := range m.Changes {
		ids[i] = c.ID
	}
	var l chunk.Lookup
	if len(ids) > 0 {
		var err error
		if l, err = st.Lookup(ctx, ids); err != nil {
			return err
		}
	}
	for _, c := range m.Changes {
		recs, err := readChangeChunk(ctx, st, l, c)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	if !useJournal {
		return nil
	}
	// Read fails with journal.ErrTrimmed if records after m are gone.
	if err := st.ReadJournal(ctx, m.Node, m.JournalSeq, fn); err != nil {
		return fmt.Errorf("journal of node %q after manifest %d: %w", m.Node, m.Seq, err)
	}
	return nil
}

// readChangeChunk reads and decodes the sealed change chunk c names (l
// locates it), checking it holds the records the manifest says.
func readChangeChunk(ctx context.Context, st *store.Store, l chunk.Lookup, c manifest.ChangeRef) ([]journal.Record, error) {
	var data []byte
	err := st.ReadLocated(ctx, l, []chunker.ID{c.ID}, func(_ chunker.ID, d []byte) error {
		data = bytes.Clone(d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("change chunk for data_version %d..%d: %w", c.FirstVersion, c.LastVersion, err)
	}
	recs, err := journal.DecodeChunk(data)
	if err != nil {
		return nil, fmt.Errorf("change chunk %s: %w", c.ID, err)
	}
	if len(recs) != c.Records {
		return nil, fmt.Errorf("change chunk %s holds %d records, manifest says %d", c.ID, len(recs), c.Records)
	}
	return recs, nil
}

// newestVersion is the newest data_version the store holds for the node.
func newestVersion(ctx context.Context, st *store.Store, latest *manifest.Manifest) (uint32, error) {
	v := latest.LastVersion()
	err := st.ReadJournal(ctx, latest.Node, latest.JournalSeq, func(r journal.Record) error {
		v = r.Version
		return nil
	})
	return v, err
}

// manifestForVersion picks the restore point to reach data_version v from:
// among manifests whose snapshot is at or below v, the one with the newest
// snapshot, and of those the newest manifest (it has the most changes).
func manifestForVersion(ctx context.Context, st *store.Store, node string, seqs []uint64, v uint32) (*manifest.Manifest, error) {
	var best *manifest.Manifest
	for _, seq := range seqs {
		m, err := st.Manifest(ctx, node, seq)
		if err != nil {
			return nil, err
		}
		if m.Snapshot.Version > v {
			continue
		}
		if best == nil || m.Snapshot.Version >= best.Snapshot.Version {
			best = m
		}
	}
	if best == nil {
		return nil, fmt.Errorf("node %q: no restore point at or before data_version %d", node, v)
	}
	return best, nil
}

// finishFile checks the database at tmp and makes it durable (at once),
// then links it to dest, refusing to replace an existing file.
func finishFile(tmp, dest string) error {
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	defer f.Close()
	// The check reads the file from the page cache while the disk writes
	// it back: both must pass before the file is linked into place.
	synced := make(chan error, 1)
	go func() { synced <- f.Sync() }()
	checkErr := replay.IntegrityCheckMapped(tmp)
	syncErr := <-synced
	if checkErr != nil {
		return fmt.Errorf("integrity check of the restored database failed: %w", checkErr)
	}
	if syncErr != nil {
		return fmt.Errorf("fsync %s: %w", tmp, syncErr)
	}
	if err := os.Link(tmp, dest); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", dest, ErrExists)
		}
		return fmt.Errorf("move restored database into place at %s: %w", dest, err)
	}
	os.Remove(tmp)
	return syncDir(filepath.Dir(dest))
}

// removeDatabase removes a temporary database file and the files SQLite
// keeps beside it (a rebuilt snapshot may be in WAL mode), so that a failed
// restore or compaction leaves nothing behind.
func removeDatabase(path string) {
	for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
		os.Remove(path + suffix)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// LegacyResult says what a legacy restore did.
type LegacyResult struct {
	Version uint32 `json:"data_version"`
	Entries int    `json:"entries"`
	Bytes   int64  `json:"bytes"`
	Dest    string `json:"dest"`
}

// RestoreLegacy restores a backup file written by the Python backup plugin
// (format v1) to dest, with the same temp file, integrity check, fsync and
// no-overwrite rules as Restore.
func RestoreLegacy(ctx context.Context, path, dest string, progress Progress) (LegacyResult, error) {
	res := LegacyResult{Dest: dest}
	if _, err := os.Lstat(dest); err == nil {
		return res, fmt.Errorf("restore %s to %s: %w (move it away or choose another target)", path, dest, ErrExists)
	}
	dir := filepath.Dir(dest)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dest)+".restore-*")
	if err != nil {
		return res, fmt.Errorf("restore %s: create temporary file in %s: %w", path, dir, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	os.Remove(tmpName) // legacy.Restore creates the file itself
	ok := false
	defer func() {
		if !ok {
			removeDatabase(tmpName)
		}
	}()
	r, err := legacy.Restore(path, tmpName, progress)
	if err != nil {
		return res, err
	}
	if err := finishFile(tmpName, dest); err != nil {
		return res, fmt.Errorf("restore %s: %w", path, err)
	}
	ok = true
	res.Version, res.Entries = r.Version, r.Entries
	if fi, err := os.Stat(dest); err == nil {
		res.Bytes = fi.Size()
	}
	return res, nil
}

// NewestVersion is the newest data_version the store holds for a node.
func NewestVersion(ctx context.Context, st *store.Store, node string) (uint32, error) {
	latest, err := st.LatestManifest(ctx, node)
	if err != nil {
		return 0, err
	}
	return newestVersion(ctx, st, latest)
}
