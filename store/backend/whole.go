package backend

import (
	"context"
	"errors"
	"fmt"
)

// ErrTooLarge is wrapped when an object is larger than anything the program
// writes under its name: a damaged store, or one that a hostile host or
// server made to exhaust the reader's memory.
var ErrTooLarge = errors.New("object larger than it can be")

// WholeReader is a backend that reads a whole object with its bound in one
// request, refusing it before holding more than max bytes.
type WholeReader interface {
	ReadWhole(ctx context.Context, name string, max int64) ([]byte, error)
}

// ReadWhole reads all of object name, which may be at most max bytes. A
// read "to the end" holds whatever the store sends, so every object read
// whole is read with the bound of what the program writes under its name:
// in one request where the backend can bound it (WholeReader), otherwise a
// Stat and a read of exactly that size (a backend that then sends more is
// refused by the backend, one that stated less yields a short object).
func ReadWhole(ctx context.Context, b Backend, name string, max int64) ([]byte, error) {
	if w, ok := b.(WholeReader); ok {
		return w.ReadWhole(ctx, name, max)
	}
	in, err := b.Stat(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := CheckWhole(name, in.Size, max); err != nil {
		return nil, err
	}
	return b.Get(ctx, name, 0, in.Size)
}

// CheckWhole refuses an object of size bytes that may be at most max.
func CheckWhole(name string, size, max int64) error {
	if size > max {
		return fmt.Errorf("object %s is %d bytes, more than the %d it can have: %w (the store is damaged, or not written by backup-cli); run backup-cli verify", name, size, max, ErrTooLarge)
	}
	if size < 0 {
		return fmt.Errorf("object %s is listed as %d bytes: %w", name, size, ErrTooLarge)
	}
	return nil
}
