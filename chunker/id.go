// Package chunker cuts SQLite database files into page chunks and names chunks by
// their content. The page is the unit that deduplicates across snapshots of a
// SQLite file (see docs/design.md), so a chunk is exactly one database page.
package chunker

import (
	"encoding/hex"
	"fmt"

	"github.com/zeebo/blake3"
)

// IDSize is the length of a chunk ID in bytes.
const IDSize = 32

// ID names a chunk by the BLAKE3-256 hash of its uncompressed bytes. Two chunks
// with the same ID are the same bytes, so an ID is all a manifest needs to
// name a page, and all a reader needs to verify what it fetched.
type ID [IDSize]byte

// Sum returns the ID of data.
func Sum(data []byte) ID {
	return ID(blake3.Sum256(data))
}

// String returns the lower-case hex form used in object names and errors.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns a prefix of the hex form for log lines and messages.
func (id ID) Short() string { return hex.EncodeToString(id[:6]) }

// IsZero reports whether id is the zero value (no chunk).
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses the hex form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("chunk id %q: want %d hex digits, have %d", s, 2*IDSize, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("chunk id %q: %w", s, err)
	}
	return id, nil
}

// MarshalText encodes the ID as hex, so IDs read well in JSON documents.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes the hex form written by MarshalText.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
