//go:build !linux

package writeback

import "os"

// Without sync_file_range the writes are not paced; fsync still makes
// them durable.
func settle(*os.File, int64, int64) error { return nil }

func syncData(f *os.File) error { return f.Sync() }

// dirtyBytes cannot tell: all n may be dirty.
func dirtyBytes(_ *os.File, _, n int64) int64 { return n }

// scratch flushes nothing here: f.Sync of a drained file would write all
// its dirty pages at once.
type scratch struct{ dir string }

func (*scratch) flush() error { return nil }
func (*scratch) close()       {}
