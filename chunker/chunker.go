package chunker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// HeaderSize is the size of the SQLite database header at the start of page 1.
const HeaderSize = 100

var sqliteMagic = []byte("SQLite format 3\x00")

// ErrNotSQLite is returned for input that does not start with a SQLite header.
var ErrNotSQLite = errors.New("not a SQLite database (bad header magic)")

// Header is what the chunker needs from a SQLite file header.
type Header struct {
	// PageSize is the database page size in bytes: a power of two, 512..65536.
	PageSize uint32
	// Pages is the page count recorded in the header (valid in files written
	// by SQLite 3.7.0 and later, which is every lightningd database).
	Pages uint32
}

// ParseHeader reads the page size and page count from the first 100 bytes of
// a SQLite database file.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: file shorter than its %d-byte header", ErrNotSQLite, HeaderSize)
	}
	if !bytes.Equal(b[:16], sqliteMagic) {
		return Header{}, ErrNotSQLite
	}
	ps := uint32(binary.BigEndian.Uint16(b[16:18]))
	if ps == 1 {
		ps = 65536
	}
	if ps < 512 || ps > 65536 || ps&(ps-1) != 0 {
		return Header{}, fmt.Errorf("not a valid SQLite database: page size %d is not a power of two in 512..65536", ps)
	}
	return Header{PageSize: ps, Pages: binary.BigEndian.Uint32(b[28:32])}, nil
}

// Page is one chunk: a database page and its position.
type Page struct {
	// Index is the zero-based page number (SQLite's page number minus one).
	Index uint32
	// Data is the page's bytes. It is only valid during the callback.
	Data []byte
	// ID names Data.
	ID ID
}

// Split reads a SQLite database file from r and calls fn for every page in
// order. Memory stays at one page whatever the file size. The file must be a
// whole number of pages; a trailing partial page is an error (a truncated copy).
func Split(r io.Reader, fn func(Page) error) (Header, error) {
	return SplitIDs(r, Sum, fn)
}

// SplitIDs is Split with the pages named by idOf (an encrypted store's
// keyed ids) instead of Sum.
func SplitIDs(r io.Reader, idOf func([]byte) ID, fn func(Page) error) (Header, error) {
	first := make([]byte, HeaderSize)
	if _, err := io.ReadFull(r, first); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return Header{}, fmt.Errorf("%w: file shorter than its %d-byte header", ErrNotSQLite, HeaderSize)
		}
		return Header{}, fmt.Errorf("read database header: %w", err)
	}
	h, err := ParseHeader(first)
	if err != nil {
		return Header{}, err
	}
	buf := make([]byte, h.PageSize)
	copy(buf, first)
	n, err := io.ReadFull(r, buf[HeaderSize:])
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return h, fmt.Errorf("read page 1: %w", err)
	}
	if HeaderSize+n != len(buf) {
		return h, fmt.Errorf("database is truncated: page 1 has %d of %d bytes", HeaderSize+n, h.PageSize)
	}
	var index uint32
	for {
		if err := fn(Page{Index: index, Data: buf, ID: idOf(buf)}); err != nil {
			return h, err
		}
		index++
		n, err := io.ReadFull(r, buf)
		if err == io.EOF {
			break
		}
		if err == io.ErrUnexpectedEOF {
			return h, fmt.Errorf("database is truncated: page %d has %d of %d bytes", index+1, n, h.PageSize)
		}
		if err != nil {
			return h, fmt.Errorf("read page %d: %w", index+1, err)
		}
	}
	// The header's page count is valid when its "version-valid-for"
	// number equals the change counter; then a file cut at a page
	// boundary is caught too.
	if binary.BigEndian.Uint32(first[92:96]) == binary.BigEndian.Uint32(first[24:28]) && h.Pages != 0 && h.Pages != index {
		return h, fmt.Errorf("database is truncated or damaged: its header says %d pages, the file has %d", h.Pages, index)
	}
	h.Pages = index
	return h, nil
}
