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

// TestInitImportLegacyThenPlugin switches a lightning directory from the
// Python plugin, then drives the real plugin as lightningd does: it
// continues the trace with no gap (appends, a compaction, a data_version
// re-sent after a restart), and the store restores to lightningd's database
// table by table. Two setups: a .dbak file into a file:// store, and the
// Python plugin's backup server (socket:, read back with the legacy
// protocol) into a store server (socket:, a node token), which starts the
// node's journal where the import left off.
func TestInitImportLegacyThenPlugin(t *testing.T) {
	t.Parallel()
	for _, sockets := range []bool{false, true} {
		name := "files"
		if sockets {
			name = "sockets"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			importThenPlugin(t, sockets)
		})
	}
}

func importThenPlugin(t *testing.T, sockets bool) {
	plugin := pluginBin.get(t)
	dir := t.TempDir()
	dbak := copyLegacy(t, dir)
	legacyURL := "file://" + dbak
	if sockets {
		legacyURL = "socket:" + legacytest.Serve(t, dbak)
	}
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
	args := []string{"init", "--lightning-dir", ldir, "--import-legacy", legacyURL}
	var token string
	if sockets {
		st, _, err := store.Create(t.Context(), storeURL, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		storeURL, token = serveToken(t, storeURL, "default")
		args = append(args, "--token", token)
	}
	out, errOut, ok := run(t, append(args, storeURL)...)
	if !ok || !strings.Contains(out, "data_versions 1 to 400") {
		t.Fatalf("init --import-legacy: ok %v\n%s%s", ok, out, errOut)
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
	n := &ld.Node{Dir: ldir, URL: storeURL, Token: token, Name: "default"}
	if err := n.MatchesFile(live); err != nil {
		t.Fatal(err)
	}
}
