package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// DefaultWALSize is the preallocated size of a write-ahead log: when it is
// full, the node journals written since the last reset are synced (one
// fdatasync each) and it starts over. At 1.5 KB a change that is about
// 10,000 changes between resets.
const DefaultWALSize = 16 << 20

// WAL is a store-wide write-ahead log that makes the appends of many node
// journals durable together (group commit): a journal opened with
// Options.WAL writes its record into its segment without fdatasync, then
// into the WAL, and returns only once a fdatasync of the WAL covering the
// record has returned. Appends from many nodes arriving together share one
// fdatasync. When the WAL is full, every journal with unsynced records is
// fdatasync'ed before the WAL starts over, so every acknowledged record is
// durable in the WAL or in its journal at every moment. OpenWAL replays
// what a crash left into the node journals. One process holds a WAL
// (flock); a WAL is safe for concurrent use.
type WAL struct {
	path string
	f    *os.File
	size int64 // the preallocated size: a reset is due past it

	mu   sync.Mutex
	cond *sync.Cond
	gen  uint64 // current generation (header)
	off  int64  // where the next batch is written
	// buf collects the frames of the batch being filled (batch); a
	// leader takes it, writes and syncs it, and sets synced = batch+1.
	buf, spare []byte
	batch      uint64
	synced     uint64
	flushing   bool
	failed     error // sticky: after a failed write or sync nothing is certain
	closed     bool
	presyncing bool // a presync runs; gen it started in: presyncGen
	presyncGen uint64
	syncs      uint64 // fdatasyncs made, of the WAL and at resets

	// jmu guards the journals written through this WAL.
	jmu      sync.Mutex
	journals map[*Journal]struct{}
}

// WALOptions tune OpenWAL.
type WALOptions struct {
	// Size is the preallocated size (DefaultWALSize when 0).
	Size int64
	// Dir names the journal directory of a node, for replay; it must
	// reject names that are not node names.
	Dir func(node string) (string, error)
}

// OpenWAL opens (creating it if missing) the write-ahead log at path,
// taking its flock (ErrLocked if another process holds it), replays the
// records a crash left in it into the node journals (see replayWAL) and
// resets it. Close it after the journals opened with it.
func OpenWAL(path string, opts WALOptions) (*WAL, error) {
	if opts.Size == 0 {
		opts.Size = DefaultWALSize
	}
	if opts.Size < walDataStart+minFrameSize+walFixed {
		return nil, fmt.Errorf("write-ahead log %s: size %d is too small", path, opts.Size)
	}
	f, err := openWALFile(path, opts.Size)
	if err != nil {
		return nil, err
	}
	w := &WAL{path: path, f: f, size: opts.Size, journals: map[*Journal]struct{}{}}
	w.cond = sync.NewCond(&w.mu)
	if err := w.recover(opts.Dir); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// openWALFile opens and locks the WAL, creating it preallocated (zeros,
// then a header of generation 1 in slot 1) if it does not exist.
func openWALFile(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		f, err = createWALFile(path, size)
	}
	if err != nil {
		return nil, fmt.Errorf("write-ahead log %s: open: %w", path, err)
	}
	if err := flockNB(f); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("write-ahead log %s: %w: another process (a running backup-cli server?) holds it", path, ErrLocked)
		}
		return nil, fmt.Errorf("write-ahead log %s: lock: %w", path, err)
	}
	return f, nil
}

// createWALFile makes a new WAL under a temporary name and renames it into
// place once its header is durable, so that a WAL file always has one.
func createWALFile(path string, size int64) (*os.File, error) {
	tmp := path + tmpSuffix
	f, err := preallocate(tmp, size)
	if err != nil {
		return nil, err
	}
	if _, err = f.WriteAt(encodeWALSlot(1), walSlotOffset(1)); err == nil {
		err = fdatasync(f)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = fsyncDirOf(path)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	return f, nil
}

// flockNB takes an exclusive flock on f without waiting.
func flockNB(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// Path is the WAL's file.
func (w *WAL) Path() string { return w.path }

// Syncs is the number of fdatasyncs the WAL has made: of batches, and of
// node journals at resets.
func (w *WAL) Syncs() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.syncs
}

// attach registers a journal whose unsynced writes a reset must sync.
func (w *WAL) attach(j *Journal) {
	w.jmu.Lock()
	w.journals[j] = struct{}{}
	w.jmu.Unlock()
}

// detach forgets a journal (Close synced it).
func (w *WAL) detach(j *Journal) {
	w.jmu.Lock()
	delete(w.journals, j)
	w.jmu.Unlock()
}

// commit adds the journal frame jframe of node to the WAL and returns once
// it is durable. The first caller to find no flush in progress leads: it
// takes every frame queued so far, writes them with one WriteAt and makes
// them durable with one fdatasync; the others wait for it.
func (w *WAL) commit(node string, jframe []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("write-ahead log %s: %w", w.path, ErrClosed)
	}
	if w.failed != nil {
		return fmt.Errorf("write-ahead log %s: an earlier write failed, restart the server (the log is replayed on open): %w", w.path, w.failed)
	}
	// The generation and crc are stamped by the leader that writes it: a
	// reset may come between.
	w.buf = appendWALFrame(w.buf, 0, node, jframe)
	my := w.batch
	for w.synced <= my {
		if w.flushing {
			w.cond.Wait()
			continue
		}
		w.lead()
	}
	if w.failed != nil {
		return fmt.Errorf("write-ahead log %s: %w", w.path, w.failed)
	}
	return nil
}

// lead writes and syncs the batch being filled; called with mu held, it
// releases it while doing I/O.
func (w *WAL) lead() {
	w.flushing = true
	buf, b := w.buf, w.batch
	w.buf, w.spare = w.spare[:0], nil
	w.batch++
	gen, off := w.gen, w.off
	w.mu.Unlock()
	var err error
	syncs := uint64(1)
	if off > walDataStart && off+int64(len(buf)) > w.size {
		var n uint64
		n, err = w.reset(gen + 1)
		syncs += n
		gen, off = gen+1, walDataStart
	}
	restamp(buf, gen)
	if err == nil {
		_, err = w.f.WriteAt(buf, off)
	}
	if err == nil {
		err = fdatasync(w.f)
	}
	w.mu.Lock()
	w.gen, w.off = gen, off+int64(len(buf))
	if cap(buf) <= 4<<20 {
		w.spare = buf[:0]
	}
	w.syncs += syncs
	if err != nil && w.failed == nil {
		w.failed = err
	}
	w.synced, w.flushing = b+1, false
	if w.failed == nil && !w.presyncing && w.presyncGen != w.gen && w.off-walDataStart > (w.size-walDataStart)/2 {
		w.presyncing, w.presyncGen = true, w.gen
		go w.presync()
	}
	w.cond.Broadcast()
}

// restamp sets the generation of every frame in buf and their crcs.
func restamp(buf []byte, gen uint64) {
	for off := 0; off+frameHeaderSize <= len(buf); {
		n := int(le.Uint32(buf[off:]))
		body := buf[off+frameHeaderSize : off+frameHeaderSize+n]
		le.PutUint64(body, gen)
		le.PutUint32(buf[off+4:], crc32c(body))
		off += frameHeaderSize + n
	}
}

// reset makes every record written to the attached journals durable there,
// then starts generation gen: the frames of the older one are dead. It
// returns the fdatasyncs made. Only a leader (or recovery) calls it.
func (w *WAL) reset(gen uint64) (uint64, error) {
	n, err := w.syncJournals()
	if err != nil {
		return n, err
	}
	if _, err := w.f.WriteAt(encodeWALSlot(gen), walSlotOffset(gen)); err != nil {
		return n, fmt.Errorf("write header: %w", err)
	}
	if err := fdatasync(w.f); err != nil {
		return n, fmt.Errorf("sync header: %w", err)
	}
	return n + 1, nil
}

// syncWorkers is how many journals a reset fdatasyncs at once: a disk
// flushes several files faster together than one after the other, and
// appends wait for the reset.
const syncWorkers = 8

// syncJournals fdatasyncs every attached journal with unsynced writes and
// returns how many it synced.
func (w *WAL) syncJournals() (uint64, error) {
	w.jmu.Lock()
	js := make(chan *Journal, len(w.journals))
	for j := range w.journals {
		js <- j
	}
	w.jmu.Unlock()
	close(js)
	var n atomic.Uint64
	errs := make([]error, syncWorkers)
	var wg sync.WaitGroup
	for k := range syncWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range js {
				synced, err := j.syncDirty()
				if synced {
					n.Add(1)
				}
				if err != nil && errs[k] == nil {
					errs[k] = fmt.Errorf("sync journal %s before reusing the write-ahead log: %w", j.dir, err)
				}
			}
		}()
	}
	wg.Wait()
	return n.Load(), errors.Join(errs...)
}

// presync syncs the journals in the background once the WAL is half
// full, so that the reset, which appends wait for, finds little to flush.
// A failed fdatasync is sticky: the kernel may have dropped the pages it
// could not write, so a later one succeeding proves nothing.
func (w *WAL) presync() {
	n, err := w.syncJournals()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.syncs += n
	if err != nil && w.failed == nil {
		w.failed = err
	}
	w.presyncing = false
	w.cond.Broadcast()
}

// Close closes the WAL. Close the journals opened with it first: their
// Close syncs them, and the WAL then starts a new generation. Records of
// journals still open stay in the WAL until the next open replays them.
func (w *WAL) Close() error {
	w.mu.Lock()
	for w.flushing || w.presyncing {
		w.cond.Wait()
	}
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	// With every journal closed (synced), nothing in the log is needed:
	// a new generation spares the next open a replay.
	w.jmu.Lock()
	idle := len(w.journals) == 0
	w.jmu.Unlock()
	var rerr error
	if idle && w.failed == nil && w.off > walDataStart {
		_, rerr = w.reset(w.gen + 1)
	}
	if err := errors.Join(rerr, w.f.Close()); err != nil {
		return fmt.Errorf("write-ahead log %s: close: %w", w.path, err)
	}
	return nil
}
