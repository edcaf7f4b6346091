// Package backend is the small interface between the store and the places it
// keeps objects: a local directory or NFS mount now, a remote store server and
// object storage later. Every backend runs the conformance suite in
// backendtest, so the store can rely on exactly these guarantees and no more.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) for an object that does not exist.
var ErrNotFound = errors.New("object not found")

// ErrRange is returned (wrapped) by Get for an offset or length outside
// the object, so a server can answer it as the client's mistake rather
// than its own failure.
var ErrRange = errors.New("range outside the object")

// ErrExists is returned (wrapped) by PutIfAbsent when the name is taken.
var ErrExists = errors.New("object already exists")

// Info describes one stored object.
type Info struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Backend stores named, immutable objects. Names are slash-separated paths
// (see ValidName). Implementations must be safe for concurrent use by several
// goroutines and by several processes sharing the same place.
type Backend interface {
	// PutIfAbsent stores data under name and returns once it is durable
	// (it survives a crash or power loss). If name exists it changes
	// nothing and returns an error wrapping ErrExists. Readers never see a
	// partial object; of concurrent puts of one name exactly one succeeds.
	PutIfAbsent(ctx context.Context, name string, data []byte) error
	// Get returns length bytes of the object from offset off; length < 0
	// means to the end. Reading past the end returns what exists and an
	// error if fewer than length bytes were requested and available.
	Get(ctx context.Context, name string, off, length int64) ([]byte, error)
	// Stat describes one object.
	Stat(ctx context.Context, name string) (Info, error)
	// List calls fn for every object whose name starts with prefix, in
	// lexical order of names. Objects added or deleted during the listing
	// may or may not be seen.
	List(ctx context.Context, prefix string, fn func(Info) error) error
	// Delete removes an object; deleting a missing object is not an error.
	Delete(ctx context.Context, name string) error
	// Location names the backend for messages (its URL).
	Location() string
	// Close releases resources.
	Close() error
}

// MaxNameLength is the longest object name (and list prefix) any backend
// accepts: names are built by the store from short ids, and a bound keeps a
// hostile name from costing the filesystem or the log anything.
const MaxNameLength = 512

// ValidName checks the object name rules every backend enforces: non-empty
// slash-separated segments of letters, digits, '.', '_' and '-', none starting
// with '.' (so never "." or "..", and backends may keep hidden temporary files),
// no leading or trailing slash, at most 512 bytes. A valid name is a clean
// relative path: it can never leave the directory a backend keeps objects in
// (no "..", no absolute path, no backslash, no NUL).
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameLength {
		return fmt.Errorf("invalid object name %q: must be 1..%d bytes", name, MaxNameLength)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if err := validSegment(name, "object name", seg); err != nil {
			return err
		}
	}
	return nil
}

// ValidPrefix checks a List prefix: "" (everything), or the start of a valid
// name, every segment before its last '/' a valid segment and the part after
// it (possibly empty) the start of one. A prefix is joined into paths by
// file backends, so one that is not the start of a clean relative path
// ("nodes/a/../../etc/", "/abs", "a//b") is refused before any backend
// touches it.
func ValidPrefix(prefix string) error {
	if len(prefix) > MaxNameLength {
		return fmt.Errorf("invalid list prefix %.40q...: longer than %d bytes", prefix, MaxNameLength)
	}
	if prefix == "" {
		return nil
	}
	segs := strings.Split(prefix, "/")
	for i, seg := range segs {
		if i == len(segs)-1 && seg == "" {
			break // a prefix ending in '/': a whole directory
		}
		if err := validSegment(prefix, "list prefix", seg); err != nil {
			return err
		}
	}
	return nil
}

func validSegment(name, what, seg string) error {
	if seg == "" || seg[0] == '.' {
		return fmt.Errorf("invalid %s %q: empty segment or segment starting with '.'", what, name)
	}
	for _, c := range []byte(seg) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("invalid %s %q: character %q not allowed", what, name, c)
		}
	}
	return nil
}

// CheckRange checks a Get's offset and length against an object of size
// bytes and returns the length to read (length < 0: to the end). It never
// computes off+length, which overflows for a hostile length near 2^63: a
// range past the end fails wrapping io.ErrUnexpectedEOF, a negative or
// too large offset fails outright. Every backend uses it (or the same
// rule), and backendtest holds them to it.
func CheckRange(name string, off, length, size int64) (int64, error) {
	if off < 0 || off > size {
		return 0, fmt.Errorf("get %s: offset %d outside object of %d bytes: %w", name, off, size, ErrRange)
	}
	if length < 0 {
		return size - off, nil
	}
	if length > size-off {
		return 0, fmt.Errorf("get %s: range %d+%d past end of object (%d bytes): %w (%w)", name, off, length, size, ErrRange, io.ErrUnexpectedEOF)
	}
	return length, nil
}
