package replay

import (
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store/journal"
)

func mustOpen(t *testing.T, path string) *DB {
	t.Helper()
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func mustApply(t *testing.T, d *DB, recs ...journal.Record) {
	t.Helper()
	for _, r := range recs {
		if err := d.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
}

func rec(v uint32, stmts ...string) journal.Record {
	return journal.Record{Version: v, Statements: stmts}
}

func mustRecords(t *testing.T, path string) []journal.Record {
	t.Helper()
	tr, err := ReadTrace(path)
	if err != nil {
		t.Fatal(err)
	}
	return Records(tr)
}

// replayInto applies recs to a new database file and closes it.
func replayInto(t *testing.T, recs []journal.Record) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lightningd.sqlite3")
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, d, recs...)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadTrace(t *testing.T) {
	t.Parallel()
	tr, err := ReadTrace("../testdata/trace1.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var hooks, before, events int
	for _, e := range tr {
		if e.IsHook() {
			hooks++
			if e.BeforeInit {
				before++
			}
		} else {
			events++
		}
	}
	if hooks != 387 || before != 12 || events != 6 {
		t.Fatalf("hooks %d (before init %d), events %d; want 387 (12), 6", hooks, before, events)
	}
	if tr[0].Event != "getmanifest" || tr[0].PID != 4176 {
		t.Fatalf("first entry %+v", tr[0])
	}
	if h := tr[1]; h.Version != 1 || len(h.Writes) != 211 || !h.BeforeInit || h.Seq != 0 {
		t.Fatalf("first hook: version %d, %d writes, before_init %v, seq %d", h.Version, len(h.Writes), h.BeforeInit, h.Seq)
	}
	recs := Records(tr)
	if len(recs) != 387 || recs[0].Seq != 1 || recs[386].Seq != 387 || recs[386].Version != 385 {
		t.Fatalf("records: %d, last %+v", len(recs), recs[len(recs)-1].Version)
	}

	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(bad, []byte(`{"event":"init","pid":1}`+"\n"+`{"pid":2}`+"\n"), 0o600)
	if _, err := ReadTrace(bad); err == nil || !strings.Contains(err.Error(), "entry 2") {
		t.Fatalf("want error naming entry 2, got %v", err)
	}
}

func TestTrace1(t *testing.T) {
	t.Parallel()
	recs := mustRecords(t, "../testdata/trace1.jsonl")
	path := filepath.Join(t.TempDir(), "lightningd.sqlite3")
	d := mustOpen(t, path)
	if _, ok, err := d.DataVersion(); ok || err != nil {
		t.Fatalf("empty database: ok %v err %v", ok, err)
	}
	mustApply(t, d, recs...)
	v, ok, err := d.DataVersion()
	if err != nil || !ok || v != 385 {
		t.Fatalf("DataVersion = %d, %v, %v; want 385", v, ok, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-journal", "-wal", "-shm"} {
		if _, err := os.Stat(path + suffix); err == nil {
			t.Errorf("%s left behind", path+suffix)
		}
	}
	if diff, err := Diff(path, "../testdata/trace1-final.sqlite3"); err != nil || len(diff) > 0 {
		t.Fatalf("diff with the node's database: %v\n%s", err, strings.Join(diff, "\n"))
	}
	if err := IntegrityCheck(path); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := DataVersionOf(path); err != nil || !ok || v != 385 {
		t.Fatalf("DataVersionOf = %d, %v, %v", v, ok, err)
	}
}

func TestCrash3(t *testing.T) {
	t.Parallel()
	recs := mustRecords(t, "../testdata/crash3.jsonl")
	final := "../testdata/crash3-final.sqlite3"

	naive := replayInto(t, recs)
	diff, err := Diff(naive, final)
	if err != nil {
		t.Fatal(err)
	}
	// The extra row shifts the rowids of the rows after it, so Diff reports
	// more than one line, but only about the datastore table.
	if len(diff) == 0 || diff[0] != "table datastore: 599 rows in A, 598 rows in B" {
		t.Fatalf("naive replay: want one extra datastore row, got:\n%s", strings.Join(diff, "\n"))
	}
	for _, l := range diff {
		if !strings.HasPrefix(l, "table datastore") && !strings.HasPrefix(l, "... and") {
			t.Errorf("naive replay: unexpected difference %q", l)
		}
	}
	const extra = "SELECT count(*) FROM datastore WHERE key = x'6c6f61640063336b00333436'" // load/c3k/346
	if a, b := count(t, naive, extra), count(t, final, extra); a != 1 || b != 0 {
		t.Fatalf("uncommitted row load/c3k/346: %d in the naive replay, %d in the node's database", a, b)
	}

	// The first hook with data_version 508 was never committed: the re-sent
	// one replaces it.
	first := -1
	var fixed []journal.Record
	for i, r := range recs {
		if r.Version == 508 && first < 0 {
			first = i
			continue
		}
		fixed = append(fixed, r)
	}
	if first < 0 || len(fixed) != len(recs)-1 {
		t.Fatal("no data_version 508 in crash3")
	}
	path := replayInto(t, fixed)
	if diff, err := Diff(path, final); err != nil || len(diff) > 0 {
		t.Fatalf("diff: %v\n%s", err, strings.Join(diff, "\n"))
	}
	if v, ok, err := DataVersionOf(path); err != nil || !ok || v != 611 {
		t.Fatalf("DataVersionOf = %d, %v, %v; want 611", v, ok, err)
	}
	if err := IntegrityCheck(path); err != nil {
		t.Fatal(err)
	}
}

// plainExec runs stmts on the database at path outside the sandbox, to make
// files with settings no replayed record may make.
func plainExec(t *testing.T, path string, stmts ...string) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}
	db, err := sql.Open("sqlite3", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func count(t *testing.T, path, query string) int {
	t.Helper()
	db, err := openRO(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

const fkSchema = `CREATE TABLE parent (id INTEGER PRIMARY KEY);
CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id) ON DELETE CASCADE);
INSERT INTO parent VALUES (1), (2), (3);
INSERT INTO child VALUES (10, 1), (20, 2), (30, 3);`

// PRAGMA-only records run outside any transaction, so
// `PRAGMA foreign_keys = OFF` really turns foreign keys off for the changes
// after it, as in lightningd; inside a transaction SQLite ignores it.
func TestPragmaOutsideTransaction(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "db.sqlite3")
	d := mustOpen(t, path)
	mustApply(t, d, rec(1, fkSchema))

	// Foreign keys are on after Open: a delete cascades, an orphan fails.
	mustApply(t, d, rec(2, "DELETE FROM parent WHERE id = 1"))
	if err := d.Apply(rec(3, "INSERT INTO child VALUES (40, 99)")); err == nil {
		t.Fatal("orphan insert succeeded with foreign keys on")
	}
	// A pragma inside a transaction changes nothing.
	mustApply(t, d, rec(3, "PRAGMA foreign_keys = OFF;", "DELETE FROM parent WHERE id = 2"))

	// As a record of its own it turns them off for what follows.
	off := rec(3, "PRAGMA foreign_keys = OFF;")
	if !off.PragmaOnly() {
		t.Fatal("not PRAGMA-only")
	}
	mustApply(t, d, off,
		rec(4, "DELETE FROM parent WHERE id = 3"),
		rec(5, "INSERT INTO child VALUES (50, 99)"),
		rec(5, "PRAGMA foreign_keys = ON;"))
	if err := d.Apply(rec(6, "INSERT INTO child VALUES (60, 98)")); err == nil {
		t.Fatal("orphan insert succeeded after PRAGMA foreign_keys = ON")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// 10 and 20 went with their parents, 30 stayed (no cascade), 50 is an
	// orphan inserted while foreign keys were off.
	db, err := openRO(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got string
	if err := db.QueryRow("SELECT group_concat(id) FROM (SELECT id FROM child ORDER BY id)").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "30,50" {
		t.Fatalf("child ids %q, want 30,50", got)
	}
}

func TestApplyErrorRollsBack(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "db.sqlite3")
	d := mustOpen(t, path)
	mustApply(t, d, rec(1, "CREATE TABLE t (x INTEGER UNIQUE)", "INSERT INTO t VALUES (1)"))
	r := journal.Record{Seq: 42, Version: 7, Statements: []string{
		"INSERT INTO t VALUES (2)",
		"INSERT INTO t VALUES (1) -- " + strings.Repeat("long ", 100),
		"INSERT INTO t VALUES (3)",
	}}
	err := d.Apply(r)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"data_version 7", "seq 42", "statement 1 of 3", "INSERT INTO t VALUES (1)", "UNIQUE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if len(err.Error()) > 400 {
		t.Errorf("error quotes too much of the statement: %d bytes", len(err.Error()))
	}
	// Nothing of the failed change stayed, and the connection is usable.
	mustApply(t, d, rec(8, "INSERT INTO t VALUES (4)"))
	var got string
	if err := d.conn.QueryRowContext(t.Context(), "SELECT group_concat(x) FROM t").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1,4" {
		t.Fatalf("rows %q, want 1,4", got)
	}
	// A failing PRAGMA-only record names its statement too.
	if err := d.Apply(rec(9, "PRAGMA nonsense(")); err == nil || !strings.Contains(err.Error(), "statement 0 of 1") {
		t.Fatalf("pragma error: %v", err)
	}
}

func TestOpenKeepsHeaderSettings(t *testing.T) {
	t.Parallel()
	// An odd file name and a non-default page size.
	path := filepath.Join(t.TempDir(), "a b?c#d%20.sqlite3")
	// lightningd's records never set the page size (the sandbox refuses
	// it): the file is made so outside replay.
	plainExec(t, path, "PRAGMA page_size = 8192", "VACUUM")
	d := mustOpen(t, path)
	mustApply(t, d, rec(1, "CREATE TABLE vars (name TEXT PRIMARY KEY, intval INTEGER)"))
	if _, ok, err := d.DataVersion(); ok || err != nil {
		t.Fatalf("vars without data_version: ok %v err %v", ok, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at the given path: %v", err)
	}
	d = mustOpen(t, path)
	mustApply(t, d, rec(2, "INSERT INTO vars VALUES ('data_version', 2)"))
	if v, ok, err := d.DataVersion(); v != 2 || !ok || err != nil {
		t.Fatalf("DataVersion = %d %v %v", v, ok, err)
	}
	d.Close()
	if n := count(t, path, "PRAGMA page_size"); n != 8192 {
		t.Fatalf("page size %d after reopening, want 8192", n)
	}
	if err := IntegrityCheck(path); err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notDB := filepath.Join(dir, "text")
	os.WriteFile(notDB, []byte(strings.Repeat("not a database\n", 100)), 0o600)
	if _, err := Open(notDB); err == nil {
		t.Error("opened a text file")
	}
	if _, err := Open(filepath.Join(dir, "missing", "db")); err == nil {
		t.Error("opened a file in a missing directory")
	}
	if _, _, err := DataVersionOf(filepath.Join(dir, "missing.sqlite3")); err == nil {
		t.Error("DataVersionOf of a missing file")
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.sqlite3")); err == nil {
		t.Error("read-only open created the file")
	}
}

func TestIntegrityCheckFindsDamage(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../testdata/trace1-final.sqlite3")
	if err != nil {
		t.Fatal(err)
	}
	// Scramble the cell area of some pages but leave the page headers, so
	// SQLite opens the file and finds the damage while checking it.
	for p := 2; p*4096 < len(data); p += 7 {
		for i := p*4096 - 1024; i < p*4096-8; i++ {
			data[i] ^= 0x5a
		}
	}
	path := filepath.Join(t.TempDir(), "damaged.sqlite3")
	os.WriteFile(path, data, 0o600)
	for name, check := range map[string]func(string) error{"read": IntegrityCheck, "mapped": IntegrityCheckMapped} {
		err := check(path)
		if err == nil {
			t.Fatalf("%s: no error for a damaged database", name)
		}
		t.Log(name, err)
	}
	if err := IntegrityCheckMapped("../testdata/trace1-final.sqlite3"); err != nil {
		t.Fatalf("mapped check of an intact database: %v", err)
	}
}

// TestIntegrityCheckPartlyMapped: a mapped check of a file larger than
// the mapping (SQLite maps at most 2 GB) reads the pages past it through
// its page cache, and finds damage there.
func TestIntegrityCheckPartlyMapped(t *testing.T) {
	data, err := os.ReadFile("../testdata/trace1-final.sqlite3")
	if err != nil {
		t.Fatal(err)
	}
	half := int64(len(data)/2/4096) * 4096
	old := checkMappingLimit
	checkMappingLimit = half
	defer func() { checkMappingLimit = old }()
	if err := IntegrityCheckMapped("../testdata/trace1-final.sqlite3"); err != nil {
		t.Fatalf("partly mapped check of an intact database: %v", err)
	}
	// Damage past the mapping only.
	for p := int(half/4096) + 2; p*4096 < len(data); p += 3 {
		for i := p*4096 - 1024; i < p*4096-8; i++ {
			data[i] ^= 0x5a
		}
	}
	path := filepath.Join(t.TempDir(), "damaged.sqlite3")
	os.WriteFile(path, data, 0o600)
	if err := IntegrityCheckMapped(path); err == nil {
		t.Fatal("no error for damage past the mapping")
	}
}

func TestRewriteLegacy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"UPDATE outputs SET status=2, reserved_til=1234WHERE prev_out_tx=?",
			"UPDATE outputs SET status=2, reserved_til=1234 WHERE prev_out_tx=?"},
		{"UPDATE channels SET peer_id=5WHERE channels.id=7", "UPDATE channels SET peer_id=5 WHERE channels.id=7"},
		{"UPDATE a SET reserved_til=1WHERE x=1; UPDATE b SET reserved_til=22WHERE y=2",
			"UPDATE a SET reserved_til=1 WHERE x=1; UPDATE b SET reserved_til=22 WHERE y=2"},
		// Already correct, or not the pattern: unchanged.
		{"UPDATE outputs SET reserved_til=1234 WHERE x=1", "UPDATE outputs SET reserved_til=1234 WHERE x=1"},
		{"UPDATE channels SET peer_id=5WHERE id=7", "UPDATE channels SET peer_id=5WHERE id=7"},
		{"UPDATE channels SET peer_id=5WHERE channelsXid=7", "UPDATE channels SET peer_id=5WHERE channelsXid=7"},
		{"UPDATE outputs SET reserved_til=WHERE", "UPDATE outputs SET reserved_til=WHERE"},
		{"UPDATE outputs SET reserved_til=NULLWHERE", "UPDATE outputs SET reserved_til=NULLWHERE"},
		{"INSERT INTO t VALUES ('reserved_til=1WHERE')", "INSERT INTO t VALUES ('reserved_til=1 WHERE')"},
		{"", ""},
	} {
		if got := RewriteLegacy(tc.in); got != tc.want {
			t.Errorf("RewriteLegacy(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A database in WAL mode stays in WAL mode (the mode is in the file header),
// and Close leaves no -wal or -shm behind.
func TestOpenKeepsWAL(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "wal.sqlite3")
	// A WAL-mode file (a snapshot of a node run in WAL mode); the
	// sandbox refuses PRAGMA journal_mode in a record.
	plainExec(t, path, "PRAGMA journal_mode = WAL", "CREATE TABLE t (x)")
	d := mustOpen(t, path)
	mustApply(t, d, rec(2, "INSERT INTO t VALUES (1)"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"-journal", "-wal", "-shm"} {
		if _, err := os.Stat(path + s); err == nil {
			t.Errorf("%s left behind", s)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if data[18] != 2 || data[19] != 2 {
		t.Fatalf("file format bytes %d %d, want 2 2 (WAL)", data[18], data[19])
	}
	if n := count(t, path, "SELECT count(*) FROM t"); n != 1 {
		t.Fatalf("%d rows", n)
	}
}
