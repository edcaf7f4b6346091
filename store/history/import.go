package history

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/clnbackup/backup/legacy"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/journal"
)

// ImportOptions tunes ImportLegacy.
type ImportOptions struct {
	// TempDir is where the backup is restored once as a check and where
	// its snapshots are copied before they are stored (os.TempDir() if "").
	// It needs room for about twice the database.
	TempDir string
	// Progress, if not nil, is called as the backup is read: the check
	// first, then the import.
	Progress Progress
}

// ImportResult says what ImportLegacy wrote, for the CLI's report.
type ImportResult struct {
	Node string `json:"node"`
	// FirstVersion and Version are the oldest and the newest data_version
	// the node can now be restored at (restore --version).
	FirstVersion uint32 `json:"first_version"`
	Version      uint32 `json:"data_version"`
	// Snapshots and Records count the backup's snapshots and committed
	// change records imported; Dropped the rewound changes left out, and
	// Ignored the entries after the header's version (never acknowledged).
	Snapshots int `json:"snapshots"`
	Records   int `json:"records"`
	Dropped   int `json:"dropped"`
	Ignored   int `json:"ignored"`
	// Manifests is the restore points written; JournalRecords the records
	// of the newest data_version, which go to the node's journal as the
	// plugin would have left them (a rewind can still replace them).
	Manifests      int `json:"manifests"`
	JournalRecords int `json:"journal_records"`
	// NextSeq is the journal seq the plugin's next record gets.
	NextSeq uint64 `json:"next_seq"`
	// Added is the bytes added to the store.
	Added    int64         `json:"added_bytes"`
	Duration time.Duration `json:"duration_ns"`
}

// ImportLegacy turns a backup of the Python backup plugin (file format v1,
// legacyPath) into a new node of st, so that users switch plugins without
// losing any restore point: every snapshot of the backup becomes a
// snapshot manifest at its data_version, and its committed changes become
// sealed change chunks, as Seal writes them, with journal seqs 1, 2, ... and
// the import time as their time (the format records none). The records of
// the newest data_version go to the node's journal instead, which starts
// right after the sealed ones: the plugin then continues (or rewinds that
// version) exactly as after its own last seal.
//
// The backup is untrusted: it is first restored whole in a scratch file
// (legacy.Restore, sandboxed replay, integrity check), so that a damaged or
// hostile file fails before the node exists. A node name in use is refused.
// Like every writer of manifests, the import holds the node's lease. If
// writing to the store fails, the manifests and node record written are
// removed again.
func ImportLegacy(ctx context.Context, st *store.Store, node, legacyPath string, opts ImportOptions) (res ImportResult, err error) {
	start := time.Now()
	res.Node = node
	fail := func(err error) error {
		return fmt.Errorf("import %s as node %q: %w", legacyPath, node, err)
	}
	if err := manifest.ValidNodeName(node); err != nil {
		return res, fail(err)
	}
	if _, err := st.Node(ctx, node); err == nil {
		return res, fail(fmt.Errorf("%w (choose another --node name)", store.ErrNodeExists))
	} else if !errors.Is(err, store.ErrNoNode) {
		return res, fail(err)
	}
	if !st.CanStartJournal() {
		return res, fail(fmt.Errorf("%w: import into the store's directory on the server's machine (backup-cli import --node %s file://%s file:///path/to/store)",
			store.ErrJournalStartUnsupported, node, legacyPath))
	}
	tmpDir, err := os.MkdirTemp(opts.TempDir, ".backup-import-*")
	if err != nil {
		return res, fail(fmt.Errorf("scratch directory: %w", err))
	}
	defer os.RemoveAll(tmpDir)

	// The check: the whole backup restores, with the same rules the import
	// follows, before anything is written to the store.
	check := filepath.Join(tmpDir, "check.sqlite3")
	if _, err := legacy.Restore(legacyPath, check, scaled(opts.Progress, 0, 2)); err != nil {
		return res, fail(fmt.Errorf("%w (nothing was written to the store)", err))
	}
	if err := replay.IntegrityCheck(check); err != nil {
		return res, fail(fmt.Errorf("the restored backup fails the integrity check: %w (nothing was written to the store)", err))
	}
	removeDatabase(check)

	f, err := legacy.OpenFile(legacyPath)
	if err != nil {
		return res, fail(err)
	}
	defer f.Close()
	host, _ := os.Hostname()
	if err := st.CreateNode(ctx, store.NodeInfo{Name: node, Created: st.Now().UTC(), Host: host}); err != nil {
		return res, fail(err)
	}
	im := &importer{ctx: ctx, st: st, node: node, tmpDir: tmpDir, now: st.Now().UTC(), seq: 1, res: &res}
	defer func() {
		if err != nil {
			if cerr := im.undo(); cerr != nil {
				err = fmt.Errorf("%w; removing the partly imported node also failed: %v (run backup-cli forget on it, or import under another name)", err, cerr)
			}
		}
	}()
	if im.lease, err = keepLease(ctx, st, node); err != nil {
		return res, fail(err)
	}
	defer im.lease.release(context.Background())
	lres, err := f.Committed(im.item, scaled(opts.Progress, 1, 2))
	if err == nil {
		err = im.finish()
	}
	if err != nil {
		return res, fail(err)
	}
	res.Version, res.Dropped, res.Ignored = lres.Version, lres.Dropped, lres.Ignored
	res.Duration = time.Since(start)
	return res, nil
}

// importer writes restore points as legacy.File.Committed hands over the
// backup's entries.
type importer struct {
	ctx    context.Context
	st     *store.Store
	node   string
	tmpDir string
	now    time.Time
	lease  *keptLease
	res    *ImportResult

	// cur is the newest manifest committed; changes are the change chunks
	// stored since, batch the sealed records not yet in a chunk.
	cur     *manifest.Manifest
	w       *store.Writer
	changes []manifest.ChangeRef
	batch   []journal.Record
	size    int
	// group is the records of the newest data_version so far: sealed once
	// a newer version arrives, else left to the journal.
	group []journal.Record
	// seq is the next journal seq.
	seq uint64
}

func (im *importer) item(it legacy.Item) error {
	if err := im.ctx.Err(); err != nil {
		return err
	}
	if it.Kind == legacy.Snapshot {
		return im.snapshot(it)
	}
	if im.cur == nil {
		// A backup that starts with changes starts from an empty database,
		// as a node init'ed without one: that is the first manifest.
		if err := im.commit(&manifest.Manifest{}); err != nil {
			return err
		}
	}
	if len(im.group) > 0 && im.group[0].Version != it.Record.Version {
		if err := im.sealGroup(); err != nil {
			return err
		}
	}
	if len(im.group) == 0 && im.res.Records == 0 && im.res.Snapshots == 0 {
		im.res.FirstVersion = it.Record.Version
	}
	r := it.Record
	r.Time = im.now
	im.group = append(im.group, r)
	im.res.Records++
	return nil
}

// sealGroup moves the group into the sealed batch, numbering its records.
func (im *importer) sealGroup() error {
	for _, r := range im.group {
		r.Seq = im.seq
		im.seq++
		rs := 32
		for _, s := range r.Statements {
			rs += len(s) + 4
		}
		if im.size+rs > maxChangeChunk {
			if err := im.flushBatch(); err != nil {
				return err
			}
		}
		im.batch = append(im.batch, r)
		im.size += rs
	}
	im.group = im.group[:0]
	return nil
}

// writer is the writer of the manifest being built, fenced by the lease.
func (im *importer) writer() (*store.Writer, error) {
	if im.w == nil {
		w, err := im.st.NewWriter(im.ctx)
		if err != nil {
			return nil, err
		}
		w.Fence(im.lease.check)
		im.w = w
	}
	return im.w, nil
}

// flushBatch stores the batch as one change chunk (Seal's encoding).
func (im *importer) flushBatch() error {
	if len(im.batch) == 0 {
		return nil
	}
	w, err := im.writer()
	if err != nil {
		return err
	}
	id, _, err := w.Put(im.ctx, chunk.KindChange, journal.EncodeChunk(im.batch))
	if err != nil {
		return err
	}
	b := im.batch
	im.changes = append(im.changes, manifest.ChangeRef{ID: id, FirstSeq: b[0].Seq, LastSeq: b[len(b)-1].Seq,
		FirstVersion: b[0].Version, LastVersion: b[len(b)-1].Version, Records: len(b)})
	im.batch, im.size = nil, 0
	return nil
}

// commit stores m (Seq, Node and Created set here) with the current
// writer, which is then done.
func (im *importer) commit(m *manifest.Manifest) error {
	w, err := im.writer()
	if err != nil {
		return err
	}
	m.Format, m.Node, m.Created = manifest.FormatVersion, im.node, im.st.Now().UTC()
	m.Seq = 1
	if im.cur != nil {
		m.Seq = im.cur.Seq + 1
	}
	_, err = w.Commit(im.ctx, m)
	w.Close()
	im.w = nil
	if err != nil {
		return err
	}
	im.cur = m
	im.res.Manifests++
	im.res.Added += m.Stats.AddedBytes
	return nil
}

// seal commits the sealed records since the newest manifest, as Seal does:
// the newest manifest's snapshot and changes plus the new change chunks.
func (im *importer) seal() error {
	if err := im.flushBatch(); err != nil {
		return err
	}
	if im.cur == nil {
		if err := im.commit(&manifest.Manifest{}); err != nil {
			return err
		}
	}
	if len(im.changes) == 0 {
		return nil
	}
	m := &manifest.Manifest{Snapshot: im.cur.Snapshot, JournalSeq: im.changes[len(im.changes)-1].LastSeq}
	m.Changes = append(append([]manifest.ChangeRef(nil), im.cur.Changes...), im.changes...)
	if err := im.commit(m); err != nil {
		return err
	}
	im.changes = nil
	return nil
}

// snapshot seals what came before and stores the backup's snapshot as the
// next manifest. A snapshot replaces the database, so every change before
// it is sealed, the newest version's too.
func (im *importer) snapshot(it legacy.Item) error {
	if err := im.sealGroup(); err != nil {
		return err
	}
	if im.cur != nil {
		if err := im.seal(); err != nil {
			return err
		}
	}
	if im.res.Records == 0 && im.res.Snapshots == 0 {
		im.res.FirstVersion = it.Record.Version
	}
	tmp := filepath.Join(im.tmpDir, "snapshot.sqlite3")
	defer removeDatabase(tmp)
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("copy the snapshot at offset %d: %w", it.Offset, err)
	}
	_, err = io.Copy(out, io.NewSectionReader(it.Snapshot, 0, it.Length))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copy the snapshot at offset %d: %w", it.Offset, err)
	}
	w, err := im.writer()
	if err != nil {
		return err
	}
	snap, err := snapshotFile(im.ctx, w, im.st, tmp, it.Record.Version, nil, nil, 0, nil)
	if err != nil {
		return fmt.Errorf("snapshot at offset %d: %w", it.Offset, err)
	}
	if err := im.commit(&manifest.Manifest{Snapshot: snap, JournalSeq: im.seq - 1}); err != nil {
		return err
	}
	im.res.Snapshots++
	return nil
}

// finish seals every record but the newest version's and starts the
// node's journal with those.
func (im *importer) finish() error {
	if err := im.seal(); err != nil {
		return err
	}
	j, err := im.st.StartJournal(im.ctx, im.node, im.seq, im.lease.owner)
	if err != nil {
		return err
	}
	for _, r := range im.group {
		want := im.seq
		stored, err := j.Append(r)
		if err != nil {
			j.Close()
			return fmt.Errorf("append record of version %d to the journal: %w", r.Version, err)
		}
		if stored.Seq != want {
			j.Close()
			return fmt.Errorf("the journal gave record of version %d seq %d, not %d", r.Version, stored.Seq, want)
		}
		im.seq++
	}
	im.res.JournalRecords = len(im.group)
	im.res.NextSeq = j.NextSeq()
	if err := j.Close(); err != nil {
		return fmt.Errorf("close the journal: %w", err)
	}
	return nil
}

// undo removes what a failed import wrote: its manifests and the node
// record (chunks are left to gc). A journal started is left in place.
func (im *importer) undo() error {
	if im.w != nil {
		im.w.Close()
		im.w = nil
	}
	ctx := context.Background()
	if im.cur != nil {
		for seq := im.cur.Seq; seq >= 1; seq-- {
			if err := im.st.DeleteManifest(ctx, im.node, seq); err != nil {
				return err
			}
		}
	}
	return im.st.Objects().Delete(ctx, "nodes/"+im.node+"/node.json")
}
