package local

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// FreeBytes is the space an unprivileged writer may still use on the file
// system of the store's directory (statfs: available blocks times block
// size), for status and the plugin's backup-status.
func (b *Backend) FreeBytes() (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(b.root, &fs); err != nil {
		return 0, fmt.Errorf("statfs %s: %w (is the store's file system mounted?)", b.root, err)
	}
	return fs.Bavail * uint64(fs.Bsize), nil
}
