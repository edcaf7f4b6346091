package history

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	sqlite3 "github.com/mattn/go-sqlite3"
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
