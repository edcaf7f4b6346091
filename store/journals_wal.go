package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/clnbackup/backup/store/journal"
)

// WALName is the store-wide write-ahead log of group commit
// (Options.GroupCommit), in the directory of the node journals; a dot
// file, so never listed as an object.
const WALName = ".journals.wal"

// walPath is the write-ahead log of these journals.
func (j *dirJournals) walPath() string { return filepath.Join(j.be.Root(), WALName) }

// setupWAL prepares the journals for use. With group commit it opens the
// write-ahead log (replaying what a crash left) and keeps it: appends of
// all nodes then share fdatasyncs. Without, it still replays a log a
// crashed server left, unless a live process holds it (that process
// replayed it when it opened it, and its journals are consistent).
func (j *dirJournals) setupWAL(groupCommit bool, walSize int64) error {
	path := j.walPath()
	if !groupCommit {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
	}
	w, err := journal.OpenWAL(path, journal.WALOptions{Size: walSize, Dir: j.dir})
	if err != nil {
		if !groupCommit && errors.Is(err, journal.ErrLocked) {
			return nil
		}
		return fmt.Errorf("journals in %s: %w", j.be.Root(), err)
	}
	if !groupCommit {
		return w.Close()
	}
	j.wal = w
	return nil
}

// journalOptions are the options node's journal is opened with.
func (j *dirJournals) journalOptions(node string, firstSeq uint64) journal.Options {
	return journal.Options{FirstSeq: firstSeq, WAL: j.wal, Node: node}
}

// close closes the write-ahead log, if group commit opened one. The
// journals opened with it must be closed first.
func (j *dirJournals) close() error {
	if j.wal == nil {
		return nil
	}
	return j.wal.Close()
}

// GroupCommitSyncs is the number of fdatasyncs the store's group commit
// made (0 without group commit): for the server's metrics and benchmarks.
func GroupCommitSyncs(s *Store) uint64 {
	if dj := dirJournalsOf(s.journals); dj != nil && dj.wal != nil {
		return dj.wal.Syncs()
	}
	return 0
}

// dirJournalsOf returns the directory journals under js (sealed for an
// encrypted store, or not), or nil.
func dirJournalsOf(js Journals) *dirJournals {
	if sj, ok := js.(*sealedJournals); ok {
		js = sj.Journals
	}
	dj, _ := js.(*dirJournals)
	return dj
}
