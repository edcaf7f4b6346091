package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/clnbackup/backup/store/backend"
)

// GetInto is Get reading into buf (grown when too small) instead of a new
// slice: a restore reads gigabytes of packs a span at a time, and a fresh
// zeroed buffer per span cost it a fifth of its CPU. It returns the bytes
// read, which alias buf's array unless buf had to grow.
func (b *Backend) GetInto(ctx context.Context, name string, off, length int64, buf []byte) ([]byte, error) {
	f, size, err := b.openObject(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	length, err = backend.CheckRange(name, off, length, size)
	if err != nil {
		return nil, err
	}
	if buf == nil || int64(cap(buf)) < length {
		buf = make([]byte, length)
	}
	buf = buf[:length]
	if _, err := f.ReadAt(buf, off); err != nil && !(errors.Is(err, io.EOF) && length == 0) {
		return nil, fmt.Errorf("get %s: read %d bytes at %d: %w", name, length, off, err)
	}
	return buf, nil
}

// ReadWhole implements backend.WholeReader: the size is checked on the open
// file before anything is read.
func (b *Backend) ReadWhole(ctx context.Context, name string, max int64) ([]byte, error) {
	f, size, err := b.openObject(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := backend.CheckWhole(name, size, max); err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	if _, err := f.ReadAt(buf, 0); err != nil && !(errors.Is(err, io.EOF) && len(buf) == 0) {
		return nil, fmt.Errorf("get %s: read %d bytes: %w", name, len(buf), err)
	}
	return buf, nil
}

// openObject opens object name for reading and returns its size.
func (b *Backend) openObject(name string) (*os.File, int64, error) {
	path, err := rel(name)
	if err != nil {
		return nil, 0, err
	}
	f, err := b.dir.Open(path)
	if err != nil {
		return nil, 0, b.fileErr("get", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("get %s: %w", name, err)
	}
	if st.IsDir() {
		f.Close()
		return nil, 0, fmt.Errorf("get %s: is a directory: %w", name, backend.ErrNotFound)
	}
	return f, st.Size(), nil
}
