package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"

	sqlite3 "github.com/mattn/go-sqlite3"
	"golang.org/x/sys/unix"
)

// copyDatabase copies the SQLite database at src to dst with SQLite's online
// backup API: a consistent, page-identical copy, even while another process
// has the database open (it retries when the source changes under it).
func copyDatabase(ctx context.Context, src, dst string) error {
	srcDB, err := sql.Open("sqlite3", "file:"+url.PathEscape(src)+"?mode=ro")
	if err != nil {
		return err
	}
	defer srcDB.Close()
	dstDB, err := sql.Open("sqlite3", "file:"+url.PathEscape(dst))
	if err != nil {
		return err
	}
	defer dstDB.Close()
	srcConn, err := srcDB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer srcConn.Close()
	dstConn, err := dstDB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("open %s: %w", dst, err)
	}
	defer dstConn.Close()
	return dstConn.Raw(func(d any) error {
		return srcConn.Raw(func(s any) error {
			dc, ok1 := d.(*sqlite3.SQLiteConn)
			sc, ok2 := s.(*sqlite3.SQLiteConn)
			if !ok1 || !ok2 {
				return fmt.Errorf("unexpected SQLite driver connection type")
			}
			b, err := dc.Backup("main", sc, "main")
			if err != nil {
				return fmt.Errorf("start backup: %w", err)
			}
			for {
				done, err := b.Step(1024)
				if err != nil {
					b.Close()
					return fmt.Errorf("backup step: %w", err)
				}
				if done {
					break
				}
				if err := ctx.Err(); err != nil {
					b.Close()
					return err
				}
			}
			return b.Close()
		})
	})
}

// SQLite's lock bytes in the database file (os_unix.c): a writer holds
// RESERVED while it writes its journal, PENDING while it waits for
// EXCLUSIVE, and EXCLUSIVE is a write lock on the whole SHARED range that
// every reader holds a read lock on.
const (
	sqlitePendingByte  = 0x40000000
	sqliteReservedByte = sqlitePendingByte + 1
	sqliteSharedFirst  = sqlitePendingByte + 2
	sqliteSharedSize   = 510
)

// copyNodeDatabase makes the private, consistent copy of the node's
// database at src that init snapshots: dir/<base name of src>. It never
// writes src nor its journal, because they are the node's: a database
// lightningd left with a hot rollback journal (killed mid-transaction, with
// uncommitted pages already in the file) cannot be opened read-only, so its
// file and journal are copied byte for byte into dir and the copy, opened
// read-write there, is rolled back to the last committed state.
func copyNodeDatabase(ctx context.Context, src, dir string) (string, error) {
	dst := filepath.Join(dir, filepath.Base(src))
	hot, err := hasHotJournal(ctx, src)
	if err != nil {
		return "", err
	}
	if !hot {
		return dst, copyDatabase(ctx, src, dst)
	}
	if err := copyHotJournal(src, dst); err != nil {
		return "", err
	}
	if err := rollBack(ctx, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// copyHotJournal copies the database at src and its hot journal byte for
// byte to dst and dst-journal. It holds a read lock on SQLite's SHARED
// range of src meanwhile (as an SQLite reader would) so that no process can
// roll the journal back or write the database during the copy, and refuses
// when a writer holds the database: then the journal is not hot but in use.
func copyHotJournal(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open %s to copy it with its hot journal: %w", src, err)
	}
	// Closing any descriptor of src in this process would drop the lock
	// (POSIX record locks), so src is read through f alone.
	defer f.Close()
	inUse := fmt.Errorf("%s has a rollback journal and another process is using the database: stop lightningd and run init again", src)
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: sqliteSharedFirst, Len: sqliteSharedSize}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return inUse
		}
		return fmt.Errorf("lock %s for reading: %w", src, err)
	}
	for _, b := range []int64{sqlitePendingByte, sqliteReservedByte} {
		probe := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: b, Len: 1}
		if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &probe); err != nil {
			return fmt.Errorf("check the locks of %s: %w", src, err)
		}
		if probe.Type != unix.F_UNLCK {
			return inUse
		}
	}
	if err := copyBytes(f, src, dst); err != nil {
		return err
	}
	j, err := os.Open(src + "-journal")
	if err != nil {
		return fmt.Errorf("open the hot journal of %s: %w (if lightningd rolled it back meanwhile, run init again)", src, err)
	}
	defer j.Close()
	return copyBytes(j, src+"-journal", dst+"-journal")
}

// copyBytes copies the open file in (named src, read from its start) to a
// new file dst.
func copyBytes(in *os.File, src, dst string) error {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create the private copy %s: %w", dst, err)
	}
	if _, err := io.Copy(out, io.NewSectionReader(in, 0, 1<<62)); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("write the private copy %s: %w", dst, err)
	}
	return nil
}

// rollBack opens the private copy at path read-write, which makes SQLite
// roll its hot journal back, and checks that the journal is gone and the
// result is a sound database.
func rollBack(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite3", "file:"+url.PathEscape(path)+"?mode=rw")
	if err != nil {
		return fmt.Errorf("open the private copy %s: %w", path, err)
	}
	defer db.Close()
	var check string
	if err := db.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&check); err != nil {
		return fmt.Errorf("roll back the hot journal in the private copy %s: %w", path, err)
	}
	if check != "ok" {
		return fmt.Errorf("the private copy %s, rolled back to its last commit, fails SQLite's quick_check: %s", path, check)
	}
	if err := db.Close(); err != nil {
		return fmt.Errorf("close the private copy %s: %w", path, err)
	}
	if _, err := os.Stat(path + "-journal"); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the hot journal of the private copy %s is still there after its rollback (%v)", path, err)
	}
	return nil
}

// hasHotJournal opens the database at path read-only and reads its schema:
// SQLite refuses with SQLITE_READONLY_ROLLBACK exactly when the database has
// a hot journal it would have to roll back (which a read-only connection
// must not do). Any other failure is returned.
func hasHotJournal(ctx context.Context, path string) (bool, error) {
	db, err := sql.Open("sqlite3", "file:"+url.PathEscape(path)+"?mode=ro")
	if err != nil {
		return false, fmt.Errorf("open %s read-only: %w", path, err)
	}
	defer db.Close()
	var n int
	err = db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&n)
	var se sqlite3.Error
	if errors.As(err, &se) && se.ExtendedCode == sqlite3.ErrReadonlyRollback {
		return true, nil
	}
	if errors.As(err, &se) && se.Code == sqlite3.ErrBusy {
		return false, fmt.Errorf("read %s: %w: another process (lightningd?) is writing it; stop lightningd and run init again", path, err)
	}
	if err != nil {
		return false, fmt.Errorf("read the schema of %s (opened read-only): %w", path, err)
	}
	return false, nil
}
