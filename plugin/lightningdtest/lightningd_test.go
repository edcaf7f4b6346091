package lightningdtest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store/journal"
)

var noopBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lightningdtest")
	if err != nil {
		panic(err)
	}
	noopBin = filepath.Join(dir, "noop")
	if out, err := exec.Command("go", "build", "-o", noopBin, "./noop").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func startNoop(t *testing.T, mode string) *Lightningd {
	t.Helper()
	l, err := Start(context.Background(), noopBin, t.TempDir(), Options{Logf: t.Logf, Env: []string{"NOOP_MODE=" + mode}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Kill() })
	return l
}

func TestProtocol(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"", "fragment"} {
		t.Run("mode="+mode, func(t *testing.T) {
			t.Parallel()
			l := startNoop(t, mode)
			m, err := l.GetManifest()
			if err != nil {
				t.Fatal(err)
			}
			if !m.HasHook("db_write") || !m.NonNumericIDs || !m.Dynamic {
				t.Fatalf("manifest %s parsed as %+v", m.Raw, m)
			}
			// Hooks may come before init.
			for v := uint32(1); v <= 3; v++ {
				if ok, err := l.DBWrite(v, []string{"SELECT 1"}); err != nil || !ok {
					t.Fatalf("db_write %d before init: %v %v", v, ok, err)
				}
			}
			if err := l.Init(map[string]any{"x": 1}); err != nil {
				t.Fatal(err)
			}
			// Ids alternate between numbers and strings once the manifest
			// allows strings, and responses are routed by id.
			kinds := map[bool]int{}
			for v := uint32(4); v <= 9; v++ {
				p, err := l.Send("db_write", DBWriteParams{DataVersion: v, Writes: []string{"SELECT 1"}})
				if err != nil {
					t.Fatal(err)
				}
				kinds[p.ID[0] == '"']++
				if ok, err := p.Continued(); err != nil || !ok {
					t.Fatalf("db_write %d: %v %v", v, ok, err)
				}
			}
			if kinds[true] != 3 || kinds[false] != 3 {
				t.Fatalf("id kinds %v, want 3 strings and 3 numbers", kinds)
			}
			ps, err := l.SendJoined(Request{Method: "nosuch"}, Request{Method: "db_write", Params: DBWriteParams{DataVersion: 10}})
			if err != nil {
				t.Fatal(err)
			}
			if r, err := ps[0].Wait(); err != nil || r.Error == nil || r.Error.Code != -32601 {
				t.Fatalf("unknown method: %+v %v", r, err)
			}
			if ok, err := ps[1].Continued(); !ok || err != nil {
				t.Fatalf("joined db_write: %v %v", ok, err)
			}
			p, err := l.SendSplit("db_write", DBWriteParams{DataVersion: 11}, 7, 2*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := p.Continued(); !ok || err != nil {
				t.Fatalf("split db_write: %v %v", ok, err)
			}
			if _, err := l.Call("nosuch", nil); !errors.As(err, new(*RPCError)) {
				t.Fatalf("Call of an unknown method: %v", err)
			}
			if _, rtt, err := l.DBWriteTimed(12, nil); err != nil || rtt <= 0 || rtt > 5*time.Second {
				t.Fatalf("DBWriteTimed: rtt %v, %v", rtt, err)
			}
			if v := l.Violations(); len(v) > 0 {
				t.Fatalf("violations: %v", v)
			}
			if mode == "fragment" {
				if n := len(l.Logs()); n < 15 {
					t.Fatalf("%d log lines, want one per request", n)
				}
			}
			mem, err := l.Memory()
			if err != nil || mem.RSS <= 0 || mem.Peak < mem.RSS {
				t.Fatalf("Memory: %+v %v", mem, err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := l.DBWrite(13, nil); !errors.Is(err, ErrExited) {
				t.Fatalf("db_write after Close: %v, want ErrExited", err)
			}
		})
	}
}

// TestViolations is serial: an answer must arrive within a 500 ms timeout.
func TestViolations(t *testing.T) {
	t.Run("badid", func(t *testing.T) {
		l := startNoop(t, "badid")
		if _, err := l.GetManifest(); err != nil {
			t.Fatal(err)
		}
		// id 2 is a string and comes back unchanged; id 3 is a number and
		// comes back as a string: that answer never arrives.
		l.opts.Timeout = 500 * time.Millisecond
		if ok, err := l.DBWrite(1, nil); !ok || err != nil {
			t.Fatalf("string id: %v %v", ok, err)
		}
		if _, err := l.DBWrite(2, nil); !errors.Is(err, ErrTimeout) {
			t.Fatalf("numeric id answered as a string: %v, want a timeout", err)
		}
		if v := l.Violations(); len(v) != 1 || !strings.Contains(v[0], `"3"`) {
			t.Fatalf("violations %q", v)
		}
	})
	t.Run("garbage", func(t *testing.T) {
		l := startNoop(t, "garbage")
		if _, err := l.GetManifest(); !errors.Is(err, ErrExited) {
			t.Fatalf("GetManifest from a plugin printing text: %v", err)
		}
		<-l.Exited()
		if v := l.Violations(); len(v) != 1 {
			t.Fatalf("violations %q", v)
		}
	})
}

func TestKillFailsPending(t *testing.T) {
	t.Parallel()
	l := startNoop(t, "fragment")
	if _, err := l.GetManifest(); err != nil {
		t.Fatal(err)
	}
	p, err := l.Send("db_write", DBWriteParams{DataVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	l.Kill()
	// The answer may have arrived before the kill; otherwise it fails.
	if ok, err := p.Continued(); !ok && !errors.Is(err, ErrExited) {
		t.Fatalf("pending db_write after Kill: %v %v", ok, err)
	}
	if _, err := l.Send("db_write", DBWriteParams{DataVersion: 2}); !errors.Is(err, ErrExited) {
		t.Fatalf("send after Kill: %v", err)
	}
}

// TestHoldOutput is serial: it expects the plugin to answer within the
// 20 and 50 ms it sleeps.
func TestHoldOutput(t *testing.T) {
	l := startNoop(t, "")
	if _, err := l.GetManifest(); err != nil {
		t.Fatal(err)
	}
	l.HoldOutput(true)
	// The read in progress when the hold began takes the first answer (and
	// keeps it); the second stays in the pipe.
	p, err := l.Send("db_write", DBWriteParams{DataVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	p2, err := l.Send("db_write", DBWriteParams{DataVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		t.Fatal("an answer was read while the output was held")
	case <-time.After(50 * time.Millisecond):
	}
	if n, c, err := l.Unread(); err != nil || n < 20 || c < 4096 {
		t.Fatalf("Unread: %d of %d, %v; want the answer waiting in the pipe", n, c, err)
	}
	l.HoldOutput(false)
	for _, p := range []*Pending{p, p2} {
		if ok, err := p.Continued(); !ok || err != nil {
			t.Fatalf("after release: %v %v", ok, err)
		}
	}
	l.HoldOutput(true)
	l.Kill() // must not wait forever for a held reader
}

func TestPlayTrace(t *testing.T) {
	t.Parallel()
	entries, err := replay.ReadTrace("../../testdata/crash3.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	res, err := Play(context.Background(), noopBin, t.TempDir(), entries, PlayOptions{Start: Options{Logf: t.Logf}, Seed: 3, Join: "-"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Hooks != 614 || res.Runs != 2 || res.Rewinds != 1 || res.BeforeInit != 12 || res.LastVersion != 611 || res.Split == 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestPercentiles(t *testing.T) {
	t.Parallel()
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i))
	}
	if a, b, c := Percentiles(ds); a != 50 || b != 99 || c != 100 {
		t.Fatalf("%v %v %v", a, b, c)
	}
	if a, b, c := Percentiles(nil); a != 0 || b != 0 || c != 0 {
		t.Fatal("empty")
	}
	var h ManifestHook
	if json.Unmarshal([]byte(`"db_write"`), &h); h.Name != "db_write" {
		t.Fatal(h)
	}
}

func TestModel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, err := NewModel(filepath.Join(dir, "model.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for v := uint32(1); v <= 3; v++ {
		if err := m.Commit(Change(v, 0)); err != nil {
			t.Fatal(err)
		}
	}
	pragma := journal.Record{Version: 3, Statements: []string{"PRAGMA foreign_keys = ON"}}
	// lightningd re-sends 3 without its kv row.
	resent := journal.Record{Version: 3, Statements: []string{"INSERT INTO vars (name, val) VALUES ('resent-3', 'x')", Bump(3)}}
	count := func(path, q string) (n int) {
		t.Helper()
		db, err := sql.Open("sqlite3", path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.QueryRow(q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Snapshot's extra changes follow Commit's rules: a change repeating
	// the newest version replaces it (and the PRAGMAs after it).
	for i, c := range []struct {
		extra        []journal.Record
		marker, rows int
	}{
		{nil, 0, 2},
		{[]journal.Record{pragma, resent}, 1, 1},
		{[]journal.Record{resent, Change(4, 0)}, 1, 2},
	} {
		p := filepath.Join(dir, fmt.Sprintf("snap%d.sqlite3", i))
		if err := m.Snapshot(p, c.extra...); err != nil {
			t.Fatal(err)
		}
		if got := count(p, "SELECT count(*) FROM vars WHERE name LIKE 'resent-%'"); got != c.marker {
			t.Errorf("case %d: %d marker rows, want %d", i, got, c.marker)
		}
		if got := count(p, "SELECT count(*) FROM kv"); got != c.rows {
			t.Errorf("case %d: %d kv rows, want %d", i, got, c.rows)
		}
	}
	if m.Version() != 3 {
		t.Fatalf("model version %d", m.Version())
	}
	r := Resent(journal.Record{Version: 5, Statements: []string{"INSERT INTO datastore VALUES (1)", Bump(5)}}, "it's")
	if len(r.Statements) != 2 || !strings.Contains(r.Statements[0], "'it''s'") || r.Statements[1] != Bump(5) {
		t.Fatalf("Resent of a datastore insert: %q", r.Statements)
	}
}
