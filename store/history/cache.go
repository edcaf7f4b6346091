package history

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// snapCache is a node's compaction cache (Node.CacheDir): the database file
// of the snapshot its last compaction committed, CacheDir/<node>.snapshot.
// It is never trusted: the next compaction keeps only the pages whose hash is
// the page id the store's newest snapshot names (writePages with reuse), so
// a stale, damaged, truncated or foreign file only costs fetches. It is not
// fsynced for the same reason: a file torn by a crash is checked like any
// other.
type snapCache struct {
	dir, node string
	path      string // "" without a usable cache directory
	err       error  // why the cache directory is unusable
}

// cacheSuffix names a node's cache file; tempMark starts the names of its
// compaction's temporary files in the cache directory ('~' is not allowed in
// node names, so one node's pattern never matches another node's files).
const (
	cacheSuffix = ".snapshot"
	tempMark    = "~compact-"
)

// openCache prepares the node's cache directory and removes the temporary
// files of a compaction of this node that stopped half-way (the node's lease
// makes this the only writer of the node, so none of them is in use).
func (n *Node) openCache() *snapCache {
	if n.CacheDir == "" {
		return &snapCache{}
	}
	c := &snapCache{dir: n.CacheDir, node: n.name}
	if err := os.MkdirAll(n.CacheDir, 0o700); err != nil {
		c.err = fmt.Errorf("compaction cache: %w", err)
		return c
	}
	c.path = filepath.Join(n.CacheDir, n.name+cacheSuffix)
	stale, _ := filepath.Glob(filepath.Join(n.CacheDir, n.name+tempMark+"*"))
	for _, f := range stale {
		os.Remove(f)
	}
	return c
}

// temp creates the compaction's temporary database file and returns its
// name: in tempDir if set, else in the cache directory (so that the cache
// moves in and out by rename, without a copy), else in os.TempDir().
func (c *snapCache) temp(tempDir string) (string, error) {
	dir, pattern := tempDir, "clnbackup-compact-*.sqlite3"
	if dir == "" && c.path != "" {
		dir, pattern = c.dir, c.node+tempMark+"*"
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return "", err
	}
	name := f.Name()
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// take makes the cached snapshot the content of tmp: moved there (so a
// compaction that fails leaves no cache, rather than one it may have half
// changed), or copied when tmp is on another file system. It reports whether
// tmp now holds the cache; false is a cache miss (tmp is then rewritten
// whole from the store).
func (c *snapCache) take(tmp string) bool {
	if c.path == "" {
		return false
	}
	err := os.Rename(c.path, tmp)
	if err == nil {
		return true
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	return copyFile(c.path, tmp) == nil
}

// keep makes the committed snapshot's file at tmp the cache. It returns why
// it could not (the cache is then removed: the next compaction fetches
// everything), or the cache directory's error.
func (c *snapCache) keep(tmp string) error {
	if c.path == "" {
		return c.err
	}
	if err := os.Rename(tmp, c.path); err == nil {
		return nil
	}
	// tmp is on another file system (Node.TempDir): copy it into the
	// cache directory and rename it into place there.
	f, err := os.CreateTemp(c.dir, c.node+tempMark+"*")
	if err == nil {
		name := f.Name()
		f.Close()
		if err = copyFile(tmp, name); err == nil {
			err = os.Rename(name, c.path)
		}
		if err != nil {
			os.Remove(name)
		}
	}
	if err != nil {
		os.Remove(c.path)
		return fmt.Errorf("keep the new snapshot as the compaction cache %s: %w", c.path, err)
	}
	return nil
}

// copyFile replaces dst's content with src's.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_TRUNC|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}
