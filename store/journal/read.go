package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// resolver turns the physical records into the logical view: a replace
// record of version V removes the trailing records of version V, then counts
// as an ordinary record. Only the trailing run of records sharing a version
// can still be replaced, so that run is all it holds back; every earlier
// record is passed on as soon as the version changes.
type resolver struct {
	after uint64
	fn    func(Record) error
	group []Record // trailing records sharing one version
}

func (z *resolver) add(p []byte, h payloadHead) error {
	if len(z.group) > 0 && z.group[0].Version != h.version {
		if err := z.flush(); err != nil {
			return err
		}
	}
	if h.kind == kindReplace {
		clear(z.group)
		z.group = z.group[:0]
	}
	if h.seq <= z.after {
		// Never passed to fn: only its version matters.
		z.group = append(z.group, Record{Seq: h.seq, Version: h.version})
	} else {
		z.group = append(z.group, decodePayload(p, h))
	}
	return nil
}

func (z *resolver) flush() error {
	for _, r := range z.group {
		if r.Seq > z.after {
			if err := z.fn(r); err != nil {
				return err
			}
		}
	}
	clear(z.group)
	z.group = z.group[:0]
	return nil
}

// checkAfter fails with ErrTrimmed when records after afterSeq are no longer
// all in the journal, whose oldest segment starts at first.
func checkAfter(dir string, afterSeq, first uint64) error {
	if afterSeq < first-1 {
		return fmt.Errorf("journal %s: records after seq %d: the journal starts at seq %d: %w", dir, afterSeq, first, ErrTrimmed)
	}
	return nil
}

// skippable reports whether segment i of segs holds no record with
// Seq > afterSeq (the next segment starts at or before afterSeq+1).
func skippable(segs []segment, i int, afterSeq uint64) bool {
	return i+1 < len(segs) && segs[i+1].first-1 <= afterSeq
}

// Records calls fn for each logical record with Seq > afterSeq, in seq
// order: replacements are resolved, so a replaced record is never passed.
// It reads the records durable when it is called; it is safe to call while
// other goroutines Append. Memory is bounded by the trailing run of records
// sharing one version, not by the journal's size. An error from fn stops the
// iteration and is returned as is. fn must not call Trim, Close or Records
// (they wait for this call to end); Append, Last and the rest are fine.
//
// A replace record voids records of its version even when they are at or
// before afterSeq; those were passed to an earlier caller and cannot be
// recalled. A caller that resumes after afterSeq recognises that rewind: fn
// gets a record that is not PragmaOnly and has the Version of the last
// record the caller consumed.
//
// It fails with ErrTrimmed if records after afterSeq have been trimmed.
func (j *Journal) Records(afterSeq uint64, fn func(Record) error) error {
	j.trimMu.RLock()
	defer j.trimMu.RUnlock()
	j.mu.Lock()
	closed, segs := j.closed, slices.Clone(j.segs)
	j.mu.Unlock()
	if closed {
		return fmt.Errorf("journal %s: records after seq %d: %w", j.dir, afterSeq, ErrClosed)
	}
	if err := checkAfter(j.dir, afterSeq, segs[0].first); err != nil {
		return err
	}
	z := &resolver{after: afterSeq, fn: fn}
	for i, s := range segs {
		if skippable(segs, i, afterSeq) {
			continue
		}
		if err := j.readSegment(s, z); err != nil {
			return err
		}
	}
	return z.flush()
}

// readSegment passes the records of s, up to its known end, to z.
func (j *Journal) readSegment(s segment, z *resolver) error {
	f, err := os.Open(filepath.Join(j.dir, s.name))
	if err != nil {
		return fmt.Errorf("journal %s: read segment %s: %w", j.dir, s.name, err)
	}
	defer f.Close()
	end, _, bad, err := scanRecords(f, headerSize, s.end, s.first, false, z.add)
	if ee, ok := err.(emitError); ok {
		return ee.err
	}
	if err != nil {
		return fmt.Errorf("journal %s: read segment %s: %w", j.dir, s.name, err)
	}
	if bad != nil {
		return fmt.Errorf("journal %s: segment %s %s (changed after it was written): %w", j.dir, s.name, bad, ErrCorrupt)
	}
	if end != s.end {
		return fmt.Errorf("journal %s: segment %s: records end at offset %d, written up to %d: %w", j.dir, s.name, end, s.end, ErrCorrupt)
	}
	return nil
}

// Read is the read-only view of the journal in dir for tools (restore, list)
// that may run while the plugin writes: it takes no lock and never modifies
// a file. It calls fn like Records. In the newest segment a partial or
// damaged record ends the log (an append in progress, or a torn tail the
// writer will drop), unless a valid record follows it: that is corruption
// (ErrCorrupt), as Open would find. Damage in any other segment is
// ErrCorrupt. It fails with ErrTrimmed if records after afterSeq have been
// trimmed, and returns nil without calling fn if dir holds no segment.
func Read(dir string, afterSeq uint64, fn func(Record) error) error {
	segs, err := listSegments(dir)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		return nil
	}
	if err := checkAfter(dir, afterSeq, segs[0].first); err != nil {
		return err
	}
	z := &resolver{after: afterSeq, fn: fn}
	var next uint64
	started := false
	for i, s := range segs {
		if skippable(segs, i, afterSeq) {
			continue
		}
		sc, err := readOnlySegment(dir, s, i == len(segs)-1, z)
		if err != nil {
			return err
		}
		if started && sc.first != next {
			return fmt.Errorf("journal %s: segment %s starts at seq %d, but the seq after the previous segment's records is %d (segment missing or damaged): %w", dir, s.name, sc.first, next, ErrCorrupt)
		}
		next, started = sc.next, true
	}
	return z.flush()
}

// readOnlySegment passes the records of segment s to z without modifying it.
func readOnlySegment(dir string, s segment, newest bool, z *resolver) (segScan, error) {
	f, err := os.Open(filepath.Join(dir, s.name))
	if errors.Is(err, fs.ErrNotExist) {
		return segScan{}, fmt.Errorf("journal %s: segment %s disappeared while reading (trimmed by the writer?): %w", dir, s.name, err)
	}
	if err != nil {
		return segScan{}, fmt.Errorf("journal %s: open segment %s: %w", dir, s.name, err)
	}
	defer f.Close()
	sc, err := scanSegment(dir, f, s, z.add)
	if err != nil || sc.bad == nil {
		return sc, err
	}
	if !newest {
		return sc, fmt.Errorf("journal %s: segment %s %s (not the newest segment, so not a torn append): %w", dir, s.name, sc.bad, ErrCorrupt)
	}
	for sc.bad != nil {
		x := sc.bad.off
		tail, err := readFrom(f, x, sc.size)
		if err != nil {
			return sc, fmt.Errorf("journal %s: segment %s: read tail: %w", dir, s.name, err)
		}
		found, at, seq, _ := findValidAfter(tail, x, sc.first, sc.next-1)
		if !found {
			break // partial or torn last record: the end of the log
		}
		// The writer may have been in the middle of appending the record at
		// x when it was read; it writes records in order, so the record at x
		// is complete now that a later one is visible. Read again from x.
		end, next, bad, err := scanRecords(f, x, sc.size, sc.next, true, z.add)
		if ee, ok := err.(emitError); ok {
			return sc, ee.err
		}
		if err != nil {
			return sc, fmt.Errorf("journal %s: segment %s: %w", dir, s.name, err)
		}
		if bad != nil && bad.off == x {
			return sc, fmt.Errorf("journal %s: segment %s: damaged record at %s, yet a valid record (seq %d) follows at offset %d: "+
				"acknowledged changes are unreadable: %w", dir, s.name, bad, seq, at, ErrCorrupt)
		}
		sc.end, sc.next, sc.bad = end, next, bad
	}
	return sc, nil
}

// Check reads every record the journal in dir holds, from its oldest
// segment on, without modifying a file: the plugin's Open refuses a
// journal with damage in any segment, even in records a manifest already
// covers. A journal trimmed while it is read is not damaged; a dir with no
// segment holds nothing to check.
func Check(dir string) error {
	segs, err := listSegments(dir)
	if err != nil || len(segs) == 0 {
		return err
	}
	err = Read(dir, segs[0].first-1, func(Record) error { return nil })
	if errors.Is(err, ErrTrimmed) || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
