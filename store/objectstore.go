package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/local"
)

// A store in object storage (s3://) is a backend.Backend over a bucket: the
// store reads and writes packs, the index and the per-node objects through
// it as over a local directory, and keeps the nodes' journals in it too
// (objectJournals), or in a local directory (Options.JournalDir). The s3
// package registers itself with RegisterObjectStore; this package does not
// depend on it.

// ObjectStore opens the bucket an object-store URL names.
type ObjectStore func(ctx context.Context, u URL, opts Options) (ObjectBackend, error)

// ObjectBackend is the backend of an object store: objects, plus readying
// the place for a new store (create the bucket, probe that it honours
// conditional writes).
type ObjectBackend interface {
	backend.Backend
	Prepare(ctx context.Context) error
}

var (
	objectStoresMu sync.Mutex
	objectStores   = map[string]ObjectStore{}
)

// RegisterObjectStore makes Open and Create handle URLs of a scheme as
// stores in object storage.
func RegisterObjectStore(scheme string, fn ObjectStore) {
	objectStoresMu.Lock()
	defer objectStoresMu.Unlock()
	objectStores[scheme] = fn
}

func objectStore(scheme string) ObjectStore {
	objectStoresMu.Lock()
	defer objectStoresMu.Unlock()
	return objectStores[scheme]
}

// objectJournalsFor is where an object store's nodes keep their journals:
// in the bucket, or in opts.JournalDir.
func objectJournalsFor(be backend.Backend, opts Options) (Journals, error) {
	if opts.JournalDir == "" {
		return newObjectJournals(be, opts.RetryFor), nil
	}
	if err := os.MkdirAll(opts.JournalDir, 0o700); err != nil {
		return nil, fmt.Errorf("journal directory %s: %w", opts.JournalDir, err)
	}
	lb, err := local.New(opts.JournalDir)
	if err != nil {
		return nil, fmt.Errorf("journal directory: %w", err)
	}
	dj := &dirJournals{be: lb}
	if err := dj.setupWAL(opts.GroupCommit, opts.GroupCommitSize); err != nil {
		return nil, err
	}
	return dj, nil
}

func openObjectStore(ctx context.Context, fn ObjectStore, u URL, opts Options) (*Store, error) {
	be, err := fn(ctx, u, opts)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", u.Raw, err)
	}
	js, err := objectJournalsFor(be, opts)
	if err != nil {
		be.Close()
		return nil, fmt.Errorf("open store %s: %w", u.Raw, err)
	}
	s, err := open(ctx, be, opts, js)
	if err != nil {
		be.Close()
	}
	return s, err
}

func createObjectStore(ctx context.Context, fn ObjectStore, u URL, opts Options) (*Store, bool, error) {
	be, err := fn(ctx, u, opts)
	if err != nil {
		return nil, false, fmt.Errorf("create store %s: %w", u.Raw, err)
	}
	js, err := objectJournalsFor(be, opts)
	if err != nil {
		be.Close()
		return nil, false, fmt.Errorf("create store %s: %w", u.Raw, err)
	}
	empty := func() (bool, error) {
		found := errors.New("found")
		switch err := be.List(ctx, "", func(backend.Info) error { return found }); {
		case err == nil:
			return true, nil
		case errors.Is(err, found):
			return false, nil
		case errors.Is(err, backend.ErrNotFound):
			return true, nil // no bucket yet: Prepare creates it
		default:
			return false, err
		}
	}
	s, created, err := createIn(ctx, be, opts, js, empty, be.Prepare)
	if err != nil {
		be.Close()
	}
	return s, created, err
}
