//go:build unix

package local

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/clnbackup/backup/store/backend"
)

// MapSpan maps length bytes at off of the object name read-only into
// memory, populated at once, and returns them with the function that
// unmaps them: a restore reads gigabytes of packs a span at a time, and
// copying them out of the page cache with pread (and faulting in the
// buffers it copies into) cost it a quarter of its CPU. The bytes are
// valid until unmap. Touching them after the file shrank faults (SIGBUS):
// a caller must read them with debug.SetPanicOnFault and recover.
func (b *Backend) MapSpan(ctx context.Context, name string, off, length int64) (data []byte, unmap func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	path, err := rel(name)
	if err != nil {
		return nil, nil, err
	}
	f, err := b.dir.Open(path)
	if err != nil {
		return nil, nil, b.fileErr("get", name, err)
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("get %s: %w", name, err)
	}
	if length, err = backend.CheckRange(name, off, length, st.Size()); err != nil {
		return nil, nil, err
	}
	if length == 0 {
		return []byte{}, func() {}, nil
	}
	pg := int64(os.Getpagesize())
	start := off / pg * pg
	m, err := syscall.Mmap(int(f.Fd()), start, int(off+length-start), syscall.PROT_READ, syscall.MAP_SHARED|mapPopulate)
	if err != nil {
		// A file system that cannot map (some FUSE and network ones)
		// is read as before.
		buf := make([]byte, length)
		if _, rerr := f.ReadAt(buf, off); rerr != nil {
			return nil, nil, fmt.Errorf("get %s: read %d bytes at %d (mapping them failed: %v): %w", name, length, off, err, rerr)
		}
		return buf, func() {}, nil
	}
	return m[off-start : off-start+length : off-start+length], func() { syscall.Munmap(m) }, nil
}
