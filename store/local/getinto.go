package local

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/clnbackup/backup/store/backend"
)

// GetInto is Get reading into buf (grown when too small) instead of a new
// slice: a restore reads gigabytes of packs a span at a time, and a fresh
// zeroed buffer per span cost it a fifth of its CPU. It returns the bytes
// read, which alias buf's array unless buf had to grow.
func (b *Backend) GetInto(ctx context.Context, name string, off, length int64, buf []byte) ([]byte, error) {
	path, err := rel(name)
	if err != nil {
		return nil, err
	}
	f, err := b.dir.Open(path)
	if err != nil {
		return nil, b.fileErr("get", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	length, err = backend.CheckRange(name, off, length, st.Size())
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
