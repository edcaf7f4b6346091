package history

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/clnbackup/backup/replay"
)

// LiveDataVersion reads the data_version of the node's database at dbPath
// (ok=false when it has none) without writing it: straight from the file,
// or, when lightningd left a hot rollback journal, from a private copy
// rolled back to the last commit (as Init snapshots it). init
// --import-legacy compares it with the backup before importing.
func LiveDataVersion(ctx context.Context, dbPath string) (v uint32, ok bool, err error) {
	hot, err := hasHotJournal(ctx, dbPath)
	if err != nil {
		return 0, false, fmt.Errorf("read data_version of %s: %w", dbPath, err)
	}
	if !hot {
		return replay.DataVersionOf(dbPath)
	}
	tmpDir, err := os.MkdirTemp(filepath.Dir(dbPath), ".backup-version-*")
	if err != nil {
		return 0, false, fmt.Errorf("read data_version of %s: private directory for a copy: %w", dbPath, err)
	}
	defer os.RemoveAll(tmpDir)
	dbCopy, err := copyNodeDatabase(ctx, dbPath, tmpDir)
	if err != nil {
		return 0, false, fmt.Errorf("read data_version of %s: copy: %w", dbPath, err)
	}
	return replay.DataVersionOf(dbCopy)
}
