package main

import (
	"bufio"
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

// hotWriterEnv names the database the test binary, re-executed with it set,
// writes as lightningd would until it is killed (see hotWriter).
const hotWriterEnv = "BACKUP_CLI_TEST_HOT_WRITER"

// hotWriter is the test binary run as a writer process: on the database at
// path, in rollback-journal mode with a cache of a few pages, it opens one
// large transaction (bumping data_version, inserting a megabyte of rows) so
// that SQLite spills uncommitted pages into the database file, prints
// "spilled" and waits, transaction open, for the test to SIGKILL it: what
// lightningd killed mid-transaction leaves behind, a hot journal.
func hotWriter(path string) {
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "hot writer: %s: %v\n", what, err)
		os.Exit(2)
	}
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=rw")
	if err != nil {
		fail("open", err)
	}
	db.SetMaxOpenConns(1)
	for _, q := range []string{"PRAGMA journal_mode=DELETE", "PRAGMA cache_size=1", "BEGIN",
		"UPDATE vars SET intval = intval + 1 WHERE name = 'data_version'",
		"CREATE TABLE uncommitted (id INTEGER PRIMARY KEY, v BLOB)"} {
		if _, err := db.Exec(q); err != nil {
			fail(q, err)
		}
	}
	for i := range 5000 {
		if _, err := db.Exec("INSERT INTO uncommitted (v) VALUES (randomblob(200))"); err != nil {
			fail(fmt.Sprintf("insert %d", i), err)
		}
	}
	fmt.Println("spilled")
	select {} // until SIGKILL; never COMMIT
}

// startHotWriter runs the writer on db and returns once its transaction
// has spilled pages into db; kill ends it with SIGKILL.
func startHotWriter(t *testing.T, db string) (kill func()) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), hotWriterEnv+"="+db)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill = func() {
		if !killed {
			killed = true
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(kill)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "spilled\n" {
		kill()
		t.Fatalf("hot writer: read %q: %v", line, err)
	}
	return kill
}

// fileState is a file's bytes and modification time, to show init leaves
// the node's files as they were.
type fileState struct {
	data  []byte
	mtime time.Time
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileState{data, fi.ModTime()}
}

// TestInitHotJournal inits nodes from a lightning directory whose database
// a real process was writing: killed mid-transaction after its pages
// spilled into the file (a hot journal), or still running. init must
// snapshot the last committed state (trace1-final, data_version 385)
// without writing the node's database or journal, and a failed init must
// leave no node behind.
func TestInitHotJournal(t *testing.T) {
	t.Parallel()
	const committed = testdata + "trace1-final.sqlite3"
	for _, tc := range []struct {
		name string
		// writer: none, killed (hot journal) or running (init fails, then
		// succeeds once the writer is killed).
		writer string
	}{
		{"clean database", "none"},
		{"hot journal", "killed"},
		{"writer still running", "running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			ldir := filepath.Join(tmp, "lightning")
			os.Mkdir(ldir, 0o755)
			db := filepath.Join(ldir, "lightningd.sqlite3")
			copyFile(t, committed, db)
			before := stateOf(t, db).data
			url := "file://" + filepath.Join(tmp, "store")
			files := []string{db}
			switch tc.writer {
			case "killed":
				startHotWriter(t, db)()
				files = append(files, db+"-journal")
				if bytes.Equal(stateOf(t, db).data, before) {
					t.Fatal("the writer spilled no page into the database file: its journal is not hot")
				}
				if len(stateOf(t, db+"-journal").data) == 0 {
					t.Fatal("the writer left an empty journal")
				}
			case "running":
				kill := startHotWriter(t, db)
				mustFail(t, "stop lightningd and run init again", "init", "--lightning-dir", ldir, "--node", "alice", url)
				if _, err := os.Stat(filepath.Join(ldir, "backup.lock")); err == nil {
					t.Error("a failed init wrote backup.lock")
				}
				if out := mustRun(t, "list", url); strings.Contains(out, "alice") {
					t.Errorf("a failed init left node alice in the store:\n%s", out)
				}
				kill()
				files = append(files, db+"-journal")
			}
			want := make([]fileState, len(files))
			for i, f := range files {
				want[i] = stateOf(t, f)
			}

			out := mustRun(t, "init", "--lightning-dir", ldir, "--node", "alice", url)
			if !strings.Contains(out, "data_version 385") {
				t.Errorf("init did not snapshot the committed data_version 385:\n%s", out)
			}
			for i, f := range files {
				got := stateOf(t, f)
				if !bytes.Equal(got.data, want[i].data) || !got.mtime.Equal(want[i].mtime) {
					t.Errorf("init changed the node's %s (mtime %v, was %v)", f, got.mtime, want[i].mtime)
				}
			}
			if left, _ := filepath.Glob(filepath.Join(ldir, ".backup-init-*")); len(left) > 0 {
				t.Errorf("init left its private copy: %v", left)
			}
			restored := filepath.Join(tmp, "restored.sqlite3")
			mustRun(t, "restore", "--node", "alice", url, restored)
			sameDB(t, restored, committed)
		})
	}
}
