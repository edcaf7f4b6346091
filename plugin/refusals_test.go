package plugin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/crypt"
	"github.com/clnbackup/backup/store/history"
)

// refusedAfter checks that a refusal sticks: a write that would otherwise
// be fine is refused too, with the same reason.
func refusedAfter(t *testing.T, r *pipeRun, version uint32, reason string) {
	t.Helper()
	if msg := r.mustRefuse(version, "", "CREATE TABLE later (x)"); msg != reason {
		t.Errorf("later write refused with %q, want the first reason %q", msg, reason)
	}
}

func TestRefuseGap(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	r.init(nil)
	r.mustContinue(1, "CREATE TABLE t (x)")
	msg := r.mustRefuse(3, "Backup is out of date: it holds data_version 1, lightningd sent 3: 1 writes were lost", "INSERT INTO t VALUES (1)")
	for _, want := range []string{"re-initialise the backup", "--lightning-dir " + dir, "backup-cli restore"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q lacks %q", msg, want)
		}
	}
	if l := r.logsWith("Backup is out of date"); len(l) != 1 || l[0].Level != levelError {
		t.Errorf("refusal not logged at error level once; logs:\n%s", r.allLogs())
	}
	refusedAfter(t, r, 2, msg)
	r.stop()
	want := filepath.Join(t.TempDir(), "want.sqlite3")
	writeDB(t, want, "CREATE TABLE t (x)")
	restoreNewest(t, url, "default", want) // nothing refused was recorded
}

func TestRefuseRegress(t *testing.T) {
	t.Parallel()
	dir, _ := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	r.mustContinue(1, "CREATE TABLE t (x)")
	r.mustContinue(2, "INSERT INTO t VALUES (1)")
	r.mustContinue(3, "INSERT INTO t VALUES (2)")
	r.stop()
	// lightningd restarted on an older database.
	r = startRun(t, dir, Config{})
	msg := r.mustRefuse(2, "lightningd lost some state: the backup holds data_version 3, but lightningd sent 2", "INSERT INTO t VALUES (9)")
	if !strings.Contains(msg, "backup-cli restore --node default") {
		t.Errorf("refusal %q does not say how to restore", msg)
	}
	r.init(nil) // init is still answered
	refusedAfter(t, r, 4, msg)
	r.stop()
}

// TestRefuseRepeat: a repeated data_version is a rewind only as the first
// change after a restart, and only of a change the journal holds.
func TestRefuseRepeat(t *testing.T) {
	t.Parallel()
	t.Run("within one run", func(t *testing.T) {
		t.Parallel()
		dir, _ := newLightningDir(t, "default", "")
		r := startRun(t, dir, Config{})
		r.mustContinue(1, "CREATE TABLE t (x)")
		r.mustContinue(2, "INSERT INTO t VALUES (1)")
		r.mustRefuse(2, "sent data_version 2 twice without restarting", "INSERT INTO t VALUES (2)")
	})
	t.Run("of the snapshot's version", func(t *testing.T) {
		t.Parallel()
		dir, _ := newLightningDir(t, "default", testdata("trace1-final.sqlite3")) // data_version 385
		r := startRun(t, dir, Config{})
		r.mustRefuse(385, "the backup holds data_version 385, but lightningd sent 385", "INSERT INTO datastore VALUES (x'00', x'00', 0)")
	})
	t.Run("after the first change", func(t *testing.T) {
		t.Parallel()
		dir, _ := newLightningDir(t, "default", "")
		r := startRun(t, dir, Config{})
		r.mustContinue(1, "CREATE TABLE t (x)")
		r.stop()
		r = startRun(t, dir, Config{})
		r.mustContinue(2, "INSERT INTO t VALUES (1)")
		r.mustRefuse(2, "twice without restarting", "INSERT INTO t VALUES (2)")
	})
}

// TestRewindAfterPragma: the uncommitted change is followed by a PRAGMA-only
// hook of the same version; after the restart the re-sent version replaces
// both, and PRAGMAs repeating a version are kept.
func TestRewindAfterPragma(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	r.mustContinue(1, "CREATE TABLE t (x)")
	r.mustContinue(2, "INSERT INTO t VALUES ('uncommitted')")
	r.mustContinue(2, "PRAGMA foreign_keys = OFF;")
	r.stop()
	r = startRun(t, dir, Config{})
	r.mustContinue(2, "PRAGMA foreign_keys = ON;") // a PRAGMA first: appended
	r.mustContinue(2, "INSERT INTO t VALUES ('committed')")
	r.mustContinue(2, "PRAGMA foreign_keys = OFF;")
	r.mustContinue(3, "INSERT INTO t VALUES ('next')")
	r.stop()
	if len(r.logsWith("Last changes not applied, replacing data_version 2")) != 1 {
		t.Errorf("logs:\n%s", r.allLogs())
	}
	want := filepath.Join(t.TempDir(), "want.sqlite3")
	writeDB(t, want, "CREATE TABLE t (x)", "INSERT INTO t VALUES ('committed')", "INSERT INTO t VALUES ('next')")
	restoreNewest(t, url, "default", want)
}

func TestRefuseWithoutLock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := startRun(t, dir, Config{})
	r.call("getmanifest", map[string]any{})
	msg := r.mustRefuse(1, "Could not find backup.lock in the lightning-dir", "CREATE TABLE t (x)")
	if !strings.Contains(msg, "backup-cli init --lightning-dir "+dir) {
		t.Errorf("refusal %q does not say how to set up", msg)
	}
	r.init(nil)
	refusedAfter(t, r, 2, msg)
	if m := r.call("backup-status", []any{}); m.Error == nil || m.Error.Message != msg {
		t.Errorf("backup-status without a backup: %s", m.raw)
	}
	if m := r.call("backup-compact", []any{}); m.Error == nil {
		t.Errorf("backup-compact without a backup: %s", m.raw)
	}
	if st := r.stop(); st != 0 {
		t.Fatalf("exit status %d", st)
	}
	if l := r.logsWith("Could not find backup.lock in the lightning-dir"); len(l) != 1 || l[0].Level != levelError {
		t.Errorf("want one error log line; logs:\n%s", r.allLogs())
	}
}

// TestRefuseUnopenable: a backup.lock naming something that cannot be
// written stops lightningd at its first write, saying why.
func TestRefuseUnopenable(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	legacy := filepath.Join(base, "backup.dbak")
	if err := os.WriteFile(legacy, make([]byte, 512), 0o600); err != nil {
		t.Fatal(err)
	}
	_, url := newLightningDir(t, "default", "")
	// Key files of an encrypted store: one other users may read, one
	// that is not a key file.
	openKey, junkKey := filepath.Join(base, "open.key"), filepath.Join(base, "junk.key")
	os.WriteFile(openKey, []byte(crypt.NewUnlockKeyFile().Format()), 0o644)
	os.Chmod(openKey, 0o644)
	os.WriteFile(junkKey, []byte("not a key\n"), 0o600)
	for _, tc := range []struct {
		name string
		lock any
		want string
	}{
		{"no store there", map[string]string{"backend_url": "file://" + filepath.Join(base, "missing")}, "does not exist"},
		{"not a store", map[string]string{"backend_url": "file://" + base}, "not a backup store"},
		{"Python backup file", map[string]string{"backend_url": "file://" + legacy}, "Python backup plugin"},
		{"store server down", map[string]string{"backend_url": "socket:127.0.0.1:1", "server_retry": "1s"}, "tried for 1s"},
		{"unknown node", map[string]string{"backend_url": url, "node": "bob"}, `backup-cli init --lightning-dir DIR --node bob`},
		{"no URL", map[string]string{"node": "x"}, `no "backend_url"`},
		{"not JSON", "{", "Cannot use the backup.lock"},
		{"key file others may read", map[string]string{"backend_url": url, "key_file": openKey}, "chmod 600 " + openKey},
		{"key file relative", map[string]string{"backend_url": url, "key_file": "backup.key"}, `"key_file" "backup.key" is not an absolute path`},
		{"not a key file", map[string]string{"backend_url": url, "key_file": junkKey}, "not a clnbackup key file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if s, ok := tc.lock.(string); ok {
				os.WriteFile(filepath.Join(dir, LockName), []byte(s), 0o600)
			} else {
				writeLock(t, dir, tc.lock)
			}
			r := startRun(t, dir, Config{})
			r.init(nil)
			msg := r.mustRefuse(1, tc.want, "CREATE TABLE t (x)")
			if !strings.Contains(msg, "Refusing every db_write") {
				t.Errorf("refusal %q", msg)
			}
			refusedAfter(t, r, 1, msg)
		})
	}
}

// TestRefuseSecondPlugin: two plugins (two lightningd) on one node: the
// second refuses; once the first is gone a plugin that waits takes over.
// Serial: the third plugin must reach the lock within the 300 ms before the
// first lets go, or it never logs its wait.
func TestRefuseSecondPlugin(t *testing.T) {
	dir, url := newLightningDir(t, "default", "")
	first := startRun(t, dir, Config{})
	first.mustContinue(1, "CREATE TABLE t (x)")

	dir2 := t.TempDir()
	writeLock(t, dir2, map[string]string{"backend_url": url})
	second := startRun(t, dir2, Config{})
	msg := second.mustRefuse(2, "another running plugin", "INSERT INTO t VALUES (1)")
	for _, want := range []string{`node "default"`, "--node NEW-NAME"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q lacks %q", msg, want)
		}
	}
	second.stop()

	third := startRun(t, dir2, Config{LockWait: 30 * time.Second})
	go func() {
		time.Sleep(300 * time.Millisecond)
		first.in.Close() // the first lightningd exits
	}()
	third.mustContinue(2, "INSERT INTO t VALUES (1)")
	third.waitLog("waiting up to 30s")
	if st := first.stop(); st != 0 {
		t.Fatalf("first: exit status %d", st)
	}
	third.stop()
	want := filepath.Join(t.TempDir(), "want.sqlite3")
	writeDB(t, want, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)")
	restoreNewest(t, url, "default", want)
}

// TestRefuseLostJournal: a journal that restarts behind the store's
// manifests would hide new records from restores: refused.
func TestRefuseLostJournal(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	for v := uint32(1); v <= 5; v++ {
		r.mustContinue(v, "CREATE TABLE t"+string(rune('0'+v))+" (x)")
	}
	r.stop()
	st, err := store.Open(bg, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := history.OpenNode(bg, st, "default")
	if err != nil {
		t.Fatal(err)
	}
	if res, err := n.Compact(bg, nil); err != nil || res.Manifest == nil {
		t.Fatalf("compact: %v %+v", err, res)
	}
	n.Close()
	jdir := filepath.Join(strings.TrimPrefix(url, "file://"), store.JournalObject("default"))
	if err := os.RemoveAll(jdir); err != nil {
		t.Fatal(err)
	}
	r = startRun(t, dir, Config{})
	r.mustRefuse(6, "the journal directory was lost or replaced", "CREATE TABLE t6 (x)")
}

// failingBackup is the real backup whose n-th Append fails, as a full disk
// or a lost mount would make it.
type failingBackup struct {
	Backup
	n int
}

func (f *failingBackup) Append(version uint32, writes []string) error {
	if f.n--; f.n == 0 {
		return errors.New("write seq 3: no space left on device")
	}
	return f.Backup.Append(version, writes)
}

// TestRefuseJournalError: a failed append refuses that write and every
// later one; a restart continues from what the journal holds.
func TestRefuseJournalError(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "default", "")
	open := func(ctx context.Context, l Lock) (Backup, Start, error) {
		b, s, err := OpenStore(ctx, l)
		if err != nil {
			return nil, s, err
		}
		return &failingBackup{Backup: b, n: 3}, s, nil
	}
	r := startRun(t, dir, Config{Open: open})
	r.init(nil)
	r.mustContinue(1, "CREATE TABLE t (x)")
	r.mustContinue(2, "INSERT INTO t VALUES (1)")
	msg := r.mustRefuse(3, "Could not write data_version 3 to the backup: write seq 3: no space left on device", "INSERT INTO t VALUES (2)")
	refusedAfter(t, r, 3, msg)
	r.stop()
	r = startRun(t, dir, Config{})
	r.mustContinue(3, "INSERT INTO t VALUES (2)")
	r.stop()
	want := filepath.Join(t.TempDir(), "want.sqlite3")
	writeDB(t, want, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)")
	restoreNewest(t, url, "default", want)
}

// TestNodeInUseError: OpenStore reports a node another writer holds as
// ErrNodeInUse, wrapping the lease's error, which names the holder.
func TestNodeInUseError(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "n", "")
	_ = dir
	b, _, err := OpenStore(bg, Lock{URL: url, Node: "n"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_, _, err = OpenStore(bg, Lock{URL: url, Node: "n"})
	if !errors.Is(err, ErrNodeInUse) || !errors.Is(err, store.ErrLeaseHeld) || !strings.Contains(err.Error(), "pid") {
		t.Fatalf("second open: %v", err)
	}
}
