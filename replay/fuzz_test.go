package replay

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store/journal"
	"github.com/mattn/go-sqlite3"
)

// Fuzz inputs are statement sequences: records separated by "\x01", the
// statements of a record by "\x00".
const (
	fuzzRecordSep    = "\x01"
	fuzzStatementSep = "\x00"
)

// fuzzAttacks are the seeds that try to leave the database; OUT is replaced
// by a directory that must stay empty.
var fuzzAttacks = []string{
	"COMMIT\x00ATTACH DATABASE 'OUT/p.db' AS p\x00CREATE TABLE p.t(x)\x00INSERT INTO p.t VALUES(1)\x00BEGIN",
	"INSERT INTO vars (name, val) VALUES ('x', 'y'); COMMIT; ATTACH 'OUT/p.db' AS p; CREATE TABLE p.t(x); BEGIN",
	"ATTACH 'OUT/p.db' AS p",
	"ATTACH 'file:OUT/u.db?mode=rwc' AS p",
	"/**/ATTACH 'OUT/p.db' AS p",
	"VACUUM INTO 'OUT/copy.db'",
	"VACUUM",
	"PRAGMA foreign_keys = ON; VACUUM INTO 'OUT/copy.db'",
	"PRAGMA foreign_keys = ON\x01ATTACH 'OUT/p.db' AS p",
	"SELECT load_extension('OUT/evil.so')",
	"INSERT INTO vars (name, val) VALUES ('e', load_extension('OUT/evil'))",
	"PRAGMA writable_schema = 1\x00UPDATE sqlite_master SET sql = 'x'",
	"PRAGMA journal_mode = OFF",
	"PRAGMA temp_store_directory = 'OUT'",
	"PRAGMA temp_store = FILE; CREATE TEMP TABLE t(x)",
	"SAVEPOINT a\x00RELEASE a",
	"END\x00ATTACH 'OUT/p.db' AS p",
	"CREATE VIRTUAL TABLE f USING fts3(x)",
	"CREATE TRIGGER tr AFTER INSERT ON vars BEGIN SELECT load_extension('OUT/evil'); END\x01INSERT INTO vars (name) VALUES ('t')",
	"INSERT INTO vars (name, blobval) VALUES ('z', zeroblob(2000000000))",
}

// fuzzBase is the database every fuzz input starts from: a real node's.
const fuzzBase = "../testdata/trace1-final.sqlite3"

// FuzzSandbox applies random statement sequences to a copy of a real node's
// database and checks that nothing but the database itself (and its
// journal) is ever touched: no file is left open, no file appears in the
// database's directory, the attack directory or the working directory, no
// database gets attached and the connection's hardening stays in force. The
// seed corpus (the attacks and a sample of a real trace's changes) runs in
// plain `go test` in about a second.
func FuzzSandbox(f *testing.F) {
	out := f.TempDir()
	for _, a := range fuzzAttacks {
		f.Add(strings.ReplaceAll(a, "OUT", out))
	}
	tr, err := ReadTrace("../testdata/trace1.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	recs := Records(tr)
	for i := 0; i < len(recs); i += 29 {
		var seq []string
		for _, r := range recs[i:min(i+3, len(recs))] {
			seq = append(seq, strings.Join(r.Statements, fuzzStatementSep))
		}
		f.Add(strings.Join(seq, fuzzRecordSep))
	}
	base, err := os.ReadFile(fuzzBase)
	if err != nil {
		f.Fatal(err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, input string) {
		cwdBefore := listDir(t, cwd)
		fdsBefore := openFiles(t)
		dir := t.TempDir()
		path := filepath.Join(dir, "lightningd.sqlite3")
		if err := os.WriteFile(path, base, 0o600); err != nil {
			t.Fatal(err)
		}
		own := map[string]bool{path: true, path + "-journal": true}
		d, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range strings.Split(input, fuzzRecordSep) {
			rec := journal.Record{Version: uint32(i), Seq: uint64(i + 1), Statements: strings.Split(r, fuzzStatementSep)}
			_ = d.Apply(rec) // refusals and SQL errors are fine; escapes are not
			for fd, target := range openFiles(t) {
				if _, ok := fdsBefore[fd]; !ok && strings.HasPrefix(target, "/") && !own[target] {
					t.Fatalf("after record %d: fd %s open on %s", i, fd, target)
				}
			}
			checkHardened(t, d)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if names := listDir(t, dir); !slices.Equal(names, []string{"lightningd.sqlite3"}) {
			t.Fatalf("database directory holds %v", names)
		}
		if names := listDir(t, out); len(names) > 0 {
			t.Fatalf("files appeared in %s: %v", out, names)
		}
		if names := listDir(t, cwd); !slices.Equal(names, cwdBefore) {
			t.Fatalf("working directory changed: %v, was %v", names, cwdBefore)
		}
		for fd, target := range openFiles(t) {
			if fdsBefore[fd] != target {
				t.Fatalf("fd %s left open on %s", fd, target)
			}
		}
	})
}

// openFiles maps the process's open file descriptors to what they point to.
func openFiles(t *testing.T) map[string]string {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	m := make(map[string]string, len(es))
	for _, e := range es {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the fd of the ReadDir itself, closed since
		}
		m[e.Name()] = target
	}
	return m
}

// checkHardened fails t unless d has only its main database (and temp) and
// the connection's sandbox settings are unchanged.
func checkHardened(t *testing.T, d *DB) {
	t.Helper()
	ctx := context.Background()
	d.sb.trusted = true
	defer func() { d.sb.trusted = false }()
	rows, err := d.conn.QueryContext(ctx, "PRAGMA database_list")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int
		var name, file string
		if err := rows.Scan(&seq, &name, &file); err != nil {
			t.Fatal(err)
		}
		if name != "main" && name != "temp" {
			t.Fatalf("database %q (%s) attached", name, file)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]int{"PRAGMA trusted_schema": 0, "PRAGMA temp_store": 2, "PRAGMA writable_schema": 0} {
		var got int
		if err := d.conn.QueryRowContext(ctx, q).Scan(&got); err != nil || got != want {
			t.Fatalf("%s = %d (%v), want %d", q, got, err, want)
		}
	}
	err = d.conn.Raw(func(dc any) error {
		c := dc.(*sqlite3.SQLiteConn)
		if on, err := dbConfigGet(c, dbconfigDefensive); err != nil || !on {
			return fmt.Errorf("defensive mode %v (%v)", on, err)
		}
		if n := c.GetLimit(sqlite3.SQLITE_LIMIT_ATTACHED); n != 0 {
			return fmt.Errorf("%d attached databases allowed", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
