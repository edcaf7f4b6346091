//go:build !linux

package writeback

import "os"

// Without sync_file_range the writes are not paced; fsync still makes
// them durable.
func pace(*os.File, int64, int64) error   { return nil }
func settle(*os.File, int64, int64) error { return nil }
