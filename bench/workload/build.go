package workload

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// Build applies hooks to the SQLite database at path (creating it if it does
// not exist), one transaction per hook, the way lightningd ran them, with
// foreign keys on. It is the fast way to make a test database: there is no
// rollback journal and no fsync (journal_mode=OFF, synchronous=OFF), so a
// crash or a failing statement can leave the file damaged; Build is for
// scratch files only. PRAGMA-only hooks run outside a transaction, as in
// replay. On a failing statement it returns an error naming the hook's
// data_version and the statement.
func Build(path string, hooks func(fn func(Hook) error) error) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: "mode=rwc"}
	db, err := sql.Open("sqlite3", u.String())
	if err != nil {
		return fmt.Errorf("workload: build %s: %w", path, err)
	}
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("workload: build %s: %w", path, err)
	}
	defer conn.Close()
	for _, p := range []string{
		"PRAGMA journal_mode = OFF",
		"PRAGMA synchronous = OFF",
		"PRAGMA foreign_keys = ON",
		"PRAGMA cache_size = -65536", // 64 MiB: index updates stay in memory
		"PRAGMA locking_mode = EXCLUSIVE",
	} {
		if _, err := conn.ExecContext(ctx, p); err != nil {
			return fmt.Errorf("workload: build %s: %s: %w", path, p, err)
		}
	}
	err = hooks(func(h Hook) error {
		if h.Record().PragmaOnly() {
			for _, s := range h.Statements {
				if _, err := conn.ExecContext(ctx, s); err != nil {
					return fmt.Errorf("workload: build %s: hook %d: %q: %w", path, h.Version, clip(s), err)
				}
			}
			return nil
		}
		if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
			return err
		}
		for _, s := range h.Statements {
			if _, err := conn.ExecContext(ctx, s); err != nil {
				conn.ExecContext(ctx, "ROLLBACK")
				return fmt.Errorf("workload: build %s: hook %d: %q: %w", path, h.Version, clip(s), err)
			}
		}
		_, err := conn.ExecContext(ctx, "COMMIT")
		return err
	})
	if err != nil {
		return err
	}
	if err := conn.Close(); err != nil {
		return err
	}
	return db.Close()
}

func clip(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}
