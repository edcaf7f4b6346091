// Package backend is the small interface between the store and the places it
// keeps objects: a local directory or NFS mount now, a remote store server and
// object storage later. Every backend runs the conformance suite in
// backendtest, so the store can rely on exactly these guarantees and no more.
package backend

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNotFound is returned (wrapped) for an object that does not exist.
var ErrNotFound = errors.New("object not found")

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

// ValidName checks the object name rules every backend enforces: non-empty
// slash-separated segments of letters, digits, '.', '_' and '-', none starting
// with '.' (so never "." or "..", and backends may keep hidden temporary files),
// no leading or trailing slash, at most 512 bytes.
func ValidName(name string) error {
	if name == "" || len(name) > 512 {
		return fmt.Errorf("invalid object name %q: must be 1..512 bytes", name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg[0] == '.' {
			return fmt.Errorf("invalid object name %q: empty segment or segment starting with '.'", name)
		}
		for _, c := range seg {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
			if !ok {
				return fmt.Errorf("invalid object name %q: character %q not allowed", name, c)
			}
		}
	}
	return nil
}
