package replay

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pair builds two databases from a common script plus one script each.
func pair(t *testing.T, common, onlyA, onlyB string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for i, extra := range []string{onlyA, onlyB} {
		p := filepath.Join(dir, fmt.Sprintf("%c.sqlite3", 'a'+i))
		d, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{common, extra} {
			if s != "" {
				mustApply(t, d, rec(1, s))
			}
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths[0], paths[1]
}

const diffBase = `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n);
CREATE TABLE w (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
CREATE TABLE d (ts DATETIME, flag BOOLEAN);
CREATE TABLE h (x INTEGER, rowid TEXT);
INSERT INTO t VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', NULL);
INSERT INTO w VALUES ('k1', x'01'), ('k2', x'02');
INSERT INTO h VALUES (1, 'r');
`

func TestDiff(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		onlyA, onlyB string
		want         []string
	}{
		{"equal", "", "", nil},
		{"equal, different insertion order (no rowid to differ)",
			"INSERT INTO w VALUES ('k3', 3); INSERT INTO w VALUES ('k4', 4);",
			"INSERT INTO w VALUES ('k4', 4); INSERT INTO w VALUES ('k3', 3);", nil},
		{"rowid counts", "INSERT INTO d VALUES (1, 0); INSERT INTO d VALUES (2, 1);",
			"INSERT INTO d VALUES (2, 1); INSERT INTO d VALUES (1, 0);",
			[]string{"table d rowid 1: column ts: A 1, B 2", "table d rowid 1: column flag: A 0, B 1",
				"table d rowid 2: column ts: A 2, B 1", "table d rowid 2: column flag: A 1, B 0"}},
		{"changed cell", "", "UPDATE t SET v = 'B' WHERE id = 2",
			[]string{`table t rowid 2: column v: A "b", B "B"`}},
		{"missing row", "", "DELETE FROM t WHERE id = 3",
			[]string{"table t: 3 rows in A, 2 rows in B", "table t: row only in A: (rowid=3, id=3, v=\"c\", n=NULL)"}},
		{"extra table", "", "CREATE TABLE extra (x); INSERT INTO extra VALUES (1);",
			[]string{"table extra: only in B"}},
		{"extra index", "CREATE INDEX ti ON t(v)", "",
			[]string{"index ti: only in A"}},
		{"schema differs", "ALTER TABLE t ADD COLUMN m INTEGER", "ALTER TABLE t ADD COLUMN m TEXT",
			[]string{"table t: schema differs:\n" +
				"  A: CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n, m INTEGER)\n" +
				"  B: CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, n, m TEXT)"}},
		{"types count: 1, 1.0 and '1' differ", "", "UPDATE t SET n = 1.0 WHERE id = 1; UPDATE t SET n = '2' WHERE id = 2",
			[]string{"table t rowid 1: column n: A 1, B 1", `table t rowid 2: column n: A 2, B "2"`}},
		{"without rowid", "", "UPDATE w SET v = x'03' WHERE k = 'k2'",
			[]string{"table w: row only in A: (k=\"k2\", v=x'02')", "table w: row only in B: (k=\"k2\", v=x'03')"}},
		{"no driver conversion of DATETIME and BOOLEAN",
			"INSERT INTO d VALUES ('2024-01-01 00:00:00', 2)", "INSERT INTO d VALUES ('2024-01-01T00:00:00Z', 1)",
			[]string{`table d rowid 1: column ts: A "2024-01-01 00:00:00", B "2024-01-01T00:00:00Z"`,
				"table d rowid 1: column flag: A 2, B 1"}},
		{"a column named rowid hides nothing", "", "DELETE FROM h; INSERT INTO h(rowid, x, _rowid_) VALUES ('r', 1, 7)",
			[]string{"table h: row only in A: (_rowid_=1, x=1, rowid=\"r\")",
				"table h: row only in B: (_rowid_=7, x=1, rowid=\"r\")"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := pair(t, diffBase, tc.onlyA, tc.onlyB)
			got, err := Diff(a, b)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestDiffBounded(t *testing.T) {
	t.Parallel()
	a, b := pair(t, "CREATE TABLE t (x)",
		"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 500) INSERT INTO t SELECT i FROM c",
		"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 500) INSERT INTO t SELECT -i FROM c")
	got, err := Diff(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != MaxDiffLines+1 || got[MaxDiffLines] != "... and 400 more differences" {
		t.Fatalf("%d lines, last %q", len(got), got[len(got)-1])
	}
}

func TestDiffErrors(t *testing.T) {
	t.Parallel()
	a, _ := pair(t, "CREATE TABLE t (x)", "", "")
	if _, err := Diff(a, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("no error for a missing file")
	}
}

// TestDiffRowidStreamedAsInMemory checks that the row-by-row comparison of
// rowid tables reports what the in-memory one does, in the same order, with
// changed cells, rows on one side and more differences than MaxDiffLines.
func TestDiffRowidStreamedAsInMemory(t *testing.T) {
	t.Parallel()
	const fill = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < 300) INSERT INTO t SELECT i, i, 'v' || i FROM c;"
	for _, tc := range []struct{ name, onlyA, onlyB string }{
		{"few", "DELETE FROM t WHERE id = 7", "UPDATE t SET v = 'x' WHERE id = 3; INSERT INTO t VALUES (301, 1, 2)"},
		{"many", "DELETE FROM t WHERE id % 3 = 0", "UPDATE t SET n = n * 1.0 WHERE id % 2 = 0; DELETE FROM t WHERE id % 5 = 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pa, pb := pair(t, "CREATE TABLE t (id INTEGER PRIMARY KEY, n, v TEXT);"+fill, tc.onlyA, tc.onlyB)
			a, err := openRO(pa)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := openRO(pb)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			tq, err := queryTable(a, "t")
			if err != nil {
				t.Fatal(err)
			}
			var streamed, inMemory diffOut
			if err := diffRowidTable(a, b, "t", tq, &streamed); err != nil {
				t.Fatal(err)
			}
			ta, err := readTable(a, tq)
			if err != nil {
				t.Fatal(err)
			}
			tb, err := readTable(b, tq)
			if err != nil {
				t.Fatal(err)
			}
			diffRows("t", ta, tb, &inMemory)
			got, want := streamed.lines(), inMemory.lines()
			if len(want) < 2 || !slices.Equal(got, want) {
				t.Fatalf("streamed:\n%s\nin memory:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}
