package writeback

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// settle writes back [off, off+n) and waits for it.
func settle(f *os.File, off, n int64) error {
	return ignoreUnsupported(unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER))
}

// syncData makes the disk write its cache out by syncing f, which holds
// no dirty pages but those just written back (as any sync would).
func syncData(f *os.File) error {
	return ignoreUnsupported(unix.Fdatasync(int(f.Fd())))
}

// scratch is a nameless file in dir, one page overwritten and synced to
// flush the disk's cache without writing anything else (syncing a clean
// file does not flush it). Where the file system has no nameless files
// (O_TMPFILE), nothing is flushed.
type scratch struct {
	dir    string
	f      *os.File
	failed bool
}

// scratchPage is what the scratch file is overwritten with.
var scratchPage [4096]byte

func (s *scratch) flush() error {
	if s.failed {
		return nil
	}
	if s.f == nil {
		fd, err := unix.Open(s.dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o600)
		if err != nil {
			s.failed = true
			return nil
		}
		s.f = os.NewFile(uintptr(fd), filepath.Join(s.dir, "(flush scratch)"))
	}
	if _, err := s.f.WriteAt(scratchPage[:], 0); err != nil {
		return fmt.Errorf("write the scratch page in %s: %w", s.dir, err)
	}
	return ignoreUnsupported(unix.Fdatasync(int(s.f.Fd())))
}

func (s *scratch) close() {
	if s.f != nil {
		s.f.Close()
	}
}

// dirtyBytes returns the bytes of [off, off+n) of f that wait in the page
// cache to be written back, or n if the kernel cannot tell (before 6.5).
func dirtyBytes(f *os.File, off, n int64) int64 {
	var st unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{Off: uint64(off), Len: uint64(n)}, &st, 0); err != nil {
		return n
	}
	return int64(st.Dirty+st.Writeback) * int64(os.Getpagesize())
}

// ignoreUnsupported: a file system without sync_file_range (some network
// ones) just gets no pacing; the caller's fsync still makes data durable.
func ignoreUnsupported(err error) error {
	if err == unix.ENOSYS || err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.ESPIPE {
		return nil
	}
	return err
}
