// Package legacy reads backups written by the Python backup plugin's file
// backend (file format version 1, `file:///path/backup.dbak`) and restores
// them, so that users can migrate from that plugin without losing their
// history. It only reads: the format is frozen, and the one file written here
// is Fetch's copy of what the plugin's backup server (socket:) keeps.
//
// # File format v1
//
// All integers are big-endian. The file starts with a 512-byte header, zero
// padded:
//
//	u32 file_version (= 1)
//	u32 version        data_version of the last entry
//	u64 offset_head    where the writer appends the next entry
//	u32 prev_version   data_version before the last entry
//	u64 offset_prev    start of the last entry (what a rewind removes)
//	u64 version_count  entries written (not kept by every plugin version)
//
// Entries follow from byte 512, each `u32 length, u32 version, u8 type` and
// length bytes of payload. Type 1 is a change: the transaction's SQL statements
// in UTF-8 joined by single NUL bytes. Type 2 is a snapshot: the raw bytes of
// a whole lightningd.sqlite3 file, which replaces the database.
//
// # What the real writer does
//
// lightningd sends PRAGMA-only transactions (`PRAGMA foreign_keys = OFF;`)
// with the same data_version as the change before them, so versions repeat
// without any rewind. The writer appends the entry and then rewrites the
// header, without fsync; a crash in between leaves an entry after the one the
// header names, which was never acknowledged. The writer opens the file in
// append mode, so after a rewind (lightningd re-sending a version it never
// committed) the "overwriting" entry is really appended after the uncommitted
// one, and from then on offset_head and offset_prev understate the real
// positions by that entry's size. A reader therefore cannot stop at
// offset_head: it reads the entries in order up to the last one whose version
// is the header's version, and drops the uncommitted entry that precedes a
// repeated version (see Restore).
package legacy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

const (
	// HeaderSize is the size of the file header; entries start after it.
	HeaderSize = 512
	// EntryHeaderSize is the size of an entry's length, version and type.
	EntryHeaderSize = 9
	// FileVersion is the only file_version this package reads.
	FileVersion = 1
	// headerFields is how much of the header carries fields.
	headerFields = 36
)

// Header is the v1 file header as stored. Offsets are as the writer recorded
// them: see the package documentation for why they may understate the real
// positions.
type Header struct {
	FileVersion  uint32
	Version      uint32
	OffsetHead   uint64
	PrevVersion  uint32
	OffsetPrev   uint64
	VersionCount uint64
}

// EntryKind says what an entry holds.
type EntryKind uint8

const (
	// Change is a transaction's statements.
	Change EntryKind = 1
	// Snapshot is a whole database file.
	Snapshot EntryKind = 2
)

// String names the kind for messages ("change", "snapshot").
func (k EntryKind) String() string {
	switch k {
	case Change:
		return "change"
	case Snapshot:
		return "snapshot"
	}
	return fmt.Sprintf("EntryKind(%d)", uint8(k))
}

// Entry is one entry of a v1 file as Entries hands it over.
type Entry struct {
	// Offset is where the entry (its 9-byte header) starts in the file.
	Offset int64
	// Version is the data_version after the entry.
	Version uint32
	// Kind is Change or Snapshot.
	Kind EntryKind
	// Length is the payload's size in bytes.
	Length int64
	// Statements are a change's statements, as stored (not yet rewritten
	// with replay.RewriteLegacy); nil for an empty change or a snapshot.
	Statements []string
	// Snapshot reads a snapshot's payload (the database file) straight from
	// the backup, so a large snapshot is never held in memory. It is valid
	// until the File is closed; nil for a change.
	Snapshot *io.SectionReader
}

// End is the offset just after the entry.
func (e Entry) End() int64 { return e.Offset + EntryHeaderSize + e.Length }

// File is an open v1 backup file whose header has been read and checked.
type File struct {
	name   string
	r      io.ReaderAt
	closer io.Closer
	size   int64
	hdr    Header
}

// OpenFile opens the v1 backup at path and reads and checks its header: an
// unknown file_version, a file shorter than its header or than the header's
// offset_head, and offsets outside the file are errors.
func OpenFile(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("legacy backup: %w", err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("legacy backup %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		fh.Close()
		return nil, fmt.Errorf("legacy backup %s: not a regular file", path)
	}
	f, err := newFile(path, fh, st.Size())
	if err != nil {
		fh.Close()
		return nil, err
	}
	f.closer = fh
	return f, nil
}

// newFile reads the header of a backup held by r.
func newFile(name string, r io.ReaderAt, size int64) (*File, error) {
	f := &File{name: name, r: r, size: size}
	if size < HeaderSize {
		return nil, fmt.Errorf("legacy backup %s: %d bytes, shorter than the %d-byte header", name, size, HeaderSize)
	}
	var b [headerFields]byte
	if _, err := r.ReadAt(b[:], 0); err != nil {
		return nil, fmt.Errorf("legacy backup %s: read header: %w", name, err)
	}
	h := Header{
		FileVersion:  binary.BigEndian.Uint32(b[0:]),
		Version:      binary.BigEndian.Uint32(b[4:]),
		OffsetHead:   binary.BigEndian.Uint64(b[8:]),
		PrevVersion:  binary.BigEndian.Uint32(b[16:]),
		OffsetPrev:   binary.BigEndian.Uint64(b[20:]),
		VersionCount: binary.BigEndian.Uint64(b[28:]),
	}
	if h.FileVersion != FileVersion {
		return nil, fmt.Errorf("legacy backup %s: unknown file_version %d (this reader knows %d)", name, h.FileVersion, FileVersion)
	}
	if h.OffsetHead < HeaderSize {
		return nil, fmt.Errorf("legacy backup %s: header offset_head %d is inside the header", name, h.OffsetHead)
	}
	if h.OffsetHead > uint64(size) {
		return nil, fmt.Errorf("legacy backup %s: truncated: the header says entries end at offset %d but the file has %d bytes",
			name, h.OffsetHead, size)
	}
	if h.OffsetPrev != 0 && (h.OffsetPrev < HeaderSize || h.OffsetPrev >= h.OffsetHead) {
		return nil, fmt.Errorf("legacy backup %s: header offset_prev %d is outside the entries [%d, %d)",
			name, h.OffsetPrev, HeaderSize, h.OffsetHead)
	}
	f.hdr = h
	return f, nil
}

// Header returns the file's header.
func (f *File) Header() Header { return f.hdr }

// Size returns the file's size in bytes.
func (f *File) Size() int64 { return f.size }

// Close closes the file. Snapshot readers of its entries stop working.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	err := f.closer.Close()
	f.closer = nil
	return err
}

type entryHeader struct {
	off     int64
	length  int64
	version uint32
	kind    EntryKind
}

func (h entryHeader) end() int64 { return h.off + EntryHeaderSize + h.length }

// readEntryHeader reads and checks the entry header at off: it must fit in
// the file, its payload too, and its type must be known. Nothing is allocated
// from the length field.
func (f *File) readEntryHeader(off int64) (entryHeader, error) {
	if f.size-off < EntryHeaderSize {
		return entryHeader{}, fmt.Errorf("incomplete entry header: %d bytes left in the file", f.size-off)
	}
	var b [EntryHeaderSize]byte
	if _, err := f.r.ReadAt(b[:], off); err != nil {
		return entryHeader{}, fmt.Errorf("read entry header: %w", err)
	}
	h := entryHeader{
		off:     off,
		length:  int64(binary.BigEndian.Uint32(b[0:])),
		version: binary.BigEndian.Uint32(b[4:]),
		kind:    EntryKind(b[8]),
	}
	if left := f.size - off - EntryHeaderSize; h.length > left {
		return entryHeader{}, fmt.Errorf("length %d is larger than the %d bytes left in the file", h.length, left)
	}
	if h.kind != Change && h.kind != Snapshot {
		return entryHeader{}, fmt.Errorf("unknown entry type %d", b[8])
	}
	return h, nil
}

// span is what a scan of the file found: the entries that count end at end.
type span struct {
	end     int64 // end of the last entry that counts
	entries int   // entries that count
	ignored int   // complete entries after them
}

// scan walks the entry headers (payloads are skipped) and finds the last
// entry whose version is the header's version. Entries up to it count;
// entries after it are a write the header never acknowledged. Damage before
// offset_head is an error; bytes after offset_head that do not parse are the
// torn or abandoned tail of an unacknowledged write and end the scan.
func (f *File) scan() (span, error) {
	var s span
	s.end = -1
	n, off := 0, int64(HeaderSize)
	var stop error
	for off < f.size {
		h, err := f.readEntryHeader(off)
		if err != nil {
			if uint64(off) < f.hdr.OffsetHead {
				return span{}, fmt.Errorf("legacy backup %s: entry at offset %d: %w", f.name, off, err)
			}
			stop = fmt.Errorf("at offset %d: %w", off, err)
			break
		}
		n++
		if h.version == f.hdr.Version {
			s.end, s.entries = h.end(), n
		}
		off = h.end()
	}
	if s.end < 0 {
		if f.hdr.OffsetHead == HeaderSize {
			// An empty backup, perhaps with an unacknowledged first entry.
			return span{end: HeaderSize, ignored: n}, nil
		}
		msg := fmt.Sprintf("legacy backup %s: no entry has the header's version %d (%d entries read", f.name, f.hdr.Version, n)
		if stop != nil {
			msg += fmt.Sprintf(", reading stopped %v", stop)
		}
		return span{}, errors.New(msg + ")")
	}
	if uint64(s.end) < f.hdr.OffsetHead {
		return span{}, fmt.Errorf("legacy backup %s: the header says entries end at offset %d, but the last entry with its version %d ends at %d",
			f.name, f.hdr.OffsetHead, f.hdr.Version, s.end)
	}
	s.ignored = n - s.entries
	return s, nil
}

// Entries calls fn for each entry in file order, up to and including the last
// entry whose version is the header's version; entries after it (a write the
// header never acknowledged) are skipped. The whole file's entry headers are
// checked before fn is first called, so a damaged file fails before anything
// is applied. Entries hands over entries as stored: repeated versions included
// (see Restore for which entries count). An error from fn stops the walk and is
// returned as is.
func (f *File) Entries(fn func(Entry) error) error {
	_, err := f.entries(fn)
	return err
}

func (f *File) entries(fn func(Entry) error) (span, error) {
	s, err := f.scan()
	if err != nil {
		return span{}, err
	}
	for off := int64(HeaderSize); off < s.end; {
		e, err := f.readEntry(off)
		if err != nil {
			return span{}, fmt.Errorf("legacy backup %s: entry at offset %d: %w", f.name, off, err)
		}
		if err := fn(e); err != nil {
			return span{}, err
		}
		off = e.End()
	}
	return s, nil
}

// readEntry reads the entry at off; a change's payload is read into memory
// (its length was checked against the file's size), a snapshot's is not.
func (f *File) readEntry(off int64) (Entry, error) {
	h, err := f.readEntryHeader(off)
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Offset: off, Version: h.version, Kind: h.kind, Length: h.length}
	payload := io.NewSectionReader(f.r, off+EntryHeaderSize, h.length)
	if h.kind == Snapshot {
		e.Snapshot = payload
		return e, nil
	}
	if h.length == 0 {
		return e, nil
	}
	buf := make([]byte, h.length)
	if _, err := io.ReadFull(payload, buf); err != nil {
		return Entry{}, fmt.Errorf("read change: %w", err)
	}
	if !utf8.Valid(buf) {
		return Entry{}, errors.New("change is not valid UTF-8")
	}
	e.Statements = strings.Split(string(buf), "\x00")
	return e, nil
}

// Detect reports whether the file at path looks like a v1 backup of the Python
// plugin: a readable header with file_version 1, offsets inside the file and
// zero padding. It lets the CLI route `file://` URLs without guessing from
// the name; it does not read the entries.
func Detect(path string) bool {
	f, err := OpenFile(path)
	if err != nil {
		return false
	}
	defer f.Close()
	pad := make([]byte, HeaderSize-headerFields)
	if _, err := f.r.ReadAt(pad, headerFields); err != nil {
		return false
	}
	return bytes.Count(pad, []byte{0}) == len(pad)
}
