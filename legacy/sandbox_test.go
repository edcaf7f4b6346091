package legacy

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/replay"
)

// plainSnapshot makes a database file with stmts outside the replay
// sandbox (what a crafted backup's snapshot entry can hold) and returns its
// bytes.
func plainSnapshot(t *testing.T, stmts ...string) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "crafted.sqlite3")
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			db.Close()
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A crafted Python-plugin backup whose entries try to leave the database
// (issue #12: ATTACH, VACUUM INTO, ... replayed verbatim by a legacy
// restore) fails the restore with ErrRefused, naming the backup, the
// data_version and the statement, and leaves no file behind: neither the
// attack's target nor the restore's output.
func TestRestoreRefusesCraftedBackup(t *testing.T) {
	t.Parallel()
	schemaSnapshot := func(t *testing.T, extra ...string) []byte {
		return plainSnapshot(t, append(append([]string(nil), schema()...), extra...)...)
	}
	for _, tc := range []struct {
		name string
		// write fills the backup; out is a directory that must stay empty.
		write func(t *testing.T, w *pyWriter, out string)
		// want are pieces of the error.
		want []string
	}{
		{"attach and write a file", func(t *testing.T, w *pyWriter, out string) {
			w.change(1, schema()...)
			w.change(2, row(2, "a")...)
			w.change(3, "COMMIT", "ATTACH DATABASE '"+out+"/planted.db' AS p", "CREATE TABLE p.t(x)",
				"INSERT INTO p.t VALUES ('owned')", "BEGIN", bump(3))
		}, []string{"data_version 3 ", `statement 0 of 6 "COMMIT"`, "transaction control (COMMIT)"}},
		{"attach in one statement string", func(t *testing.T, w *pyWriter, out string) {
			w.change(1, schema()...)
			w.change(2, "INSERT INTO kv VALUES ('k', 'v'); ATTACH '"+out+"/planted.db' AS p", bump(2))
		}, []string{"data_version 2 ", `statement 0 of 2 "INSERT INTO kv VALUES ('k', 'v'); ATTACH '`, `ATTACH of "OUT/planted.db"`}},
		{"vacuum into", func(t *testing.T, w *pyWriter, out string) {
			w.change(1, schema()...)
			w.change(2, "VACUUM INTO '"+out+"/copy.db'")
		}, []string{"data_version 2 ", `"VACUUM INTO 'OUT/copy.db'"`, "VACUUM"}},
		{"pragma-only entry", func(t *testing.T, w *pyWriter, out string) {
			w.change(1, schema()...)
			w.change(1, "PRAGMA foreign_keys = OFF; VACUUM INTO '"+out+"/copy.db'")
		}, []string{"data_version 1 ", `"PRAGMA foreign_keys = OFF; VACUUM INTO`, "ATTACH of"}},
		{"other pragma", func(t *testing.T, w *pyWriter, out string) {
			w.change(1, schema()...)
			w.change(1, "PRAGMA writable_schema = ON")
		}, []string{"data_version 1 ", `"PRAGMA writable_schema = ON"`}},
		{"snapshot with a virtual table", func(t *testing.T, w *pyWriter, out string) {
			w.snapshot(1, schemaSnapshot(t, "CREATE VIRTUAL TABLE f USING fts3(x)"))
			w.change(2, row(2, "a")...)
		}, []string{`virtual table "f"`}},
		{"snapshot with a trigger", func(t *testing.T, w *pyWriter, out string) {
			w.snapshot(1, schemaSnapshot(t,
				"CREATE TRIGGER evil AFTER INSERT ON kv BEGIN SELECT load_extension('"+out+"/evil.so'); END"))
			w.change(2, row(2, "a")...)
		}, []string{"data_version 2 ", "load_extension"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out := t.TempDir()
			w := newPyWriter()
			tc.write(t, w, out)
			backup := w.file(t)
			destDir := t.TempDir()
			dest := filepath.Join(destDir, "lightningd.sqlite3")
			_, err := Restore(backup, dest, nil)
			if !errors.Is(err, replay.ErrRefused) {
				t.Fatalf("Restore: %v; want replay.ErrRefused", err)
			}
			for _, want := range append([]string{backup, "lightningd never sends this"}, tc.want...) {
				if want = strings.ReplaceAll(want, "OUT", out); !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			for _, dir := range []string{out, destDir} {
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("%s holds %v", dir, entries)
				}
			}
		})
	}
}
