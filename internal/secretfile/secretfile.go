// Package secretfile holds the one rule for files that hold secrets (the
// plugin's backup.lock with its token, token files, the store server's auth
// file, its TLS private key): only their owner may read them. Every reader
// of such a file applies it, so that a secret left readable by accident
// (a shell redirection makes 0644 files) is refused with the same message
// and the same fix wherever it is found.
package secretfile

import (
	"fmt"
	"os"
)

// Check refuses the file at path, which holds what (e.g. "the store
// server token"), when users other than its owner have any permission on
// it: another user of the machine could read the secret. It returns nil
// for a file it cannot stat (the caller's read reports that better).
func Check(path, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	return CheckMode(path, what, fi.Mode())
}

// CheckMode is Check for a mode the caller already has (from an open
// file's Stat, so that the check and the read are of the same file).
func CheckMode(path, what string, mode os.FileMode) error {
	if perm := mode.Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s holds %s but can be read by other users (mode %o): run `chmod 600 %s`", path, what, perm, path)
	}
	return nil
}
