// Package local is the file:// backend: a store in a local directory or on an
// NFS mount. Every object is a file written to a temporary name in its final
// directory, fsynced, hard-linked into place (atomic and exclusive, also on
// NFS) and followed by an fsync of the directory, so a put that returned is
// durable and a crash never leaves a partial object under a real name.
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/writeback"
)

// tempPrefix marks temporary files; object names never start with '.'.
const tempPrefix = ".tmp-"

// Backend keeps objects as files under a root directory. Every file
// operation goes through an os.Root opened on that directory, so no object
// name, list prefix or symbolic link inside the store can make it touch a
// file outside: names are checked (backend.ValidName, ValidPrefix) and the
// kernel walk refuses escapes as a second, independent line.
type Backend struct {
	root string
	dir  *os.Root
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
	r, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("store directory %s: %w", abs, err)
	}
	return &Backend{root: abs, dir: r}, nil
}

// Root is the directory the backend keeps its objects in.
func (b *Backend) Root() string { return b.root }

// Location returns the file:// URL of the store.
func (b *Backend) Location() string { return "file://" + b.root }

// Path returns the file that holds the object name, for callers that need a
// local file rather than an object (the node journal). It checks the name,
// and that the deepest existing directory on the way resolves inside the
// store (a symbolic link there must not lead the caller out of it): the
// journal opens files by path, outside the os.Root the objects go through.
func (b *Backend) Path(name string) (string, error) {
	if err := backend.ValidName(name); err != nil {
		return "", err
	}
	path := filepath.Join(b.root, filepath.FromSlash(name))
	if err := b.contained(path); err != nil {
		return "", err
	}
	return path, nil
}

// contained checks that path, as far as it exists, resolves inside the
// store's directory.
func (b *Backend) contained(path string) error {
	realRoot, err := filepath.EvalSymlinks(b.root)
	if err != nil {
		return fmt.Errorf("store directory %s: %w", b.root, err)
	}
	for p := path; ; p = filepath.Dir(p) {
		real, err := filepath.EvalSymlinks(p)
		if errors.Is(err, fs.ErrNotExist) && p != b.root {
			continue
		}
		if err != nil {
			return fmt.Errorf("resolve %s in store %s: %w", path, b.root, err)
		}
		if real != realRoot && !strings.HasPrefix(real, realRoot+string(filepath.Separator)) {
			return fmt.Errorf("%s in store %s resolves to %s, outside the store (a symbolic link in the store's directory?): %w; remove the link", path, b.root, real, errEscape)
		}
		return nil
	}
}

// errEscape is wrapped by errors for a name that would leave the store's
// directory: a symbolic link inside the store pointing out of it.
var errEscape = errors.New("path escapes the store directory")

// rel checks name and returns its path relative to the root.
func rel(name string) (string, error) {
	if err := backend.ValidName(name); err != nil {
		return "", err
	}
	return filepath.FromSlash(name), nil
}

// fileErr names what failed for an operator: an escape through a symbolic
// link says so (os.Root refuses it), a missing file wraps ErrNotFound.
func (b *Backend) fileErr(op, name string, err error) error {
	if err != nil && strings.Contains(err.Error(), "path escapes") {
		return fmt.Errorf("%s %s in store %s: %w: a symbolic link in the store's directory leads out of it; remove it (%v)", op, name, b.root, errEscape, err)
	}
	return fmt.Errorf("%s %s: %w", op, name, notFound(err))
}

// PutIfAbsent implements backend.Backend.
func (b *Backend) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	path, err := rel(name)
	if err != nil {
		return err
	}
	if _, err := b.dir.Lstat(path); err == nil {
		return fmt.Errorf("put %s: %w", name, backend.ErrExists)
	}
	dir := filepath.Dir(path)
	if err := b.mkdirAllSync(dir); err != nil {
		return b.fileErr("put", name, err)
	}
	tmpName, tmp, err := b.createTemp(dir)
	if err != nil {
		return b.fileErr("put", name, err)
	}
	defer b.dir.Remove(tmpName)
	// Paced: a pack's megabytes go to the disk as they are written, not
	// as one burst at the fsync that a db_write's journal sync would queue
	// behind.
	if err := writeback.Write(tmp, data, 0); err != nil {
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
	if err := b.dir.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("put %s: %w", name, backend.ErrExists)
		}
		return b.fileErr("put (link into place)", name, err)
	}
	if err := b.dir.Remove(tmpName); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("put %s: remove temporary %s: %w", name, tmpName, err)
	}
	if err := b.syncDir(dir); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	return nil
}

// createTemp creates a new temporary file in dir (relative to the root),
// exclusively, as os.CreateTemp does.
func (b *Backend) createTemp(dir string) (string, *os.File, error) {
	for range 100 {
		var r [8]byte
		rand.Read(r[:])
		name := filepath.Join(dir, tempPrefix+hex.EncodeToString(r[:]))
		f, err := b.dir.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return name, f, err
	}
	return "", nil, fmt.Errorf("create a temporary file in %s: 100 names taken", dir)
}

// Get implements backend.Backend.
func (b *Backend) Get(ctx context.Context, name string, off, length int64) ([]byte, error) {
	return b.GetInto(ctx, name, off, length, nil)
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (backend.Info, error) {
	path, err := rel(name)
	if err != nil {
		return backend.Info{}, err
	}
	st, err := b.dir.Stat(path)
	if err != nil {
		return backend.Info{}, b.fileErr("stat", name, err)
	}
	if st.IsDir() {
		return backend.Info{}, fmt.Errorf("stat %s: is a directory: %w", name, backend.ErrNotFound)
	}
	return backend.Info{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List implements backend.Backend. It walks the directory of the prefix's
// last '/' through the root, so a prefix never reaches outside the store.
func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.Info) error) error {
	if err := backend.ValidPrefix(prefix); err != nil {
		return err
	}
	start := "."
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = prefix[:i]
	}
	var infos []backend.Info
	err := fs.WalkDir(b.dir.FS(), start, func(path string, d fs.DirEntry, err error) error {
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
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // directories; and links, sockets: never objects
		}
		name := path
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
		if strings.Contains(err.Error(), "path escapes") {
			return fmt.Errorf("list %q in %s: %w: a symbolic link in the store's directory leads out of it; remove it (%v)", prefix, b.root, errEscape, err)
		}
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
	path, err := rel(name)
	if err != nil {
		return err
	}
	if err := b.dir.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return b.fileErr("delete", name, err)
	}
	if err := b.syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Close implements backend.Backend. The root stays open: a store's
// objects may still be read by those holding the backend after the store
// closed (the descriptor goes with the process or the garbage collector).
func (b *Backend) Close() error { return nil }

func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (%v)", backend.ErrNotFound, err)
	}
	return err
}

// mkdirAllSync creates dir (relative to the root) and any missing parents,
// fsyncing each parent whose entries changed, so a new object's directory
// survives a crash.
func (b *Backend) mkdirAllSync(dir string) error {
	if st, err := b.dir.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := b.mkdirAllSync(parent); err != nil {
			return err
		}
	}
	if err := b.dir.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return b.syncDir(parent)
}

// syncDir fsyncs a directory of the store (relative to the root).
func (b *Backend) syncDir(dir string) error {
	d, err := b.dir.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory %s of store %s: %w", dir, b.root, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync directory %s of store %s: %w", dir, b.root, err)
	}
	return nil
}

// SyncDir fsyncs a directory so that entries created, renamed or removed in
// it are durable.
func SyncDir(dir string) error {
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
