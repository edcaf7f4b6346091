package plugin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store"
)

// TestGetManifest checks the manifest's shape and that answering it touches
// no file: lightningd may run the plugin only for --help.
func TestGetManifest(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	m := r.callID(`"cln:getmanifest#1"`, "getmanifest", map[string]any{"allow-deprecated-apis": false, "something-new": 1})
	var got struct {
		Options []struct {
			Name        string          `json:"name"`
			Type        string          `json:"type"`
			Default     json.RawMessage `json:"default"`
			Description string          `json:"description"`
		} `json:"options"`
		RPCMethods []struct {
			Name        string  `json:"name"`
			Usage       *string `json:"usage"`
			Description string  `json:"description"`
		} `json:"rpcmethods"`
		Hooks         []map[string]any `json:"hooks"`
		Subscriptions []string         `json:"subscriptions"`
		Dynamic       *bool            `json:"dynamic"`
		NonNumericIDs *bool            `json:"nonnumericids"`
	}
	if err := json.Unmarshal(m.Result, &got); err != nil {
		t.Fatalf("getmanifest result %s: %v", m.Result, err)
	}
	wantOpts := map[string]string{ // name -> type:default
		"backup-compact-changes":       "int:10000",
		"backup-compact-journal-bytes": "int:67108864",
		"backup-compact-interval":      `string:"24h"`,
		"backup-destination":           "string:",
		"backup-free-space-floor":      "int:1073741824",
	}
	for _, o := range got.Options {
		if want, ok := wantOpts[o.Name]; !ok || want != o.Type+":"+string(o.Default) {
			t.Errorf("option %s %s default %s: want %q", o.Name, o.Type, o.Default, want)
		}
		if o.Description == "" {
			t.Errorf("option %s has no description", o.Name)
		}
		delete(wantOpts, o.Name)
	}
	if len(wantOpts) > 0 {
		t.Errorf("options missing: %v", wantOpts)
	}
	var methods []string
	for _, rm := range got.RPCMethods {
		if rm.Usage == nil || rm.Description == "" {
			t.Errorf("method %s needs usage and description", rm.Name)
		}
		methods = append(methods, rm.Name)
	}
	if strings.Join(methods, ",") != "backup-compact,backup-status" {
		t.Errorf("rpcmethods %v", methods)
	}
	if len(got.Hooks) != 1 || got.Hooks[0]["name"] != "db_write" {
		t.Errorf("hooks %v", got.Hooks)
	}
	if got.Subscriptions == nil || len(got.Subscriptions) != 0 || !strings.Contains(string(m.Result), `"subscriptions":[]`) {
		t.Errorf("subscriptions must be an empty array: %s", m.Result)
	}
	if got.Dynamic == nil || *got.Dynamic || got.NonNumericIDs == nil || !*got.NonNumericIDs {
		t.Errorf("dynamic must be false and nonnumericids true: %s", m.Result)
	}
	if st := r.stop(); st != 0 {
		t.Fatalf("exit status %d", st)
	}
	if len(r.logs) != 0 {
		t.Errorf("getmanifest alone logged: %v", r.logs)
	}
	st, err := store.Open(bg, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	jdir := filepath.Join(strings.TrimPrefix(url, "file://"), store.JournalObject("default"))
	if _, err := os.Stat(jdir); !os.IsNotExist(err) {
		t.Errorf("getmanifest opened the node's journal (%s exists)", jdir)
	}
}

// TestDBWriteBeforeInit: lightningd writes its schema before init.
func TestDBWriteBeforeInit(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	r.call("getmanifest", map[string]any{})
	r.mustContinue(1, "CREATE TABLE t (x INTEGER)")
	r.mustContinue(1, "PRAGMA foreign_keys = OFF;")
	r.mustContinue(2, "INSERT INTO t VALUES (1)")
	r.init(nil)
	r.mustContinue(3, "INSERT INTO t VALUES (2)")
	if st := r.stop(); st != 0 {
		t.Fatalf("exit status %d", st)
	}
	for _, want := range []string{`Backing up node "default" to ` + url + `: the backup holds data_version 0`, "Versions match up"} {
		if len(r.logsWith(want)) != 1 {
			t.Errorf("want one log line %q; logs:\n%s", want, r.allLogs())
		}
	}
	// The first log line (backup.lock read at the first db_write) precedes
	// the first answer.
	if !strings.Contains(string(r.msgs[1].raw), "Backing up node") {
		t.Errorf("second message is %s, want the start-up log", r.msgs[1].raw)
	}
}

// TestIDs: ids are echoed byte for byte, numbers and strings alike.
func TestIDs(t *testing.T) {
	t.Parallel()
	dir, _ := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	ids := []string{`0`, `42`, `12345678901234567890`, `"cln:db_write#7"`, `"a<b>&\"c\u00e9/é"`, `"x/cln:init#3/y"`}
	for i, id := range ids {
		m := r.callID(id, "db_write", map[string]any{"data_version": i + 1, "writes": []string{"CREATE TABLE t" + string(rune('a'+i)) + " (x)"}})
		if string(m.ID) != id {
			t.Errorf("db_write id %s echoed as %s", id, m.ID)
		}
		m = r.callID(id, "backup-status", []any{})
		if string(m.ID) != id {
			t.Errorf("backup-status id %s echoed as %s", id, m.ID)
		}
	}
	r.stop()
}

// TestFraming: several messages in one write, and one message split over
// many writes, with and without separators.
func TestFraming(t *testing.T) {
	t.Parallel()
	dir, _ := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	a, b, c := r.expect(`1`), r.expect(`"two"`), r.expect(`3`)
	r.write(strings.TrimSpace(encodeRequest(`1`, "getmanifest", map[string]any{})) +
		encodeRequest(`"two"`, "db_write", map[string]any{"data_version": 1, "writes": []string{"CREATE TABLE t (x)"}}) +
		"\n" + encodeRequest(`3`, "init", map[string]any{"options": map[string]any{}, "configuration": map[string]any{}}))
	r.wait(a, "getmanifest")
	if m := r.wait(b, "db_write"); string(m.Result) != `{"result":"continue"}` {
		t.Fatalf("db_write: %s", m.raw)
	}
	r.wait(c, "init")
	d := r.expect(`"split"`)
	msg := encodeRequest(`"split"`, "db_write", map[string]any{"data_version": 2, "writes": []string{"INSERT INTO t VALUES ('a\nb')"}})
	for i := 0; i < len(msg); i++ {
		r.write(msg[i : i+1])
	}
	if m := r.wait(d, "split db_write"); string(m.Result) != `{"result":"continue"}` {
		t.Fatalf("split db_write: %s", m.raw)
	}
	if st := r.stop(); st != 0 {
		t.Fatalf("exit status %d", st)
	}
}

// TestUnknownAndNotifications: unknown methods get a JSON-RPC error,
// notifications and stray responses get nothing.
func TestUnknownAndNotifications(t *testing.T) {
	t.Parallel()
	dir, _ := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	r.write(`{"jsonrpc":"2.0","method":"shutdown","params":{}}` + `{"jsonrpc":"2.0","method":"db_write","params":{"data_version":1,"writes":[]}}` +
		`{"jsonrpc":"2.0","id":"cln:x#1","result":{}}`)
	m := r.call("no-such-method", []any{})
	if m.Error == nil || m.Error.Code != codeMethodNotFound {
		t.Fatalf("unknown method: %s", m.raw)
	}
	r.mustContinue(1, "CREATE TABLE t (x)") // the notification was not taken as a write
	r.stop()
	if len(r.msgs) != 4 { // start-up log, "Versions match up", two answers
		t.Errorf("%d messages, want 4", len(r.msgs))
	}
}

// TestEOF: closing stdin ends Run with 0 and releases the node, so the next
// plugin (lightningd restarted) continues where it stopped.
func TestEOF(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "n1", "")
	r := startRun(t, dir, Config{})
	r.init(nil)
	r.mustContinue(1, "CREATE TABLE t (x)")
	r.mustContinue(2, "INSERT INTO t VALUES (1)")
	if st := r.stop(); st != 0 {
		t.Fatalf("exit status %d", st)
	}
	r2 := startRun(t, dir, Config{})
	r2.mustContinue(3, "INSERT INTO t VALUES (2)")
	r2.init(nil)
	if st := r2.stop(); st != 0 {
		t.Fatalf("exit status %d", st)
	}
	if len(r2.logsWith("the backup holds data_version 2 (manifest 1")) != 1 || len(r2.logsWith("Versions match up")) != 1 {
		t.Errorf("restart logs:\n%s", r2.allLogs())
	}
	want := filepath.Join(t.TempDir(), "want.sqlite3")
	writeDB(t, want, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)")
	restoreNewest(t, url, "n1", want)
}

// TestGarbage: unreadable input ends Run with 1 after an error log line.
func TestGarbage(t *testing.T) {
	t.Parallel()
	dir, _ := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	r.write(`[1,2]`) // valid JSON, not a request: skipped
	ch := r.expect(`5`)
	r.write(`{"jsonrpc":"2.0","id":5,"method":7,"params":{}}`) // answered with an error
	if m := r.wait(ch, "bad request"); m.Error == nil || m.Error.Code != codeInvalidRequest {
		t.Fatalf("bad request: %s", m.raw)
	}
	r.call("getmanifest", map[string]any{})
	r.write(`{"jsonrpc": nope}`)
	if st := r.stop(); st != 1 {
		t.Fatalf("exit status %d, want 1", st)
	}
	if len(r.logsWith("Cannot read lightningd's messages")) != 1 {
		t.Errorf("logs:\n%s", r.allLogs())
	}
}

// TestRecoveredLogged: a torn record left by a crash mid-append is dropped
// when the journal opens, and the plugin says so.
func TestRecoveredLogged(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	r.mustContinue(1, "CREATE TABLE t (x)")
	r.stop()
	st, err := store.Open(bg, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	jdir := filepath.Join(strings.TrimPrefix(url, "file://"), store.JournalObject("default"))
	st.Close()
	segs, _ := filepath.Glob(filepath.Join(jdir, "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Half a record's worth of bytes past the last record: a torn append.
	if _, err := f.WriteAt([]byte("torn record"), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r = startRun(t, dir, Config{})
	r.mustContinue(2, "INSERT INTO t VALUES (1)")
	r.stop()
	if l := r.logsWith("Journal recovered: dropped"); len(l) != 1 || l[0].Level != levelWarn {
		t.Errorf("logs:\n%s", r.allLogs())
	}
	want := filepath.Join(t.TempDir(), "want.sqlite3")
	writeDB(t, want, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)")
	restoreNewest(t, url, "default", want)
}
