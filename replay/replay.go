// Package replay rebuilds a SQLite database by applying lightningd's db_write
// changes to a file, one transaction per change, the way lightningd itself ran
// them. Restore, compaction and the legacy importer all go through it, so there
// is exactly one place that knows how a change is executed (transaction
// boundaries, PRAGMA handling, foreign keys), plus the tools to check the
// result (IntegrityCheck, Diff, DataVersionOf).
package replay

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/clnbackup/backup/store/journal"
	"github.com/mattn/go-sqlite3"
)

// DB is a SQLite database file being rebuilt from changes. It holds exactly one
// connection, so connection state set by a change (PRAGMA foreign_keys = OFF)
// stays in force for the changes after it, as it did in lightningd. A DB is not
// safe for concurrent use.
type DB struct {
	path string
	db   *sql.DB
	conn *sql.Conn
	sb   *sandbox
	// track is the page tracking of a DB opened with OpenTracking;
	// trackDone says Close finished it.
	track     *tracker
	trackDone bool
}

// Open opens the database file at path for replay, creating an empty database
// if the file does not exist. Foreign keys are enforced (ON DELETE CASCADE
// behaves as in lightningd). The rollback journal is kept in memory and
// synchronous is OFF: a crash during Apply can corrupt the file, so callers
// rebuild into a temporary file and fsync it themselves when done. Persistent
// settings in the file header (page size, WAL mode, ...) are left untouched.
//
// The connection is the replay sandbox (see ErrRefused): changes may only do
// what lightningd's statements do. A database holding a virtual table is
// refused: lightningd's never does, and a crafted one would expose SQLite's
// virtual table modules to hostile data.
func Open(path string) (*DB, error) {
	db, err := openSQL(path, false)
	if err != nil {
		return nil, fmt.Errorf("replay: open %s: %w", path, err)
	}
	d, err := setup(db, path)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("replay: open %s: %w", path, err)
	}
	return d, nil
}

func setup(db *sql.DB, path string) (*DB, error) {
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	d := &DB{path: path, db: db, conn: conn, sb: &sandbox{}}
	// Reading the schema makes SQLite check that the file is a database.
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&n); err != nil {
		conn.Close()
		return nil, err
	}
	var vtab string
	err = conn.QueryRowContext(ctx,
		"SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%' LIMIT 1").Scan(&vtab)
	if err == nil {
		conn.Close()
		return nil, fmt.Errorf("%w: the database holds virtual table %q; lightningd's never does (%s)", ErrRefused, vtab, refusedAdvice)
	} else if !errors.Is(err, sql.ErrNoRows) {
		conn.Close()
		return nil, err
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		conn.Close()
		return nil, err
	}
	pragmas := []string{"PRAGMA foreign_keys = ON", "PRAGMA synchronous = OFF"}
	// Leaving WAL would rewrite the file header; only rollback-journal
	// databases get the in-memory journal.
	if !strings.EqualFold(mode, "wal") {
		pragmas = append(pragmas, "PRAGMA journal_mode = MEMORY")
	}
	for _, p := range pragmas {
		if _, err := conn.ExecContext(ctx, p); err != nil {
			conn.Close()
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	// From here on every statement is checked; the DB's own run trusted.
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*sqlite3.SQLiteConn)
		if !ok {
			return fmt.Errorf("replay sandbox: driver connection is a %T, not a go-sqlite3 connection", dc)
		}
		c.RegisterAuthorizer(d.sb.authorize)
		return nil
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return d, nil
}

// openSQL opens path through a file: URI (so that any file name works) with a
// pool of one connection.
func openSQL(path string, readOnly bool) (*sql.DB, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	mode := "rwc"
	if readOnly {
		mode = "ro"
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: "mode=" + mode}
	db, err := sql.Open(driverName, u.String())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}

// stmtPrefixLen bounds how much of a failing statement an error quotes.
const stmtPrefixLen = 120

func stmtPrefix(s string) string {
	s = strings.TrimSpace(s)
	if len(s) <= stmtPrefixLen {
		return s
	}
	return s[:stmtPrefixLen] + "..."
}

// Apply applies one change. A PRAGMA-only record (r.PragmaOnly()) runs its
// statements in order outside any transaction, since SQLite ignores some
// pragmas (foreign_keys) inside one. Every other record runs all its
// statements in one transaction the DB owns: either the whole change is
// applied or, on an error, none of it is, and the error names the record's
// data_version and seq and the index and beginning of the failing statement.
//
// Statements run in the replay sandbox: one that does anything lightningd's
// statements do not (transaction control, ATTACH, VACUUM, a PRAGMA other
// than foreign_keys, ...) fails the change with an error wrapping
// ErrRefused, before it has any effect outside the database's own
// (rolled back) transaction.
func (d *DB) Apply(r journal.Record) error {
	return d.ApplyContext(context.Background(), r)
}

// ApplyContext is Apply with a context that, when cancelled, interrupts the
// statement running (SQLite's sqlite3_interrupt): a record from an untrusted
// store can hold a statement that runs for ever (a recursive query, a
// cross join), and an operator's Ctrl-C must still stop the restore. The
// change is then rolled back like any failed one.
func (d *DB) ApplyContext(ctx context.Context, r journal.Record) error {
	for i, s := range r.Statements {
		if reason := precheck(s); reason != "" {
			return d.stmtError(r, i, fmt.Errorf("%w: %s; %s", ErrRefused, reason, refusedAdvice))
		}
	}
	if r.PragmaOnly() {
		d.sb.pragmaOnly = true
		defer func() { d.sb.pragmaOnly = false }()
		for i, s := range r.Statements {
			if err := d.exec(ctx, s); err != nil {
				return d.stmtError(r, i, err)
			}
		}
		return nil
	}
	if err := d.own(context.Background(), "BEGIN"); err != nil {
		return fmt.Errorf("replay: change data_version %d seq %d: begin: %w", r.Version, r.Seq, err)
	}
	for i, s := range r.Statements {
		if err := d.exec(ctx, s); err != nil {
			return d.rollback(d.stmtError(r, i, err))
		}
	}
	if err := d.own(context.Background(), "COMMIT"); err != nil {
		err = fmt.Errorf("replay: change data_version %d seq %d: commit: %w", r.Version, r.Seq, err)
		return d.rollback(err)
	}
	return nil
}

func (d *DB) stmtError(r journal.Record, i int, err error) error {
	return fmt.Errorf("replay: change data_version %d seq %d: statement %d of %d %q: %w",
		r.Version, r.Seq, i, len(r.Statements), stmtPrefix(r.Statements[i]), err)
}

// exec runs a statement of a record under the sandbox's checks; a denial
// becomes an error wrapping ErrRefused that says what was refused.
func (d *DB) exec(ctx context.Context, stmt string) error {
	d.sb.refused = ""
	_, err := d.conn.ExecContext(ctx, stmt)
	switch {
	case err == nil:
	case d.sb.refused != "":
		err = fmt.Errorf("%w: %s; %s (SQLite: %v)", ErrRefused, d.sb.refused, refusedAdvice, err)
	case strings.HasPrefix(err.Error(), "unsafe use of "):
		// trusted_schema OFF: a trigger, view, default or index in the
		// database uses a function or virtual table only top-level
		// statements may.
		err = fmt.Errorf("%w: the database's schema (a trigger, view, default or index) makes an %v; %s", ErrRefused, err, refusedAdvice)
	}
	d.sb.refused = ""
	return err
}

// own runs one of the DB's own statements, which the sandbox trusts.
func (d *DB) own(ctx context.Context, stmt string) error {
	d.sb.trusted = true
	defer func() { d.sb.trusted = false }()
	_, err := d.conn.ExecContext(ctx, stmt)
	return err
}

// rollback ends the open transaction after cause. Some errors make SQLite
// roll back by itself; a ROLLBACK that finds no transaction is not an error.
func (d *DB) rollback(cause error) error {
	err := d.own(context.Background(), "ROLLBACK")
	if err != nil && !strings.Contains(err.Error(), "no transaction is active") {
		return fmt.Errorf("%w (and rollback failed: %v)", cause, err)
	}
	return cause
}

// DataVersion returns lightningd's data_version as the database holds it
// (SELECT intval FROM vars WHERE name='data_version'). ok is false when the
// vars table or the row does not exist yet (an empty or half-built database).
func (d *DB) DataVersion() (v uint32, ok bool, err error) {
	return dataVersion(d.conn)
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func dataVersion(q queryer) (uint32, bool, error) {
	ctx := context.Background()
	var n int
	err := q.QueryRowContext(ctx,
		"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'vars'").Scan(&n)
	if err != nil {
		return 0, false, fmt.Errorf("replay: read data_version: %w", err)
	}
	if n == 0 {
		return 0, false, nil
	}
	var v sql.NullInt64
	err = q.QueryRowContext(ctx, "SELECT intval FROM vars WHERE name = 'data_version'").Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("replay: read data_version: %w", err)
	}
	if !v.Valid {
		return 0, false, nil
	}
	if v.Int64 < 0 || v.Int64 > 1<<32-1 {
		return 0, false, fmt.Errorf("replay: data_version %d is out of range for a u32", v.Int64)
	}
	return uint32(v.Int64), true, nil
}

// Close closes the database. After a successful Close the file is complete on
// its own: no transaction is open and no -journal or -wal file is needed.
func (d *DB) Close() error {
	if d.conn == nil {
		return nil
	}
	var err0 error
	if d.track != nil {
		err0 = d.finishTracking()
		d.trackDone = err0 == nil
	}
	err1 := d.conn.Close()
	err2 := d.db.Close()
	d.conn, d.db = nil, nil
	if d.track != nil {
		d.track.close() // the WAL is gone or empty by now: nothing to write back
	}
	if err := errors.Join(err0, err1, err2); err != nil {
		d.trackDone = false
		return fmt.Errorf("replay: close %s: %w", d.path, err)
	}
	return nil
}

// openRO opens path read-only; the file must exist.
func openRO(path string) (*sql.DB, error) {
	db, err := openSQL(path, true)
	if err != nil {
		return nil, err
	}
	var n int
	if err := db.QueryRow("SELECT count(*) FROM sqlite_master").Scan(&n); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// DataVersionOf opens the database at path read-only and returns its
// data_version (ok=false when it has none), for callers that only need to
// check a file, such as a restore's final verification.
func DataVersionOf(path string) (uint32, bool, error) {
	db, err := openRO(path)
	if err != nil {
		return 0, false, fmt.Errorf("replay: open %s: %w", path, err)
	}
	defer db.Close()
	v, ok, err := dataVersion(db)
	if err != nil {
		return 0, false, fmt.Errorf("%s: %w", path, err)
	}
	return v, ok, nil
}

// unmappedCheckCache is the page cache of a mapped check of a file larger
// than SQLite maps (2 GB): with SQLite's default of 2 MiB the pages past the
// mapping were read again and again (a 4.4 GB check 17.7 s, 5.8 of them in
// the kernel); 32 MiB took 13.8-14.5 s, and more no less.
const unmappedCheckCache = 32 << 20

// checkMappingLimit caps what a mapped check asks SQLite to map (tests map a
// small file in part, as SQLite maps a file over 2 GB).
var checkMappingLimit int64 = math.MaxInt64

// maxIntegrityProblems bounds how many problems IntegrityCheck reports.
const maxIntegrityProblems = 20

// IntegrityCheck runs PRAGMA integrity_check on the database at path (opened
// read-only) and returns an error listing the problems it found, so that no
// rebuilt file is accepted without SQLite's own structural check.
func IntegrityCheck(path string) error {
	return integrityCheck(path, false)
}

// IntegrityCheckMapped is IntegrityCheck reading the file through a memory
// mapping (as much of it as SQLite maps, 2 GB by default; the pages past it
// through a 32 MiB page cache): the check reads every page, most of them
// twice, and each read is then no system call. A
// restore's check at 1 GB takes about 40% less time on a 2-vCPU VM. The
// mapped pages are the file's page cache, which the file's writer filled
// anyway, but they count in the process's RSS: the long-running plugin does
// not use it. Only for a file no other process changes meanwhile (a
// restore's own temporary file): a file cut short under the mapping faults.
func IntegrityCheckMapped(path string) error {
	return integrityCheck(path, true)
}

func integrityCheck(path string, mapped bool) error {
	db, err := openRO(path)
	if err != nil {
		return fmt.Errorf("replay: integrity check %s: %w", path, err)
	}
	defer db.Close()
	if mapped {
		if fi, err := os.Stat(path); err == nil {
			var mapping int64 // what SQLite maps: at most its compile-time limit
			if err := db.QueryRow(fmt.Sprintf("PRAGMA mmap_size = %d", min(fi.Size(), checkMappingLimit))).Scan(&mapping); err != nil {
				return fmt.Errorf("replay: integrity check %s: %w", path, err)
			}
			// The pages past the mapping are read into SQLite's page
			// cache, and the check visits most of them twice.
			if mapping < fi.Size() {
				if _, err := db.Exec(fmt.Sprintf("PRAGMA cache_size = -%d", unmappedCheckCache>>10)); err != nil {
					return fmt.Errorf("replay: integrity check %s: %w", path, err)
				}
			}
		}
	}
	rows, err := db.Query(fmt.Sprintf("PRAGMA integrity_check(%d)", maxIntegrityProblems))
	if err != nil {
		return fmt.Errorf("replay: integrity check %s: %w", path, err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return fmt.Errorf("replay: integrity check %s: %w", path, err)
		}
		problems = append(problems, s)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("replay: integrity check %s: %w", path, err)
	}
	if len(problems) == 1 && problems[0] == "ok" {
		return nil
	}
	if len(problems) == 0 {
		return fmt.Errorf("replay: integrity check %s: no result", path)
	}
	return fmt.Errorf("replay: integrity check %s failed: %s", path, strings.Join(problems, "; "))
}

var (
	reservedTilRe = regexp.MustCompile(`reserved_til=([0-9]+)WHERE`)
	peerIDRe      = regexp.MustCompile(`peer_id=([0-9]+)WHERE channels\.id=`)
)

// RewriteLegacy repairs statements written by old lightningd versions whose
// statement expansion dropped the space before WHERE
// (`reserved_til=5WHERE` -> `reserved_til=5 WHERE`,
// `peer_id=5WHERE channels.id=` -> `peer_id=5 WHERE channels.id=`). Legacy
// backups contain such statements; any other statement is returned unchanged.
func RewriteLegacy(stmt string) string {
	if !strings.Contains(stmt, "WHERE") {
		return stmt
	}
	stmt = reservedTilRe.ReplaceAllString(stmt, "reserved_til=${1} WHERE")
	stmt = peerIDRe.ReplaceAllString(stmt, "peer_id=${1} WHERE channels.id=")
	return stmt
}
