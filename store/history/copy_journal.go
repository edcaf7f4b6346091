package history

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

// copyJournal copies the source node's journal records after its newest
// manifest (which copyManifests has just copied) into the destination's
// journal, with the same seqs, so that the destination continues exactly
// as the source: its manifests' JournalSeq and the plugin's checks refer
// to the same records, and a later copy finds the records it copied.
//
// Records are appended in order, each durable before the next, so a copy
// stopped at any point leaves the destination's journal holding a prefix
// of the source's records: a consistent, older state. The source's seqs
// may have gaps (a rewind replaced records: the replacement gets a new
// seq); a gap is reproduced by appending the record and replacing it with
// itself until it has its source seq: at every moment the destination's
// records are the source's, only the last one's seq may still be lower
// (the next run finishes it). When the destination's records differ from
// the source's (the source rewound a version the destination holds), the
// destination's trailing records of that version are replaced the same
// way lightningd's rewind replaced them. Records the newest manifest
// covers are trimmed from the destination's journal.
func (c *copier) copyJournal(ctx context.Context, node string, nc *NodeCopy) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	latest, err := c.dst.LatestManifest(ctx, node)
	if err != nil {
		return err
	}
	if latest.Seq != nc.Newest {
		return fmt.Errorf("the destination's newest manifest is %d, not %d", latest.Seq, nc.Newest)
	}
	after := latest.JournalSeq
	// The source's records are streamed, never held: a journal a broken
	// compaction let grow costs time, not memory. First, whether there
	// are any.
	read := func(fn func(journal.Record) error) error {
		if err := c.src.ReadJournal(ctx, node, after, fn); err != nil {
			return fmt.Errorf("read the source's journal after record %d: %w", after, err)
		}
		return nil
	}
	tail, err := c.tailOf(read)
	if err != nil {
		return err
	}
	held, err := c.dst.CheckJournal(ctx, node)
	if err != nil {
		return fmt.Errorf("check the destination's journal: %w (run backup-cli verify on %s)", err, c.dst.Location())
	}
	if !held && tail.records == 0 {
		return c.sourceStill(ctx, node, latest) // nothing to copy, no journal to trim
	}
	j, err := c.openJournal(ctx, node, held, after)
	if errors.Is(err, store.ErrJournalStartUnsupported) {
		if tail.records > 0 {
			nc.JournalNote = fmt.Sprintf("%d journal records after manifest %d (data_version up to %d) were not copied: %v; the destination holds the node up to manifest %d",
				tail.records, latest.Seq, tail.version, err, latest.Seq)
		}
		return c.sourceStill(ctx, node, latest)
	}
	if err != nil {
		return err
	}
	err = catchUp(j, latest)
	if err == nil {
		err = c.syncJournal(ctx, j, after, read, nc)
	}
	if err == nil || ctx.Err() == nil {
		// A source that sealed meanwhile explains any difference; the
		// records appended from it are its records all the same: the retry
		// copies the new manifest over them.
		if moved := c.sourceStill(ctx, node, latest); errors.Is(moved, errSourceMoved) || err == nil {
			err = moved
		}
	}
	if cerr := j.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close the destination's journal: %w", cerr)
	}
	return err
}

// journalTail counts the records a read hands over.
type journalTail struct {
	records int
	version uint32
}

func (c *copier) tailOf(read func(func(journal.Record) error) error) (journalTail, error) {
	var t journalTail
	err := read(func(r journal.Record) error {
		t.records++
		t.version = r.Version
		return nil
	})
	return t, err
}

// sourceStill fails with errSourceMoved when the source node committed a
// manifest after latest: the journal records read may be sealed (and
// trimmed) there since.
func (c *copier) sourceStill(ctx context.Context, node string, latest *manifest.Manifest) error {
	m, err := c.src.LatestManifest(ctx, node)
	if err != nil {
		return err
	}
	if m.Seq != latest.Seq {
		return errSourceMoved
	}
	return nil
}

// openJournal opens the destination node's journal: a journal it does not
// hold yet is started at after+1 where the store's journals can do that
// (store.ErrJournalStartUnsupported where they cannot: a store server's).
func (c *copier) openJournal(ctx context.Context, node string, held bool, after uint64) (store.Journal, error) {
	if !held && c.dst.CanStartJournal() {
		j, err := c.dst.StartJournal(ctx, node, after+1, c.lease.owner)
		if err != nil {
			return nil, fmt.Errorf("start the destination's journal: %w", err)
		}
		return j, nil
	}
	j, err := c.dst.OpenJournal(ctx, node)
	if err != nil {
		return nil, fmt.Errorf("open the destination's journal: %w", err)
	}
	if _, ok := j.Last(); !ok && j.NextSeq()-1 < after && !c.dst.CanStartJournal() {
		j.Close()
		return nil, fmt.Errorf("%w (it would have to start at record %d; copy into the store's directory on the server's machine, file:///path/to/store, to copy them)",
			store.ErrJournalStartUnsupported, after+1)
	}
	return j, nil
}

// syncJournal makes the destination journal j's records after after equal
// to the source's (handed over by read, in order), with their seqs. The
// destination's own records are held (a copy's records; a few at most
// once copies run as often as compactions); the source's are streamed.
func (c *copier) syncJournal(ctx context.Context, j store.Journal, after uint64, read func(func(journal.Record) error) error, nc *NodeCopy) error {
	var have []journal.Record
	if err := j.Records(after, func(r journal.Record) error {
		have = append(have, r)
		return nil
	}); err != nil {
		return fmt.Errorf("read the destination's journal: %w", err)
	}
	k, diverged := 0, false
	nc.JournalHeld = 0
	err := read(func(r journal.Record) error {
		copyStep()
		if err := ctx.Err(); err != nil {
			return err
		}
		replace := false
		if !diverged && k < len(have) {
			if sameRecord(have[k], r) {
				k++
				nc.JournalHeld++
				nc.Version, nc.LastSeq = r.Version, r.Seq
				return nil
			}
			// The destination holds records the source no longer has:
			// only a rewind of the trailing version does that.
			v := have[len(have)-1].Version
			if r.Version != v || slices.ContainsFunc(have[k:], func(h journal.Record) bool { return h.Version != v }) {
				return fmt.Errorf("the destination's journal differs from the source's at record %d, in a way no rewind explains: remove the node from the destination and copy it again", have[k].Seq)
			}
			diverged, replace = true, true
		}
		if err := putRecord(j, r, replace); err != nil {
			return err
		}
		nc.JournalRecords++
		nc.JournalHeld++
		nc.Version, nc.LastSeq = r.Version, r.Seq
		return nil
	})
	if err != nil {
		return err
	}
	if !diverged && k < len(have) {
		return fmt.Errorf("the destination's journal holds record %d, which the source's lacks: remove the node from the destination and copy it again", have[k].Seq)
	}
	if err := j.Trim(after); err != nil {
		return fmt.Errorf("trim the destination's journal to record %d: %w", after, err)
	}
	return nil
}

// catchUp brings a journal that ends before the records latest covers
// (the source sealed and compacted records since the last copy) to the
// next record after them: empty records of latest's data_version, each
// replacing the one before, take the seqs up to latest.JournalSeq. Readers
// never see them (the manifest covers them), and the next record appended,
// or a rewind of its version, voids them. One durable write per record
// sealed since the last copy, a few dozen bytes each; Trim drops them.
func catchUp(j store.Journal, latest *manifest.Manifest) error {
	if j.NextSeq() > latest.JournalSeq {
		return nil
	}
	filler := journal.Record{Version: latest.LastVersion(), Time: latest.Created}
	got, err := j.Append(filler)
	for err == nil && got.Seq < latest.JournalSeq {
		got, err = j.Replace(filler)
	}
	if err != nil {
		return fmt.Errorf("advance the destination's journal to record %d: %w", latest.JournalSeq, err)
	}
	return nil
}

// sameRecord reports whether two records are the same change at the same
// seq.
func sameRecord(a, b journal.Record) bool {
	return a.Seq == b.Seq && a.Version == b.Version && a.Time.Equal(b.Time) && slices.Equal(a.Statements, b.Statements)
}

// putRecord appends r (or, with replace, replaces the trailing records of
// its version with it) and then, while the journal gave it a lower seq
// than r's (a gap the source's rewinds left), replaces it with itself
// until its seq is r's.
func putRecord(j store.Journal, r journal.Record, replace bool) error {
	var (
		got journal.Record
		err error
	)
	if replace {
		got, err = j.Replace(r)
	} else {
		got, err = j.Append(r)
	}
	for err == nil && got.Seq < r.Seq {
		got, err = j.Replace(r)
	}
	if err != nil {
		return fmt.Errorf("write record %d (data_version %d) to the destination's journal: %w", r.Seq, r.Version, err)
	}
	if got.Seq != r.Seq {
		return fmt.Errorf("the destination's journal gave record %d (data_version %d) seq %d: its numbering is ahead of the source's; remove the node from the destination and copy it again", r.Seq, r.Version, got.Seq)
	}
	return nil
}
