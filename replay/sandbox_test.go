package replay

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store/journal"
	"github.com/mattn/go-sqlite3"
)

// sandboxBase is a small lightningd-like database: vars with data_version 1
// and a key-value table.
var sandboxBase = []string{
	"CREATE TABLE vars (name TEXT, val TEXT, intval INTEGER, blobval BLOB, PRIMARY KEY (name))",
	"INSERT INTO vars (name, intval) VALUES ('data_version', 1)",
	"CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)",
	"INSERT INTO kv VALUES ('a', 'x')",
}

// sandboxDB opens a replay database at dir/lightningd.sqlite3 holding
// sandboxBase.
func sandboxDB(t *testing.T, dir string) (*DB, string) {
	t.Helper()
	path := filepath.Join(dir, "lightningd.sqlite3")
	d := mustOpen(t, path)
	mustApply(t, d, rec(1, sandboxBase...))
	return d, path
}

// listDir returns the names in dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

// kvState is the database's observable state: data_version and kv's rows.
func kvState(t *testing.T, d *DB) string {
	t.Helper()
	v, _, err := d.DataVersion()
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	rs, err := d.conn.QueryContext(context.Background(), "SELECT k, v FROM kv ORDER BY k")
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for rs.Next() {
		var k, val string
		if err := rs.Scan(&k, &val); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, k+"="+val)
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return strconv.FormatUint(uint64(v), 10) + ":" + strings.Join(rows, ",")
}

// TestSandboxRefuses applies records holding each class of statement the
// sandbox refuses, alone and hidden behind statements it allows, and checks
// that the change fails wrapping ErrRefused with a message naming the
// data_version, the statement and the reason, that the database is as it
// was, and that no file appeared anywhere the statements point to.
func TestSandboxRefuses(t *testing.T) {
	t.Parallel()
	const ins = "INSERT INTO kv VALUES ('b', 'y')"
	for _, tc := range []struct {
		name  string
		stmts []string // OUT is replaced by a directory outside the database's
		// reason is a piece of the refusal's reason.
		reason string
	}{
		{"attach", []string{"ATTACH DATABASE 'OUT/p.db' AS p"}, "ATTACH"},
		{"attach after a change", []string{ins, "ATTACH 'OUT/p.db' AS p"}, "ATTACH"},
		{"attach behind a comment", []string{"/* hi */ -- there\n ATTACH 'OUT/p.db' AS p"}, "ATTACH"},
		{"attach in a multi-statement string", []string{ins + "; ATTACH 'OUT/p.db' AS p"}, `ATTACH of "OUT/p.db"`},
		{"issue 12 attack", []string{"COMMIT", "ATTACH DATABASE 'OUT/p.db' AS p", "CREATE TABLE p.t(x)", "INSERT INTO p.t VALUES(1)", "BEGIN"}, "COMMIT"},
		{"issue 12 attack in one string", []string{ins + "; COMMIT; ATTACH DATABASE 'OUT/p.db' AS p; CREATE TABLE p.t(x); BEGIN"}, "transaction control (COMMIT)"},
		{"detach", []string{"DETACH DATABASE p"}, "DETACH"},
		{"detach in a multi-statement string", []string{ins + "; DETACH p"}, "DETACH"},
		{"vacuum", []string{"VACUUM"}, "VACUUM"},
		{"vacuum into", []string{"VACUUM INTO 'OUT/copy.db'"}, "VACUUM"},
		{"vacuum into after a change", []string{ins, "vacuum main into 'OUT/copy.db'"}, "VACUUM"},
		{"vacuum into in a pragma-only change", []string{"PRAGMA foreign_keys = ON; VACUUM INTO 'OUT/copy.db'"}, `ATTACH of "OUT/copy.db"`},
		{"begin", []string{"BEGIN"}, "BEGIN"},
		{"begin immediate", []string{ins, "BEGIN IMMEDIATE TRANSACTION"}, "BEGIN"},
		{"commit", []string{ins, "COMMIT"}, "COMMIT"},
		{"end", []string{ins, "END TRANSACTION"}, "END"},
		{"rollback", []string{ins, "ROLLBACK"}, "ROLLBACK"},
		{"savepoint", []string{"SAVEPOINT sp", ins}, "SAVEPOINT"},
		{"release", []string{ins, "RELEASE sp"}, "RELEASE"},
		{"commit in a multi-statement string", []string{ins + "; COMMIT"}, "transaction control (COMMIT)"},
		{"savepoint in a multi-statement string", []string{ins + ";SAVEPOINT x"}, "SAVEPOINT BEGIN x"},
		{"load_extension", []string{"SELECT load_extension('OUT/evil.so')"}, "load_extension"},
		{"load_extension in a value", []string{"INSERT INTO kv VALUES ('b', load_extension('OUT/evil.so', 'init'))"}, "load_extension"},
		{"fts3_tokenizer", []string{"SELECT fts3_tokenizer('simple')"}, "fts3_tokenizer"},
		{"pragma writable_schema", []string{"PRAGMA writable_schema = 1"}, "PRAGMA writable_schema"},
		{"pragma writable_schema in a change", []string{ins, "PRAGMA writable_schema=ON"}, "PRAGMA writable_schema"},
		{"pragma journal_mode off", []string{"PRAGMA journal_mode = OFF"}, "PRAGMA journal_mode"},
		{"pragma journal_mode read", []string{"PRAGMA journal_mode"}, "PRAGMA journal_mode"},
		{"pragma temp_store_directory", []string{"PRAGMA temp_store_directory = 'OUT'"}, "PRAGMA temp_store_directory"},
		{"pragma trusted_schema", []string{"PRAGMA trusted_schema = ON"}, "PRAGMA trusted_schema"},
		{"pragma page_size", []string{"PRAGMA main.page_size = 1024"}, "PRAGMA page_size"},
		{"pragma foreign_keys odd value", []string{"PRAGMA foreign_keys = 2"}, "PRAGMA foreign_keys = 2"},
		{"pragma table-valued function", []string{"INSERT INTO kv SELECT name, 'x' FROM pragma_database_list"}, "PRAGMA database_list"},
		{"pragma-only change hiding a write", []string{"PRAGMA foreign_keys = OFF; DELETE FROM kv"}, "PRAGMA-only change"},
		{"virtual table fts3", []string{"CREATE VIRTUAL TABLE f USING fts3(x)"}, "virtual table"},
		{"virtual table rtree", []string{"CREATE VIRTUAL TABLE r USING rtree(id, a, b)"}, "virtual table"},
		{"temporary table", []string{"CREATE TEMP TABLE tt (x)"}, "temporary schema object"},
		{"temporary trigger", []string{"CREATE TEMP TRIGGER tr AFTER INSERT ON kv BEGIN DELETE FROM kv; END"}, "temporary schema object"},
	} {
		// go-sqlite3 runs statements one way without a cancellable
		// context and another way with one (backup-cli's restore).
		for _, cancellable := range []bool{false, true} {
			name := tc.name
			if cancellable {
				name += " with a cancellable context"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ctx := context.Background()
				if cancellable {
					var cancel func()
					ctx, cancel = context.WithCancel(ctx)
					defer cancel()
				}
				dir, out := t.TempDir(), t.TempDir()
				d, _ := sandboxDB(t, dir)
				before := kvState(t, d)
				stmts := make([]string, len(tc.stmts))
				for i, s := range tc.stmts {
					stmts[i] = strings.ReplaceAll(s, "OUT", out)
				}
				err := d.ApplyContext(ctx, journal.Record{Version: 2, Seq: 7, Statements: stmts})
				if !errors.Is(err, ErrRefused) {
					t.Fatalf("Apply: %v; want ErrRefused", err)
				}
				msg := err.Error()
				reason := strings.ReplaceAll(tc.reason, "OUT", out)
				for _, want := range []string{"data_version 2 seq 7", "statement ", reason, "lightningd never sends this"} {
					if !strings.Contains(msg, want) {
						t.Errorf("error %q does not say %q", msg, want)
					}
				}
				if after := kvState(t, d); after != before {
					t.Errorf("database changed: %s, was %s", after, before)
				}
				if names := listDir(t, out); len(names) > 0 {
					t.Errorf("files appeared outside the database: %v", names)
				}
				// The replay goes on: the next genuine change applies.
				mustApply(t, d, rec(2, "INSERT INTO kv VALUES ('c', 'z')", "UPDATE vars SET intval = 2 WHERE name = 'data_version'"))
				if err := d.Close(); err != nil {
					t.Fatal(err)
				}
				if names := listDir(t, dir); !slices.Equal(names, []string{"lightningd.sqlite3"}) {
					t.Errorf("database directory holds %v", names)
				}
			})
		}
	}
}

// A refusal quotes the statement (its beginning only, when long).
func TestSandboxQuotesLongStatement(t *testing.T) {
	t.Parallel()
	d, _ := sandboxDB(t, t.TempDir())
	long := "ATTACH '" + strings.Repeat("a", 500) + "' AS p"
	err := d.Apply(rec(5, "INSERT INTO kv VALUES ('b', 'y')", long))
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("Apply: %v", err)
	}
	want := `statement 1 of 2 "ATTACH '` + strings.Repeat("a", stmtPrefixLen-len("ATTACH '")) + `..."`
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not quote %q", err, want)
	}
	if len(err.Error()) > 1000 {
		t.Fatalf("error of %d bytes", len(err.Error()))
	}
}

// Statements the sandbox must refuse that SQLite cannot even parse (ATTACH
// in a trigger body) fail too, and touch nothing.
func TestSandboxTriggerBodyCannotAttach(t *testing.T) {
	t.Parallel()
	dir, out := t.TempDir(), t.TempDir()
	d, _ := sandboxDB(t, dir)
	err := d.Apply(rec(2, "CREATE TRIGGER tr AFTER INSERT ON kv BEGIN ATTACH '"+out+"/p.db' AS p; END"))
	if err == nil {
		t.Fatal("a trigger with ATTACH in its body was created")
	}
	if names := listDir(t, out); len(names) > 0 {
		t.Errorf("files appeared: %v", names)
	}
}

// Triggers and views are checked when they run: a trigger or view (made by
// a record, or found in a crafted snapshot) calling a refused function fails
// the change that fires it (for the snapshot's, trusted_schema OFF may
// refuse it before the authorizer sees it).
func TestSandboxChecksTriggerAndViewBodies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		snapshot bool // the trigger is in the file, not made by a record
		object   string
		fire     string
		reason   string
	}{
		{"trigger made by a record", false,
			"CREATE TRIGGER evil AFTER INSERT ON kv BEGIN INSERT INTO kv SELECT 'e', load_extension('OUT/evil.so'); END",
			"INSERT INTO kv VALUES ('b', 'y')", "function load_extension()"},
		{"trigger in the snapshot", true,
			"CREATE TRIGGER evil AFTER UPDATE ON vars BEGIN SELECT load_extension('OUT/evil.so'); END",
			"UPDATE vars SET intval = 2 WHERE name = 'data_version'", "load_extension()"},
		{"trigger in the snapshot with a pragma", true,
			"CREATE TRIGGER evil AFTER DELETE ON kv BEGIN INSERT INTO kv SELECT name, 'x' FROM pragma_database_list; END",
			"DELETE FROM kv", `unsafe use of virtual table "pragma_database_list"`},
		{"view in the snapshot", true,
			"CREATE VIEW evil AS SELECT 'e' AS k, load_extension('OUT/evil.so') AS v",
			"INSERT INTO kv SELECT * FROM evil", "load_extension"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir, out := t.TempDir(), t.TempDir()
			path := filepath.Join(dir, "lightningd.sqlite3")
			object := strings.ReplaceAll(tc.object, "OUT", out)
			if tc.snapshot {
				plainExec(t, path, append(slices.Clone(sandboxBase), object)...)
			}
			d := mustOpen(t, path)
			if !tc.snapshot {
				mustApply(t, d, rec(1, sandboxBase...), rec(2, object))
			}
			before := kvState(t, d)
			err := d.Apply(rec(3, tc.fire))
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("Apply: %v; want ErrRefused saying %q", err, tc.reason)
			}
			if after := kvState(t, d); after != before {
				t.Errorf("database changed: %s, was %s", after, before)
			}
			if names := listDir(t, out); len(names) > 0 {
				t.Errorf("files appeared: %v", names)
			}
		})
	}
}

// A database holding a virtual table (only a crafted snapshot can) is not
// opened for replay.
func TestSandboxRefusesVirtualTableInSnapshot(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "lightningd.sqlite3")
	plainExec(t, path, "CREATE TABLE vars (name TEXT PRIMARY KEY, intval INTEGER)", "CREATE VIRTUAL TABLE f USING fts3(x)")
	d, err := Open(path)
	if err == nil {
		d.Close()
		t.Fatal("opened a database with a virtual table")
	}
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `virtual table "f"`) {
		t.Fatalf("Open: %v", err)
	}
}

// What lightningd's statements do still works in the sandbox (the real
// traces replay in TestTrace1, TestCrash3 and the legacy and history tests).
func TestSandboxAllows(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		recs  []journal.Record
		check string // a query that must return 1
	}{
		{"schema changes", []journal.Record{rec(2,
			"CREATE TABLE peers (id INTEGER PRIMARY KEY, node_id BLOB UNIQUE, address TEXT, feature_bits BLOB)",
			"CREATE INDEX peers_addr ON peers (address)",
			"CREATE UNIQUE INDEX peers_feat ON peers (feature_bits)",
			"ALTER TABLE peers ADD COLUMN last_seen INTEGER DEFAULT 0",
			"ALTER TABLE peers RENAME COLUMN address TO addr",
			"ALTER TABLE peers RENAME TO peers2",
			"DROP INDEX peers_addr",
			"INSERT INTO peers2 (node_id, addr) VALUES (X'02aa', '127.0.0.1:9735')",
			"UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = 1")},
			"SELECT count(*) = 1 FROM peers2 WHERE addr = '127.0.0.1:9735' AND last_seen = 0"},
		{"table rebuild with foreign keys off", []journal.Record{
			rec(2, "CREATE TABLE parent (id INTEGER PRIMARY KEY)", "CREATE TABLE child (id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id))",
				"INSERT INTO parent VALUES (1)", "INSERT INTO child VALUES (1, 1)"),
			rec(2, "PRAGMA foreign_keys = OFF;"),
			rec(3, "ALTER TABLE parent RENAME TO temp_parent", "CREATE TABLE parent (id INTEGER PRIMARY KEY, extra TEXT)",
				"INSERT INTO parent (id) SELECT id FROM temp_parent", "DROP TABLE temp_parent"),
			rec(3, "PRAGMA foreign_keys = ON;"),
			rec(3, "pragma FOREIGN_KEYS", "PRAGMA foreign_keys = 'off'", "PRAGMA foreign_keys=true")},
			"SELECT count(*) = 1 FROM parent"},
		{"values and functions", []journal.Record{rec(2,
			"INSERT OR REPLACE INTO kv VALUES ('a', lower(hex(zeroblob(4))))",
			"INSERT OR IGNORE INTO kv VALUES ('b', 'x')",
			"INSERT INTO kv SELECT 'n' || x, x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT x FROM c)",
			"UPDATE kv SET v = replace(v, 'x', 'y') WHERE k = 'b'",
			"DELETE FROM kv WHERE k = 'n5'",
			"UPDATE vars SET blobval = X'00ff', val = datetime(0, 'unixepoch') WHERE name = 'data_version'")},
			"SELECT count(*) = 1 FROM kv WHERE k = 'a' AND v = '00000000'"},
		{"trigger and view", []journal.Record{rec(2,
			"CREATE TABLE log (k TEXT)",
			"CREATE TRIGGER kv_log AFTER INSERT ON kv BEGIN INSERT INTO log VALUES (new.k); END",
			"CREATE VIEW kv_keys AS SELECT k FROM kv",
			"INSERT INTO kv VALUES ('t', 'v')",
			"INSERT INTO log SELECT k || '!' FROM kv_keys WHERE k = 't'")},
			"SELECT count(*) = 2 FROM log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			d, path := sandboxDB(t, dir)
			mustApply(t, d, tc.recs...)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if n := count(t, path, tc.check); n != 1 {
				t.Fatalf("%s: %d", tc.check, n)
			}
			if names := listDir(t, dir); !slices.Equal(names, []string{"lightningd.sqlite3"}) {
				t.Errorf("database directory holds %v", names)
			}
		})
	}
}

// Computed values are bounded (zeroblob and randomblob bombs); the largest
// value a journal record can carry still fits.
func TestSandboxBoundsValues(t *testing.T) {
	t.Parallel()
	d, _ := sandboxDB(t, t.TempDir())
	for _, s := range []string{
		"INSERT INTO kv VALUES ('z', zeroblob(1000000000))",
		"INSERT INTO kv VALUES ('r', randomblob(2000000000))",
		"INSERT INTO kv VALUES ('p', printf('%.*c', 1000000000, 'x'))",
	} {
		err := d.Apply(rec(2, s))
		if err == nil || !strings.Contains(err.Error(), "too big") {
			t.Errorf("%s: %v; want string or blob too big", s, err)
		}
	}
	mustApply(t, d, rec(2, "INSERT INTO kv VALUES ('big', zeroblob(1 << 20))"))
}

// Every connection the package opens is hardened, the replay connections
// and the read-only ones of IntegrityCheck, Diff and DataVersionOf.
func TestSandboxConnectionSettings(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d, path := sandboxDB(t, dir)
	ro, err := openRO(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	roConn, err := ro.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer roConn.Close()
	for name, conn := range map[string]interface {
		Raw(func(any) error) error
	}{"replay": d.conn, "read-only": roConn} {
		err := conn.Raw(func(dc any) error {
			c := dc.(*sqlite3.SQLiteConn)
			if on, err := dbConfigGet(c, dbconfigDefensive); err != nil || !on {
				t.Errorf("%s: defensive %v %v", name, on, err)
			}
			if on, err := dbConfigGet(c, dbconfigTrustedSchema); err != nil || on {
				t.Errorf("%s: trusted schema %v %v", name, on, err)
			}
			if on, err := dbConfigGet(c, dbconfigEnableLoadExtension); err != nil || on {
				t.Errorf("%s: load extension %v %v", name, on, err)
			}
			if n := c.GetLimit(sqlite3.SQLITE_LIMIT_ATTACHED); n != 0 {
				t.Errorf("%s: %d attached databases allowed", name, n)
			}
			if n := c.GetLimit(sqlite3.SQLITE_LIMIT_LENGTH); n != MaxValueLen {
				t.Errorf("%s: length limit %d", name, n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var store int
	if err := roConn.QueryRowContext(context.Background(), "PRAGMA temp_store").Scan(&store); err != nil || store != 2 {
		t.Errorf("temp_store %d %v, want 2 (memory)", store, err)
	}
}

func TestFirstWord(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"ATTACH 'x' AS y", "ATTACH"},
		{"  \n\tcommit;", "commit"},
		{";;; BEGIN", "BEGIN"},
		{"-- c\nEND", "END"},
		{"/* a */ /**/VACUUM", "VACUUM"},
		{"/* unterminated", ""},
		{"-- only a comment", ""},
		{"INSERT INTO t VALUES (1)", "INSERT"},
		{"", ""},
	} {
		if got := firstWord(tc.in); got != tc.want {
			t.Errorf("firstWord(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A statement that runs for ever (a record from an untrusted store can hold
// one) is interrupted when ApplyContext's context is cancelled, and the
// change is rolled back.
func TestApplyContextInterrupts(t *testing.T) {
	t.Parallel()
	d, _ := sandboxDB(t, t.TempDir())
	before := kvState(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := d.ApplyContext(ctx, rec(2, "INSERT INTO kv VALUES ('b', 'y')",
		"INSERT INTO kv SELECT 'n' || x, x FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c WHERE x < 0)"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ApplyContext: %v; want the context's error", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("interrupt took %v", took)
	}
	if after := kvState(t, d); after != before {
		t.Fatalf("database changed: %s, was %s", after, before)
	}
	mustApply(t, d, rec(2, "INSERT INTO kv VALUES ('c', 'z')"))
}

// With a cancellable context go-sqlite3 runs statements another way
// (prepared one by one, with an interrupt watcher): the real trace still
// replays to the node's own database.
func TestApplyContextTrace1(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	path := filepath.Join(t.TempDir(), "lightningd.sqlite3")
	d := mustOpen(t, path)
	for _, r := range mustRecords(t, "../testdata/trace1.jsonl") {
		if err := d.ApplyContext(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if diff, err := Diff(path, "../testdata/trace1-final.sqlite3"); err != nil || len(diff) > 0 {
		t.Fatalf("diff with the node's database: %v\n%s", err, strings.Join(diff, "\n"))
	}
}
