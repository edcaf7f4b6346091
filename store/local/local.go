// Package local is the file:// backend: a store in a local directory or on an
// NFS mount. Every object is a file written to a temporary name in its final
// directory, fsynced, hard-linked into place (atomic and exclusive, also on
// NFS) and followed by an fsync of the directory, so a put that returned is
// durable and a crash never leaves a partial object under a real name.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/clnbackup/backup/store/backend"
)

// tempPrefix marks temporary files; object names never start with '.'.
const tempPrefix = ".tmp-"

// Backend keeps objects as files under a root directory.
type Backend struct {
	root string
}

// New returns a backend rooted at dir, which must exist.
func New(dir string) (*Backend, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store directory %s: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("store directory %s: %w", abs, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("store directory %s: not a directory", abs)
	}
	return &Backend{root: abs}, nil
}

// Root is the directory the backend keeps its objects in.
func (b *Backend) Root() string { return b.root }

// Location returns the file:// URL of the store.
func (b *Backend) Location() string { return "file://" + b.root }

// Path returns the file that holds the object name, for callers that need a
// local file rather than an object (the node journal). It checks the name.
func (b *Backend) Path(name string) (string, error) {
	if err := backend.ValidName(name); err != nil {
		return "", err
	}
	return filepath.Join(b.root, filepath.FromSlash(name)), nil
}

// PutIfAbsent implements backend.Backend.
func (b *Backend) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	path, err := b.Path(name)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("put %s: %w", name, backend.ErrExists)
	}
	dir := filepath.Dir(path)
	if err := mkdirAllSync(dir); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, tempPrefix)
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("put %s: write %s: %w", name, tmpName, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("put %s: fsync %s: %w", name, tmpName, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("put %s: close %s: %w", name, tmpName, err)
	}
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("put %s: %w", name, backend.ErrExists)
		}
		return fmt.Errorf("put %s: link into place: %w", name, err)
	}
	if err := os.Remove(tmpName); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("put %s: remove temporary %s: %w", name, tmpName, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	return nil
}

// Get implements backend.Backend.
func (b *Backend) Get(ctx context.Context, name string, off, length int64) ([]byte, error) {
	path, err := b.Path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, notFound(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	if off < 0 || off > st.Size() {
		return nil, fmt.Errorf("get %s: offset %d outside object of %d bytes", name, off, st.Size())
	}
	if length < 0 {
		length = st.Size() - off
	}
	if off+length > st.Size() {
		return nil, fmt.Errorf("get %s: range %d+%d past end of object (%d bytes): %w", name, off, length, st.Size(), io.ErrUnexpectedEOF)
	}
	buf := make([]byte, length)
	if _, err := f.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF) && length == 0) {
		return nil, fmt.Errorf("get %s: read %d bytes at %d: %w", name, length, off, err)
	}
	return buf, nil
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (backend.Info, error) {
	path, err := b.Path(name)
	if err != nil {
		return backend.Info{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return backend.Info{}, fmt.Errorf("stat %s: %w", name, notFound(err))
	}
	if st.IsDir() {
		return backend.Info{}, fmt.Errorf("stat %s: is a directory: %w", name, backend.ErrNotFound)
	}
	return backend.Info{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.Info) error) error {
	start := b.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = filepath.Join(b.root, filepath.FromSlash(prefix[:i]))
	}
	var infos []backend.Info
	err := filepath.WalkDir(start, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if strings.HasPrefix(d.Name(), ".") && path != start {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(b.root, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		st, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		infos = append(infos, backend.Info{Name: name, Size: st.Size(), ModTime: st.ModTime()})
		return nil
	})
	if err != nil {
		return fmt.Errorf("list %q in %s: %w", prefix, b.root, err)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	for _, in := range infos {
		if err := fn(in); err != nil {
			return err
		}
	}
	return nil
}

// Delete implements backend.Backend.
func (b *Backend) Delete(ctx context.Context, name string) error {
	path, err := b.Path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", name, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Close implements backend.Backend.
func (b *Backend) Close() error { return nil }

func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (%v)", backend.ErrNotFound, err)
	}
	return err
}

// mkdirAllSync creates dir and any missing parents, fsyncing each parent
// whose entries changed, so a new object's directory survives a crash.
func mkdirAllSync(dir string) error {
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSync(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return syncDir(parent)
}

// SyncDir fsyncs a directory so that entries created, renamed or removed in
// it are durable.
func SyncDir(dir string) error { return syncDir(dir) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

var _ backend.Backend = (*Backend)(nil)
