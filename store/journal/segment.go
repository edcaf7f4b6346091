package journal

// Segment files and the directory: naming, listing, creating, scanning, and
// the durability primitives (fdatasync, directory fsync, flock).

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/clnbackup/backup/store/writeback"

	"golang.org/x/sys/unix"
)

const (
	lockName  = "LOCK"
	spareName = "spare.tmp" // the next segment, prepared ahead, without header
	tmpSuffix = ".tmp"      // temporary files: removed by Open
	segSuffix = ".seg"
)

// segment is one segment file as the journal knows it.
type segment struct {
	name  string // base name, <first seq as 16 hex digits>.seg
	first uint64 // seq of its first record (from name and header)
	end   int64  // offset after its last record
}

func segName(first uint64) string { return fmt.Sprintf("%016x%s", first, segSuffix) }

// parseSegName returns the first seq named by a segment file name.
func parseSegName(name string) (uint64, bool) {
	if len(name) != 16+len(segSuffix) || !strings.HasSuffix(name, segSuffix) {
		return 0, false
	}
	hex := name[:16]
	if strings.ToLower(hex) != hex {
		return 0, false
	}
	v, err := strconv.ParseUint(hex, 16, 64)
	if err != nil || v == 0 {
		return 0, false
	}
	return v, true
}

// listSegments returns dir's segments in seq order. A *.seg file with a
// malformed name is an error: something other than the journal wrote it.
func listSegments(dir string) ([]segment, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("journal %s: list segments: %w", dir, err)
	}
	var segs []segment
	for _, e := range ents { // sorted by name, so by seq (fixed-width hex)
		if !strings.HasSuffix(e.Name(), segSuffix) {
			continue
		}
		first, ok := parseSegName(e.Name())
		if !ok {
			return nil, fmt.Errorf("journal %s: unexpected file %s: not a segment name (16 lower-case hex digits of a non-zero seq, then .seg): %w", dir, e.Name(), ErrCorrupt)
		}
		segs = append(segs, segment{name: e.Name(), first: first})
	}
	return segs, nil
}

// segScan is what scanning a segment file found.
type segScan struct {
	first uint64     // seq of the first record, from the header
	next  uint64     // seq after the last valid record
	end   int64      // offset after the last valid record
	size  int64      // file size
	bad   *badRecord // first invalid record; nil if the records ended cleanly
}

// scanSegment checks the header of the open segment s against its name and
// reads its records, calling emit for each valid one, until the end marker or
// the first invalid record (reported in bad, not as an error: the caller
// decides between torn tail and corruption). The bytes after the end marker
// must be zero. Errors are I/O errors, a bad header, or emit's error.
func scanSegment(dir string, f *os.File, s segment, emit func([]byte, payloadHead) error) (segScan, error) {
	fi, err := f.Stat()
	if err != nil {
		return segScan{}, fmt.Errorf("journal %s: segment %s: %w", dir, s.name, err)
	}
	sc := segScan{size: fi.Size()}
	hdr := make([]byte, min(sc.size, headerSize))
	if _, err := f.ReadAt(hdr, 0); err != nil && err != io.EOF {
		return sc, fmt.Errorf("journal %s: segment %s: read header: %w", dir, s.name, err)
	}
	first, err := decodeHeader(hdr)
	if errors.Is(err, errUnknownVersion) {
		return sc, fmt.Errorf("journal %s: segment %s: %w", dir, s.name, err)
	}
	if err != nil {
		return sc, fmt.Errorf("journal %s: segment %s: %v: %w", dir, s.name, err, ErrCorrupt)
	}
	if first != s.first {
		return sc, fmt.Errorf("journal %s: segment %s: header says first seq %d, name says %d: %w", dir, s.name, first, s.first, ErrCorrupt)
	}
	sc.first = first
	sc.end, sc.next, sc.bad, err = scanRecords(f, headerSize, sc.size, first, true, emit)
	if err != nil {
		if _, ok := err.(emitError); ok {
			return sc, err.(emitError).err
		}
		return sc, fmt.Errorf("journal %s: segment %s: %w", dir, s.name, err)
	}
	return sc, nil
}

// emitError carries an error returned by an emit callback through
// scanRecords unwrapped.
type emitError struct{ err error }

func (e emitError) Error() string { return e.err.Error() }

// scanRecords reads the records of f from off to limit, the first carrying
// seq expect, and calls emit for each. It returns where and at which seq the
// valid records end, and the first invalid record if there is one.
func scanRecords(f io.ReaderAt, off, limit int64, expect uint64, zeroTail bool, emit func([]byte, payloadHead) error) (int64, uint64, *badRecord, error) {
	fr := newFrameReader(f, off, limit, expect, zeroTail)
	for {
		p, h, bad, err := fr.next()
		if err != nil {
			return fr.off, fr.expect, nil, err
		}
		if bad != nil || p == nil {
			return fr.off, fr.expect, bad, nil
		}
		if emit != nil {
			if err := emit(p, h); err != nil {
				return fr.off, fr.expect, nil, emitError{err}
			}
		}
	}
}

// readFrom returns f's bytes from off to size.
func readFrom(f io.ReaderAt, off, size int64) ([]byte, error) {
	b := make([]byte, size-off)
	n, err := f.ReadAt(b, off)
	if err == io.EOF {
		err = nil
	}
	return b[:n], err
}

// zeros is a source of zero bytes for writes.
var zeros = make([]byte, 1<<18)

// zeroRange writes zeros to f over [from, to).
func zeroRange(f *os.File, from, to int64) error {
	for from < to {
		n := min(to-from, int64(len(zeros)))
		if _, err := f.WriteAt(zeros[:n], from); err != nil {
			return err
		}
		from += n
	}
	return nil
}

// preallocStep is how many zero bytes preallocate writes between syncs.
const preallocStep = 256 << 10

// preallocate creates path (replacing any old file) and fills it with size
// zero bytes written for real, then fsyncs it: the blocks are allocated and
// the size is durable, so later fdatasyncs of records written over the zeros
// carry no metadata (DESIGN.md, "The hot path"). It syncs every
// preallocStep bytes: on ext4 an fdatasync of the active segment can wait
// for other files' dirty data, so one large flush would stall appends
// (docs/benchmark.md, "Journal segments").
func preallocate(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	for off := int64(0); off < size && err == nil; off += preallocStep {
		if err = zeroRange(f, off, min(size, off+preallocStep)); err == nil {
			err = fdatasync(f)
		}
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

// installSegment turns the preallocated temporary file f at tmp into the
// segment whose first record will have seq first: header, fdatasync, rename
// into place, fsync of the directory. When it returns nil the (empty)
// segment survives a crash.
func installSegment(dir string, f *os.File, tmp string, first uint64) (string, error) {
	if _, err := f.WriteAt(encodeHeader(first), 0); err != nil {
		return "", err
	}
	if err := fdatasync(f); err != nil {
		return "", err
	}
	name := segName(first)
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return "", err
	}
	return name, fsyncDir(dir)
}

// syncCount counts fdatasync calls (Fdatasyncs).
var syncCount atomic.Uint64

// Fdatasyncs is the number of fdatasyncs of journal files this process
// has made: the flush budget acknowledgements cost (a server's metric).
func Fdatasyncs() uint64 { return syncCount.Load() }

// fdatasync flushes f's data (and the metadata needed to read it back).
func fdatasync(f *os.File) error {
	syncCount.Add(1)
	// A node waits for this sync: bulk writers of this process hold
	// their next step back until it is done.
	defer writeback.Urgent()()
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// fsyncDir makes the creation, renaming and removal of dir's entries durable.
func fsyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// makeDir creates dir if it is missing and makes its entry durable.
func makeDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return fsyncDir(filepath.Dir(filepath.Clean(dir)))
}

// lockDir takes the exclusive flock on dir/LOCK that makes the caller the
// journal's only writer. flock locks belong to the open file description, so
// a second Open in the same process is refused as well.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal %s: open lock file: %w", dir, err)
	}
	ferr := flockNB(f)
	if ferr != nil {
		f.Close()
		if errors.Is(ferr, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("journal %s: %w: %s is held by another writer (a running plugin?)", dir, ErrLocked, path)
		}
		return nil, fmt.Errorf("journal %s: lock %s: %w", dir, path, ferr)
	}
	return f, nil
}

// removeTemps deletes the temporary files a crash may have left: a segment
// being created or the spare. They were never part of the journal.
func removeTemps(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), tmpSuffix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}
