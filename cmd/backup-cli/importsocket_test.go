package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/legacy/legacytest"
	ld "github.com/clnbackup/backup/plugin/lightningdtest"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

var pluginBin = &builtBin{name: "backup-plugin", pkg: "../backup-plugin"}

// TestInitImportLegacySocketsThenPlugin switches a lightning directory
// whose Python plugin wrote to its backup server (socket:) over to a store
// server (socket:, a node token): init --import-legacy reads the backup
// back from a server speaking the legacy protocol, the store server starts
// the node's journal where the import left off, and the real plugin, driven
// as lightningd drives it, continues the trace with no gap: appends,
// a re-sent (rewound) data_version, a compaction. The store then restores
// to lightningd's database table by table.
func TestInitImportLegacySocketsThenPlugin(t *testing.T) {
	t.Parallel()
	plugin := pluginBin.get(t)
	dir := t.TempDir()
	dbak := copyLegacy(t, dir)
	legacyURL := "socket:" + legacytest.Serve(t, dbak)
	ldir := filepath.Join(dir, "lightning")
	if err := os.Mkdir(ldir, 0o700); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(ldir, "lightningd.sqlite3")
	if _, err := history.RestoreLegacy(t.Context(), dbak, live, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ldir, "backup.lock"), []byte(`{"backend_url": "`+legacyURL+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	storeURL := "file://" + filepath.Join(dir, "store")
	st, _, err := store.Create(t.Context(), storeURL, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	socket, token := serveToken(t, storeURL, "default")

	out, errOut, ok := run(t, "init", "--lightning-dir", ldir, "--token", token, "--import-legacy", legacyURL, socket)
	if !ok || !strings.Contains(out, "data_versions 1 to 400") {
		t.Fatalf("init --import-legacy over sockets: ok %v\n%s%s", ok, out, errOut)
	}

	l := ld.StartT(t, plugin, ldir, true)
	db, err := replay.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	send := func(r journal.Record) {
		t.Helper()
		if ok, err := l.DBWrite(r.Version, r.Statements); err != nil || !ok {
			t.Fatalf("db_write %d: continued=%v, %v; log: %v", r.Version, ok, err, l.Logs())
		}
	}
	commit := func(r journal.Record) {
		t.Helper()
		send(r)
		if err := db.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
	commit(journal.Record{Version: 401, Statements: []string{"CREATE TABLE imported_kv (k INTEGER PRIMARY KEY, v TEXT)", ld.Bump(401)}})
	for v := uint32(402); v <= 420; v++ {
		r := journal.Record{Version: v, Statements: []string{fmt.Sprintf("INSERT OR REPLACE INTO imported_kv VALUES (%d, 'v%d')", v%5, v), ld.Bump(v)}}
		if v == 420 {
			// Answered, but lightningd dies before its commit, restarts
			// and re-sends 420 with other statements.
			send(r)
			l.Kill()
			l = ld.StartT(t, plugin, ldir, true)
			r = ld.Resent(r, "after restart")
		}
		commit(r)
		if v == 410 {
			if a, err := l.Compact(); err != nil {
				t.Fatalf("backup-compact: %v (%s)", err, a)
			}
			if _, err := l.CompactionIdle(60 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	n := &ld.Node{Dir: ldir, URL: socket, Token: token, Name: "default"}
	if err := n.MatchesFile(live); err != nil {
		t.Fatal(err)
	}
}
