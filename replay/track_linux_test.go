package replay

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestHarvestLeavesWALInCache: reading the WAL at a harvest does not write
// it back. On ext4, closing a file that was truncated to 0 (as each
// checkpoint leaves the WAL) writes its dirty pages back; the harvests hold
// the WAL open instead, so its frames stay in the page cache until the
// checkpoint frees them. Checked by the WAL's extents (written ones are not
// delayed-allocation ones), on ext4 only.
func TestHarvestLeavesWALInCache(t *testing.T) {
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil || fs.Type != unix.EXT4_SUPER_MAGIC {
		t.Skip("the write-back on close is ext4's (auto_da_alloc)")
	}
	old := walHarvestBytes
	walHarvestBytes = 16 << 10
	t.Cleanup(func() { walHarvestBytes = old })
	recs := mustRecords(t, "../testdata/trace1.jsonl")
	path := filepath.Join(dir, "db.sqlite3")
	d := mustOpen(t, path)
	mustApply(t, d, recs[:len(recs)/2]...)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	tr, err := OpenTracking(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	harvests := 0
	for _, r := range recs[len(recs)/2:] {
		before, _ := os.Stat(path + "-wal")
		if err := tr.ApplyTracked(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		after, _ := os.Stat(path + "-wal")
		if before != nil && after != nil && after.Size() < before.Size() {
			harvests++
		}
		if harvests < 2 || after == nil || after.Size() == 0 {
			continue
		}
		// Frames written since a checkpoint truncated the WAL: read
		// them as a harvest does, and they must still be unwritten.
		if err := tr.track.readWAL(); err != nil {
			t.Fatal(err)
		}
		if written := writtenExtents(t, path+"-wal"); written > 0 {
			t.Fatalf("reading the %d-byte WAL wrote %d extents of it back", after.Size(), written)
		}
		return
	}
	t.Fatalf("the trace made %d harvests and no WAL after them", harvests)
}

// writtenExtents counts the extents of the file at path that are on the
// disk, not waiting in the page cache for delayed allocation (FIEMAP).
func writtenExtents(t *testing.T, path string) int {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const extents, extentSize, headerSize = 32, 56, 32
	const fsIocFiemap, extentDelalloc = 0xC020660B, 0x4
	buf := make([]byte, headerSize+extents*extentSize)
	binary.NativeEndian.PutUint64(buf[8:], ^uint64(0)) // fm_length: all
	binary.NativeEndian.PutUint32(buf[24:], extents)   // fm_extent_count
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		t.Skipf("FIEMAP of %s: %v", path, errno)
	}
	written := 0
	for i := range int(binary.NativeEndian.Uint32(buf[20:])) { // fm_mapped_extents
		flags := binary.NativeEndian.Uint32(buf[headerSize+i*extentSize+40:])
		if flags&extentDelalloc == 0 {
			written++
		}
	}
	return written
}
