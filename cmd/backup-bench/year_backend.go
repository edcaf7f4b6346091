package main

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clnbackup/backup/store/backend"
)

// indexListing wraps the local backend of the stores that write the
// generated history. Every writer of that store is in this process (the
// workers and the weekly gc share one indexListing), so the names of the
// index objects are known here exactly: recorded on every put and delete,
// and a List of them answered from memory instead of walking the index's
// 256 directories, which otherwise costs more than the compaction itself
// at 36,500 compactions. Index objects are immutable (named by their
// hash), so their bytes are kept too: every lookup reads every index
// object, and opening and reading a year's thousands of them was half the
// generation's time. Only the generation uses it: the measured commands
// are backup-cli processes on the plain directory.
type indexListing struct {
	backend.Backend
	mu     sync.Mutex
	loaded bool
	infos  map[string]backend.Info
	data   map[string][]byte // index objects read or written
}

const indexDir = "index/"

func newIndexListing(be backend.Backend) *indexListing {
	return &indexListing{Backend: be, infos: map[string]backend.Info{}, data: map[string][]byte{}}
}

// Get answers a whole index object (read to the end or at its listed
// size) from memory once it was read or written here.
func (l *indexListing) Get(ctx context.Context, name string, off, length int64) ([]byte, error) {
	if !strings.HasPrefix(name, indexDir) || off != 0 {
		return l.Backend.Get(ctx, name, off, length)
	}
	l.mu.Lock()
	d, ok := l.data[name]
	l.mu.Unlock()
	if ok && (length == -1 || length == int64(len(d))) {
		return slices.Clone(d), nil
	}
	d, err := l.Backend.Get(ctx, name, off, length)
	l.mu.Lock()
	if in, listed := l.infos[name]; err == nil && (length == -1 || listed && length == in.Size) {
		l.data[name] = slices.Clone(d)
	}
	l.mu.Unlock()
	return d, err
}

// PutIfAbsent records a new index object.
func (l *indexListing) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	err := l.Backend.PutIfAbsent(ctx, name, data)
	if err == nil && strings.HasPrefix(name, indexDir) {
		l.mu.Lock()
		l.infos[name] = backend.Info{Name: name, Size: int64(len(data)), ModTime: time.Now()}
		l.data[name] = slices.Clone(data)
		l.mu.Unlock()
	}
	return err
}

// Delete forgets a deleted index object.
func (l *indexListing) Delete(ctx context.Context, name string) error {
	err := l.Backend.Delete(ctx, name)
	if (err == nil || errors.Is(err, backend.ErrNotFound)) && strings.HasPrefix(name, indexDir) {
		l.mu.Lock()
		delete(l.infos, name)
		delete(l.data, name)
		l.mu.Unlock()
	}
	return err
}

// List answers listings within the index from memory (loaded by the
// first), and passes every other listing on.
func (l *indexListing) List(ctx context.Context, prefix string, fn func(backend.Info) error) error {
	if !strings.HasPrefix(prefix, indexDir) {
		return l.Backend.List(ctx, prefix, fn)
	}
	l.mu.Lock()
	if !l.loaded {
		err := l.Backend.List(ctx, indexDir, func(in backend.Info) error { l.infos[in.Name] = in; return nil })
		if err != nil {
			l.mu.Unlock()
			return err
		}
		l.loaded = true
	}
	var infos []backend.Info
	for name, in := range l.infos {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, in)
		}
	}
	l.mu.Unlock()
	slices.SortFunc(infos, func(a, b backend.Info) int { return strings.Compare(a.Name, b.Name) })
	for _, in := range infos {
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

// Close leaves the shared backend open (the generation closes it).
func (l *indexListing) Close() error { return nil }
