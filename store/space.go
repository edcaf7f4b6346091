package store

import "fmt"

// freeSpacer is a backend that knows the free space of the file system it
// keeps its objects on (a local directory); a store server's object view
// does not.
type freeSpacer interface {
	FreeBytes() (uint64, error)
}

// FreeBytes is the space left for the store's objects, so that status and
// the plugin can warn before a full disk refuses a db_write. known is false
// when the backend cannot tell (a store server: its disk is the server's).
func (s *Store) FreeBytes() (free uint64, known bool, err error) {
	fs, ok := s.be.(freeSpacer)
	if !ok {
		return 0, false, nil
	}
	free, err = fs.FreeBytes()
	if err != nil {
		return 0, false, fmt.Errorf("free space of store %s: %w", s.Location(), err)
	}
	return free, true, nil
}
