package writeback

import (
	"os"

	"golang.org/x/sys/unix"
)

// pace starts the writeback of [off, off+n) and waits for the step before
// it, so that about two steps are in flight at a time.
func pace(f *os.File, off, n int64) error {
	fd := int(f.Fd())
	if err := unix.SyncFileRange(fd, off, n, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		return ignoreUnsupported(err)
	}
	if off == 0 {
		return nil
	}
	prev := max(0, off-Step)
	return ignoreUnsupported(unix.SyncFileRange(fd, prev, off-prev, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER))
}

// settle writes back [off, off+n) and waits for it.
func settle(f *os.File, off, n int64) error {
	return ignoreUnsupported(unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER))
}

// ignoreUnsupported: a file system without sync_file_range (some network
// ones) just gets no pacing; the caller's fsync still makes data durable.
func ignoreUnsupported(err error) error {
	if err == unix.ENOSYS || err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.ESPIPE {
		return nil
	}
	return err
}
