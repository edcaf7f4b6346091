package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/plugin"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

var legacyDbak = filepath.Join("..", "..", "testdata", "legacy-v1.dbak")

// copyLegacy copies the real v1 backup into dir.
func copyLegacy(t *testing.T, dir string) string {
	t.Helper()
	data, err := os.ReadFile(legacyDbak)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "backup.dbak")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestImportCommand imports the real v1 backup, prints JSON, restores an
// old version of it, and refuses what it must.
func TestImportCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbak := copyLegacy(t, dir)
	storeURL := "file://" + filepath.Join(dir, "store")
	out, errOut, ok := run(t, "import", "--json", "--node", "old", "file://"+dbak, storeURL)
	if !ok {
		t.Fatalf("import: %s", errOut)
	}
	var res importResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("import --json: %v\n%s", err, out)
	}
	if res.Node != "old" || res.Version != 400 || res.FirstVersion != 1 || res.JournalRecords != 1 || !res.StoreCreated {
		t.Fatalf("import: %+v", res)
	}
	for _, args := range [][]string{{"list", storeURL}, {"verify", storeURL}, {"status", "--node", "old", storeURL}} {
		if _, errOut, ok := run(t, args...); !ok {
			t.Fatalf("%v after the import: %s", args, errOut)
		}
	}
	dest := filepath.Join(dir, "at57.sqlite3")
	if _, errOut, ok := run(t, "restore", "--node", "old", "--version", "57", storeURL, dest); !ok {
		t.Fatalf("restore --version 57: %s", errOut)
	}
	if v, _, err := replay.DataVersionOf(dest); err != nil || v != 57 {
		t.Fatalf("restored data_version %d (%v), want 57", v, err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"node in use", []string{"import", "--node", "old", "file://" + dbak, storeURL}, "node already exists"},
		{"not a legacy backup", []string{"import", "--node", "new", "file://" + dest, storeURL}, "not a backup file of the Python backup plugin"},
		{"no backup server there", []string{"import", "--node", "new", "socket:127.0.0.1:1", storeURL}, "is the Python plugin's backup-cli server running there?"},
		{"tls to a backup server", []string{"import", "--node", "new", "socket:127.0.0.1:1?tls=system", storeURL}, "speaks no TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, errOut, ok := run(t, tc.args...); ok || !strings.Contains(errOut, tc.want) {
				t.Fatalf("%v: ok %v, %s; want %q", tc.args, ok, errOut, tc.want)
			}
		})
	}
}

// TestInitImportLegacy switches a lightning directory from the Python
// plugin: the old lock is kept as backup.lock.legacy, ours is written, and
// the plugin opens the node at the imported version and appends the next.
func TestInitImportLegacy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbak := copyLegacy(t, dir)
	ldir := filepath.Join(dir, "lightning")
	if err := os.Mkdir(ldir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := history.RestoreLegacy(t.Context(), dbak, filepath.Join(ldir, "lightningd.sqlite3"), nil); err != nil {
		t.Fatal(err)
	}
	pyLock := `{"backend_url": "file://` + dbak + `"}`
	lockPath := filepath.Join(ldir, "backup.lock")
	if err := os.WriteFile(lockPath, []byte(pyLock), 0o600); err != nil {
		t.Fatal(err)
	}
	storeURL := "file://" + filepath.Join(dir, "store")
	// Without --import-legacy, init says how to switch.
	if _, errOut, ok := run(t, "init", "--lightning-dir", ldir, storeURL); ok || !strings.Contains(errOut, "--import-legacy") {
		t.Fatalf("init over the Python plugin's lock: ok %v, %s", ok, errOut)
	}
	out, errOut, ok := run(t, "init", "--lightning-dir", ldir, "--import-legacy", "file://"+dbak, storeURL)
	if !ok {
		t.Fatalf("init --import-legacy: %s", errOut)
	}
	if !strings.Contains(out, "backup.lock.legacy") {
		t.Fatalf("init --import-legacy printed:\n%s", out)
	}
	if old, err := os.ReadFile(lockPath + ".legacy"); err != nil || string(old) != pyLock {
		t.Fatalf("backup.lock.legacy: %q, %v", old, err)
	}
	l, err := readLock(lockPath)
	if err != nil || l.Node != history.DefaultNode || l.BackendURL != storeURL {
		t.Fatalf("backup.lock: %+v, %v", l, err)
	}
	// Run again: the directory is set up already.
	if _, errOut, ok := run(t, "init", "--lightning-dir", ldir, "--import-legacy", "file://"+dbak, storeURL); ok || !strings.Contains(errOut, "not the Python backup plugin's") {
		t.Fatalf("second init --import-legacy: ok %v, %s", ok, errOut)
	}

	// The plugin continues with no gap.
	b, start, err := plugin.OpenStore(t.Context(), plugin.Lock{URL: storeURL, Node: l.Node, Dir: ldir})
	if err != nil {
		t.Fatal(err)
	}
	if start.Held != 400 || !start.Replaceable {
		t.Fatalf("plugin start: %+v", start)
	}
	if err := b.Append(401, []string{"UPDATE vars SET intval = intval + 1 WHERE name = 'data_version'"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(dir, "newest.sqlite3")
	if _, errOut, ok := run(t, "restore", storeURL, dest); !ok {
		t.Fatalf("restore: %s", errOut)
	}
	if v, _, err := replay.DataVersionOf(dest); err != nil || v != 401 {
		t.Fatalf("restored data_version %d (%v), want 401", v, err)
	}
}

// setDataVersion sets the data_version of the database at path.
func setDataVersion(t *testing.T, path string, v uint32) {
	t.Helper()
	db, err := replay.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	stmt := fmt.Sprintf("UPDATE vars SET intval = %d WHERE name = 'data_version'", v)
	if err := db.Apply(journal.Record{Version: v, Statements: []string{stmt}}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestInitImportLegacyVersions: init --import-legacy compares the live
// database's data_version with the backup's (400): equal, or one behind
// (the change lightningd re-sends), imports; a database ahead of the
// backup (changes it misses) or further behind is refused before anything
// is imported, saying what to do.
func TestInitImportLegacyVersions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		live uint32 // 0: no database
		want string // "" for success
	}{
		{"no database", 0, ""},
		{"same version", 400, ""},
		{"one behind", 399, ""},
		{"database ahead", 405, "the backup misses 5 changes"},
		{"database far behind", 300, "the database is older than its backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			dbak := copyLegacy(t, dir)
			ldir := filepath.Join(dir, "lightning")
			if err := os.Mkdir(ldir, 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.live != 0 {
				db := filepath.Join(ldir, "lightningd.sqlite3")
				if _, err := history.RestoreLegacy(t.Context(), dbak, db, nil); err != nil {
					t.Fatal(err)
				}
				if tc.live != 400 {
					setDataVersion(t, db, tc.live)
				}
			}
			storeDir := filepath.Join(dir, "store")
			_, errOut, ok := run(t, "init", "--lightning-dir", ldir, "--import-legacy", "file://"+dbak, "file://"+storeDir)
			if tc.want == "" {
				if !ok {
					t.Fatalf("init --import-legacy: %s", errOut)
				}
				return
			}
			if ok || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "nothing was imported") {
				t.Fatalf("init --import-legacy: ok %v, %s; want %q", ok, errOut, tc.want)
			}
			if _, err := os.Stat(storeDir); err == nil {
				t.Fatalf("a refused init created the store %s", storeDir)
			}
			if _, err := os.Stat(filepath.Join(ldir, "backup.lock")); err == nil {
				t.Fatal("a refused init wrote backup.lock")
			}
		})
	}
}

// TestInitImportLegacyHotJournal: lightningd killed mid-transaction (its
// data_version bump to 401 spilled into the file, a hot journal beside it)
// left the database committed at the backup's 400: init --import-legacy
// reads that committed version from a private copy, imports, and leaves
// the node's database and journal byte-identical.
func TestInitImportLegacyHotJournal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dbak := copyLegacy(t, dir)
	ldir := filepath.Join(dir, "lightning")
	if err := os.Mkdir(ldir, 0o700); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(ldir, "lightningd.sqlite3")
	if _, err := history.RestoreLegacy(t.Context(), dbak, db, nil); err != nil {
		t.Fatal(err)
	}
	startHotWriter(t, db)()
	before, beforeJournal := stateOf(t, db), stateOf(t, db+"-journal")
	out, errOut, ok := run(t, "init", "--lightning-dir", ldir, "--import-legacy", "file://"+dbak, "file://"+filepath.Join(dir, "store"))
	if !ok || !strings.Contains(out, "data_versions 1 to 400") {
		t.Fatalf("init --import-legacy over a hot journal: ok %v\n%s%s", ok, out, errOut)
	}
	if after := stateOf(t, db); !bytes.Equal(after.data, before.data) || !after.mtime.Equal(before.mtime) {
		t.Fatal("init --import-legacy changed the node's database")
	}
	if after := stateOf(t, db+"-journal"); !bytes.Equal(after.data, beforeJournal.data) {
		t.Fatal("init --import-legacy changed the node's hot journal")
	}
}
