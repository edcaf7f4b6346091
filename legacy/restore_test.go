package legacy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store/journal"
)

func restore(t *testing.T, backup string) (string, Result) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "lightningd.sqlite3")
	res, err := Restore(backup, dest, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := replay.IntegrityCheck(dest); err != nil {
		t.Fatal(err)
	}
	return dest, res
}

// build applies changes directly: the database a correct restore must give.
func build(t *testing.T, changes ...[]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "want.sqlite3")
	d, err := replay.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range changes {
		if err := d.Apply(journal.Record{Version: uint32(i), Statements: c}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func sameDB(t *testing.T, got, want string) {
	t.Helper()
	diff, err := replay.Diff(got, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(diff) > 0 {
		t.Fatalf("restored database differs:\n%s", strings.Join(diff, "\n"))
	}
}

func TestRestoreRealV1(t *testing.T) {
	t.Parallel()
	dest := filepath.Join(t.TempDir(), "lightningd.sqlite3")
	var calls int
	var last, total int64
	res, err := Restore(realV1, dest, func(done, tot int64) {
		if done < last || done > tot {
			t.Errorf("progress %d of %d after %d", done, tot, last)
		}
		calls++
		last, total = done, tot
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Version: 400, Entries: 402, Changes: 400, Pragmas: 2}
	if res != want {
		t.Fatalf("result %+v, want %+v", res, want)
	}
	if calls < 402 || last != total || total != 145989 {
		t.Fatalf("progress: %d calls, last %d of %d", calls, last, total)
	}
	sameDB(t, dest, "../testdata/legacy-v1-live.sqlite3")
	if err := replay.IntegrityCheck(dest); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dest); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("dest: %v, %v", st.Mode(), err)
	}
	for _, s := range []string{"-journal", "-wal", "-shm"} {
		if _, err := os.Stat(dest + s); err == nil {
			t.Errorf("%s left behind", s)
		}
	}
}

func snapshotOf(t *testing.T, changes ...[]string) []byte {
	t.Helper()
	data, err := os.ReadFile(build(t, changes...))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestRestoreSnapshotThenChanges(t *testing.T) {
	t.Parallel()
	history := [][]string{schema(), row(2, "a"), row(3, "b"), row(4, "c"), row(5, "d"), row(6, "e")}
	want := build(t, history...)

	// backup-cli init on an existing database, then the node runs.
	w := newPyWriter()
	w.snapshot(3, snapshotOf(t, history[:3]...))
	w.change(4, history[3]...)
	w.change(5, history[4]...)
	w.change(6, history[5]...)
	dest, res := restore(t, w.file(t))
	sameDB(t, dest, want)
	if res != (Result{Version: 6, Entries: 4, Changes: 3, Snapshots: 1}) {
		t.Fatalf("result %+v", res)
	}

	// A snapshot in the middle replaces everything before it (compaction
	// leaves a snapshot at v-1 and the last change v).
	w = newPyWriter()
	w.change(1, history[0]...)
	w.change(2, row(2, "not in the snapshot")...)
	w.snapshot(5, snapshotOf(t, history[:5]...))
	w.change(6, history[5]...)
	dest, res = restore(t, w.file(t))
	sameDB(t, dest, want)
	if res != (Result{Version: 6, Entries: 4, Changes: 3, Snapshots: 1}) {
		t.Fatalf("result %+v", res)
	}
}

func TestRestoreIgnoresUnacknowledgedEntry(t *testing.T) {
	t.Parallel()
	w := newPyWriter()
	w.change(1, schema()...)
	w.change(2, row(2, "a")...)
	w.appendEntry(3, Change, []byte(strings.Join(row(3, "never acknowledged"), "\x00")))
	dest, res := restore(t, w.file(t))
	sameDB(t, dest, build(t, schema(), row(2, "a")))
	if res != (Result{Version: 2, Entries: 2, Changes: 2, Ignored: 1}) {
		t.Fatalf("result %+v", res)
	}
}

// lightningd died between the hook for version 4 and its commit, then sent
// version 4 again with other statements. The Python writer's rewind appends
// the new entry after the old one and leaves the header's offsets short.
func TestRestoreCrashBugLaterWins(t *testing.T) {
	t.Parallel()
	w := newPyWriter()
	w.change(1, schema()...)
	w.change(2, row(2, "a")...)
	w.change(3, row(3, "b")...)
	w.change(4, row(4, "never committed")...)
	w.rewind()
	w.change(4, "UPDATE kv SET v = 'migrated' WHERE k = 'a'", bump(4))
	w.change(5, row(5, "c")...)
	data := w.bytes()
	uncommitted := EntryHeaderSize + len(strings.Join(row(4, "never committed"), "\x00"))
	f, err := newFile("mem", bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if got := int(f.Header().OffsetHead); got != len(data)-uncommitted {
		t.Fatalf("offset_head %d, file %d bytes: the writer model is off", got, len(data))
	}
	dest, res := restore(t, writeTemp(t, data))
	sameDB(t, dest, build(t, schema(), row(2, "a"), row(3, "b"),
		[]string{"UPDATE kv SET v = 'migrated' WHERE k = 'a'", bump(4)}, row(5, "c")))
	if res != (Result{Version: 5, Entries: 6, Changes: 5, Dropped: 1}) {
		t.Fatalf("result %+v", res)
	}

	// The same with PRAGMA-only entries: the one after the uncommitted
	// change goes with it, the ones after the re-sent change stay.
	w = newPyWriter()
	w.change(1, schema()...)
	w.change(2, row(2, "a")...)
	w.change(2, "PRAGMA foreign_keys = OFF;")
	w.change(3, row(3, "never committed")...)
	w.change(3, "PRAGMA foreign_keys = OFF;")
	w.rewind()
	w.change(3, row(3, "b")...)
	w.change(3, "PRAGMA foreign_keys = ON;")
	dest, res = restore(t, w.file(t))
	sameDB(t, dest, build(t, schema(), row(2, "a"), row(3, "b")))
	if res != (Result{Version: 3, Entries: 7, Changes: 3, Pragmas: 2, Dropped: 2}) {
		t.Fatalf("result %+v", res)
	}
}

// PRAGMA-only entries repeat the version before them, are kept and run
// outside a transaction: with foreign keys off, a delete does not cascade.
func TestRestorePragmaRepeatKept(t *testing.T) {
	t.Parallel()
	fk := append(schema(),
		"CREATE TABLE peers (id INTEGER PRIMARY KEY)",
		"CREATE TABLE channels (id INTEGER PRIMARY KEY, peer_id INTEGER REFERENCES peers(id) ON DELETE CASCADE)",
		"INSERT INTO peers VALUES (1), (2)",
		"INSERT INTO channels VALUES (10, 1), (20, 2)")
	w := newPyWriter()
	w.change(1, fk...)
	w.change(1, "PRAGMA foreign_keys = OFF;")
	w.change(2, "DELETE FROM peers WHERE id = 1", bump(2))
	w.change(2, "PRAGMA foreign_keys = ON;")
	w.change(3, "DELETE FROM peers WHERE id = 2", bump(3))
	dest, res := restore(t, w.file(t))
	if res != (Result{Version: 3, Entries: 5, Changes: 3, Pragmas: 2}) {
		t.Fatalf("result %+v", res)
	}
	// Channel 10 stays (no cascade while foreign keys were off), 20 went.
	sameDB(t, dest, build(t, fk, []string{"PRAGMA foreign_keys = OFF;"}, []string{
		"DELETE FROM peers", "DELETE FROM channels WHERE id = 20",
		"UPDATE vars SET intval = 3 WHERE name = 'data_version'"}))
}

func TestRestoreRewritesMissingSpace(t *testing.T) {
	t.Parallel()
	s := append(schema(),
		"CREATE TABLE outputs (prev_out_index INTEGER PRIMARY KEY, reserved_til INTEGER)",
		"CREATE TABLE channels (id INTEGER PRIMARY KEY, peer_id INTEGER)",
		"INSERT INTO outputs VALUES (0, NULL)", "INSERT INTO channels VALUES (7, 1)")
	w := newPyWriter()
	w.change(1, s...)
	w.change(2, "UPDATE outputs SET reserved_til=123WHERE prev_out_index=0", bump(2))
	w.change(3, "UPDATE channels SET peer_id=5WHERE channels.id=7", bump(3))
	dest, _ := restore(t, w.file(t))
	sameDB(t, dest, build(t, s,
		[]string{"UPDATE outputs SET reserved_til=123 WHERE prev_out_index=0", bump(2)},
		[]string{"UPDATE channels SET peer_id=5 WHERE channels.id=7", bump(3)}))
}

func TestRestoreErrors(t *testing.T) {
	t.Parallel()
	gap := newPyWriter()
	gap.change(1, schema()...)
	gap.change(2, row(2, "a")...)
	gap.change(4, row(4, "b")...)

	back := newPyWriter()
	back.change(1, schema()...)
	back.change(2, row(2, "a")...)
	back.change(3, row(3, "b")...)
	back.change(2, row(2, "c")...)
	back.change(3, row(3, "d")...)

	pragma := newPyWriter()
	pragma.change(1, schema()...)
	pragma.change(7, "PRAGMA foreign_keys = OFF;")
	pragma.change(2, row(2, "a")...)

	failing := newPyWriter()
	failing.change(1, schema()...)
	failing.change(2, row(2, "a")...)
	failing.change(3, "INSERT INTO nosuchtable VALUES (1)", bump(3))

	version := newPyWriter()
	version.change(1, schema()...)
	version.change(2, "INSERT INTO kv VALUES ('x', 'y')") // no data_version bump

	notDB := newPyWriter()
	notDB.change(1, schema()...)
	notDB.snapshot(2, []byte("not a database"))

	for _, tc := range []struct {
		name string
		w    *pyWriter
		want string
	}{
		{"gap", gap, "change has version 4 after version 2"},
		{"going back", back, "change has version 2 after version 3"},
		{"pragma version", pragma, "PRAGMA-only change has version 7, but the database is at version 1"},
		{"failing statement", failing, "data_version 3 seq 0: statement 0 of 2 \"INSERT INTO nosuchtable VALUES (1)\""},
		{"data_version mismatch", version, "the restored database has data_version 1, the backup's header says 2"},
		{"snapshot not a database", notDB, "snapshot of 14 bytes is not a SQLite database"},
		{"empty backup", newPyWriter(), "no entries to restore"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			backup := tc.w.file(t)
			dest := filepath.Join(t.TempDir(), "lightningd.sqlite3")
			_, err := Restore(backup, dest, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), backup) {
				t.Fatalf("error %v, want %q naming the backup", err, tc.want)
			}
			entries, _ := os.ReadDir(filepath.Dir(dest))
			if len(entries) != 0 {
				t.Fatalf("left behind: %v", entries)
			}
		})
	}
}

func TestRestoreDest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing")
	os.WriteFile(existing, []byte("x"), 0o600)
	if _, err := Restore(realV1, existing, nil); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("error %v", err)
	}
	if data, _ := os.ReadFile(existing); string(data) != "x" {
		t.Fatal("existing file touched")
	}
	if _, err := Restore(realV1, dir, nil); err == nil {
		t.Fatal("restored onto a directory")
	}
	// An empty file (a temporary file made by the caller) is fine.
	tmp, err := os.CreateTemp(dir, "restore-*")
	if err != nil {
		t.Fatal(err)
	}
	tmp.Close()
	if res, err := Restore(realV1, tmp.Name(), nil); err != nil || res.Version != 400 {
		t.Fatalf("restore into an empty file: %+v, %v", res, err)
	}
	// A missing backup fails before dest is created.
	dest := filepath.Join(dir, "new")
	if _, err := Restore(filepath.Join(dir, "missing.dbak"), dest, nil); err == nil {
		t.Fatal("no error")
	}
	if _, err := os.Stat(dest); err == nil {
		t.Fatal("dest created")
	}
}
