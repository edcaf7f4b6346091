package packs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
)

// The condemned record: the chunk copies gc has condemned, with when (see
// gc.go). gc writes a whole new record each run; writers load the newest.

const (
	condemnedPrefix = "gc/condemned/"
	condemnedMagic  = "CLNCOND1"
	condemnedEntry  = 2*chunker.IDSize + 8
)

// newestCondemned loads the newest condemned record (each gc run writes the
// whole set of pending copies; older records are superseded).
func newestCondemned(ctx context.Context, be backend.Backend) (condemnedSet, string, error) {
	set, name, _, err := readNewestCondemned(ctx, be, func(string) bool { return false })
	return set, name, err
}

// readNewestCondemned is newestCondemned, except that it does not read the
// record (and read is false) when have(name) says the caller has it.
func readNewestCondemned(ctx context.Context, be backend.Backend, have func(string) bool) (set condemnedSet, name string, read bool, err error) {
	var newest string
	var data []byte
	for try := 0; ; try++ {
		newest = ""
		err := be.List(ctx, condemnedPrefix, func(in backend.Info) error {
			if in.Name > newest {
				newest = in.Name
			}
			return nil
		})
		if err != nil {
			return nil, "", false, fmt.Errorf("list condemned records: %w", err)
		}
		if newest == "" {
			return nil, "", false, nil
		}
		if have(newest) {
			return nil, newest, false, nil
		}
		bound, err := maxCondemnedSize(ctx, be)
		if err != nil {
			return nil, "", false, err
		}
		data, err = backend.ReadWhole(ctx, be, newest, bound)
		if errors.Is(err, backend.ErrNotFound) && try < 10 {
			continue // a gc wrote a newer record and removed this one
		}
		if err != nil {
			return nil, "", false, fmt.Errorf("read condemned record %s: %w", newest, err)
		}
		break
	}
	set, err = decodeCondemned(data)
	if err != nil {
		return nil, "", false, fmt.Errorf("condemned record %s: %w", newest, err)
	}
	return set, newest, true, nil
}

// condemnedSlack is how many entries a condemned record may hold beyond
// the store's index entries (see maxCondemnedSize).
const condemnedSlack = 1 << 20

// maxCondemnedSize bounds a condemned record by the store's index: it lists
// copies the indexes name, at most one entry per index entry (the smallest
// index entry is indexEntryLen bytes), plus condemnedSlack entries for
// copies whose index a gc removed before writing the next record. Every
// lookup of a restore reads the record whole, so a store that lies about it
// must not be able to make the restoring node allocate whatever it claims;
// the cost is one listing of the index objects per new record.
func maxCondemnedSize(ctx context.Context, be backend.Backend) (int64, error) {
	var indexBytes int64
	err := be.List(ctx, indexPrefix, func(in backend.Info) error {
		indexBytes += max(0, min(in.Size, maxIndexSize))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list the index to bound the condemned record: %w", err)
	}
	return 12 + condemnedEntry*(indexBytes/indexEntryLen+condemnedSlack), nil
}

// loadCondemned makes writers of this Store see the newest condemned record.
func (p *Packs) loadCondemned(ctx context.Context) error {
	set, name, read, err := readNewestCondemned(ctx, p.be, func(name string) bool {
		p.mu.RLock()
		defer p.mu.RUnlock()
		return p.condemnedLoaded[name]
	})
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !read || p.condemnedLoaded[name] {
		return nil
	}
	p.condemned = set
	p.condemnedLoaded = map[string]bool{name: true}
	return nil
}

// condemnedRecord is a condemned record being built, in its stored form
// (so that a store's millions of condemned copies are held once, at 72
// bytes each).
type condemnedRecord struct{ b []byte }

func newCondemnedRecord(sizeHint int) *condemnedRecord {
	b := make([]byte, 12, 12+sizeHint*condemnedEntry)
	copy(b, condemnedMagic)
	return &condemnedRecord{b}
}

// add adds a copy condemned at when (unix nanoseconds; 0: when the record
// is written).
func (r *condemnedRecord) add(c chunkCopy, when int64) {
	r.b = append(r.b, c.id[:]...)
	r.b = append(r.b, c.pack[:]...)
	r.b = binary.BigEndian.AppendUint64(r.b, uint64(when))
}

// recordEntries sorts a record's entries by chunk id and pack.
type recordEntries []byte

func (e recordEntries) Len() int { return len(e) / condemnedEntry }
func (e recordEntries) Less(i, j int) bool {
	const k = 2 * chunker.IDSize
	return bytes.Compare(e[i*condemnedEntry:i*condemnedEntry+k], e[j*condemnedEntry:j*condemnedEntry+k]) < 0
}
func (e recordEntries) Swap(i, j int) {
	var t [condemnedEntry]byte
	a, b := e[i*condemnedEntry:(i+1)*condemnedEntry], e[j*condemnedEntry:(j+1)*condemnedEntry]
	copy(t[:], a)
	copy(a, b)
	copy(b, t[:])
}

// writeCondemned writes the record, sorted by chunk id and pack; copies
// without a time are stamped with now.
func writeCondemned(ctx context.Context, be backend.Backend, now time.Time, r *condemnedRecord) (string, error) {
	b := r.b
	entries := recordEntries(b[12:])
	binary.BigEndian.PutUint32(b[8:12], uint32(entries.Len()))
	for i := range entries.Len() {
		t := entries[i*condemnedEntry+2*chunker.IDSize : (i+1)*condemnedEntry]
		if binary.BigEndian.Uint64(t) == 0 {
			binary.BigEndian.PutUint64(t, uint64(now.UnixNano()))
		}
	}
	sort.Sort(entries)
	name := condemnedPrefix + fmt.Sprintf("%020d", now.UnixNano())
	if err := be.PutIfAbsent(ctx, name, b); err != nil {
		return "", fmt.Errorf("gc: write condemned record: %w", err)
	}
	return name, nil
}

// condemnedSet is the entries of a condemned record as stored (chunk id,
// pack id, u64 unix nanoseconds: condemnedEntry bytes each), sorted by chunk
// id. Looked up in place, it costs its 72 bytes per copy and no more: gc and
// every writer hold the newest one, and a store may have millions of
// condemned copies.
type condemnedSet []byte

func decodeCondemned(b []byte) (condemnedSet, error) {
	if len(b) < 12 || string(b[:8]) != condemnedMagic {
		return nil, errors.New("not a condemned record")
	}
	n := binary.BigEndian.Uint32(b[8:12])
	if uint64(len(b)-12) != uint64(n)*condemnedEntry {
		return nil, fmt.Errorf("%d entries do not match %d bytes", n, len(b)-12)
	}
	set := condemnedSet(b[12:])
	for i := 1; i < set.len(); i++ {
		if bytes.Compare(set.id(i-1), set.id(i)) > 0 {
			return nil, fmt.Errorf("entry %d is out of order (damaged record)", i)
		}
	}
	return set, nil
}

func (c condemnedSet) len() int { return len(c) / condemnedEntry }

func (c condemnedSet) id(i int) []byte {
	return c[i*condemnedEntry : i*condemnedEntry+chunker.IDSize]
}

// at returns entry i.
func (c condemnedSet) at(i int) (chunkCopy, time.Time) {
	var cc chunkCopy
	e := c[i*condemnedEntry : (i+1)*condemnedEntry]
	copy(cc.id[:], e)
	copy(cc.pack[:], e[chunker.IDSize:])
	return cc, time.Unix(0, int64(binary.BigEndian.Uint64(e[2*chunker.IDSize:])))
}

// lookup returns when the copy was condemned, if it is.
func (c condemnedSet) lookup(cc chunkCopy) (time.Time, bool) {
	n := c.len()
	i := sort.Search(n, func(i int) bool { return bytes.Compare(c.id(i), cc.id[:]) >= 0 })
	for ; i < n && bytes.Equal(c.id(i), cc.id[:]); i++ {
		o := i*condemnedEntry + chunker.IDSize
		if bytes.Equal(c[o:o+chunker.IDSize], cc.pack[:]) {
			return time.Unix(0, int64(binary.BigEndian.Uint64(c[o+chunker.IDSize:]))), true
		}
	}
	return time.Time{}, false
}

// condemnedIndex is a condemned set with the first 8 bytes of each id in a
// slice of their own (8 bytes more per copy), so that gc, which asks about
// every chunk copy in the store, finds copies without comparing whole ids
// along a binary search.
type condemnedIndex struct {
	condemnedSet
	find keyIndex // of the ids' first 8 bytes, in order, as the set is
}

func newCondemnedIndex(c condemnedSet) *condemnedIndex {
	keys := make([]uint64, c.len())
	for i := range keys {
		keys[i] = idKey(chunker.ID(c.id(i)))
	}
	return &condemnedIndex{c, newKeyIndex(keys)}
}

// lookup is condemnedSet.lookup through the key index.
func (c *condemnedIndex) lookup(cc chunkCopy) (time.Time, bool) {
	i, ok := c.find.search(idKey(cc.id))
	if !ok {
		return time.Time{}, false
	}
	for ; i < c.len() && bytes.Equal(c.id(i), cc.id[:]); i++ {
		o := i*condemnedEntry + chunker.IDSize
		if bytes.Equal(c.condemnedSet[o:o+chunker.IDSize], cc.pack[:]) {
			return time.Unix(0, int64(binary.BigEndian.Uint64(c.condemnedSet[o+chunker.IDSize:]))), true
		}
	}
	return time.Time{}, false
}

// has is condemnedSet.has through the key index.
func (c *condemnedIndex) has(cc chunkCopy) bool {
	_, ok := c.lookup(cc)
	return ok
}

// hasID is condemnedSet.hasID through the key index.
func (c *condemnedIndex) hasID(id chunker.ID) bool {
	i, ok := c.find.search(idKey(id))
	for ; ok && i < c.len() && c.find.keys[i] == idKey(id); i++ {
		if bytes.Equal(c.id(i), id[:]) {
			return true
		}
	}
	return false
}

// hasID reports whether some copy of chunk id is condemned.
func (c condemnedSet) hasID(id chunker.ID) bool {
	n := c.len()
	i := sort.Search(n, func(i int) bool { return bytes.Compare(c.id(i), id[:]) >= 0 })
	return i < n && bytes.Equal(c.id(i), id[:])
}

func (c condemnedSet) has(cc chunkCopy) bool {
	_, ok := c.lookup(cc)
	return ok
}
