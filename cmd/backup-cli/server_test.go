package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestServerCommand: tokens from add-token, a server process (signals are
// the process's: SIGHUP reloads, SIGTERM stops gracefully), and init,
// restore, list and gc through it, in process but for a restore with the
// token in the environment.
func TestServerCommand(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	auth := filepath.Join(tmp, "auth")
	var tok struct {
		Token string   `json:"token"`
		Nodes []string `json:"nodes"`
	}
	out := mustRun(t, "server", "add-token", "--json", "--auth", auth, "--node", "alice")
	if err := json.Unmarshal([]byte(out), &tok); err != nil || len(tok.Token) != 64 || tok.Nodes[0] != "alice" {
		t.Fatalf("add-token: %s (%v)", out, err)
	}
	admin := strings.TrimSpace(mustRun(t, "server", "add-token", "--auth", auth, "--admin"))
	if fi, err := os.Stat(auth); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("auth file: %v %v", fi.Mode(), err)
	}
	mustFail(t, "either --node", "server", "add-token", "--auth", auth)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := exec.Command(cliBin.get(t), "server", "--auth", auth, "--log-format", "systemd", "file://"+filepath.Join(tmp, "store"), addr)
	logs := &syncBuffer{}
	srv.Stderr = logs
	logsString := logs.String
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatalf("server did not start: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	url := "socket:" + addr
	tokFile := filepath.Join(tmp, "alice.token")
	os.WriteFile(tokFile, []byte(tok.Token+"\n"), 0o600)

	mustRun(t, "init", "--token-file", tokFile, "--node", "alice", url)
	mustFail(t, "denied", "init", "--token-file", tokFile, "--node", "bob", url)
	mustFail(t, "does not know this token", "list", "--token", strings.Repeat("0", 64), url)
	// The environment is the process's: a real one, so that tests need
	// not change this one's (and may run in parallel).
	if out, errOut, st := runBinary(t, []string{"CLNBACKUP_TOKEN=" + tok.Token}, "restore", url, filepath.Join(tmp, "r.sqlite3")); st != 0 {
		t.Fatalf("restore with $CLNBACKUP_TOKEN: exit status %d\n%s%s", st, out, errOut)
	}
	if out := mustRun(t, "list", "--token", admin, url); !strings.Contains(out, "alice") {
		t.Fatalf("list: %s", out)
	}
	mustFail(t, "admin token", "gc", "--token", tok.Token, url)
	mustFail(t, "denied", "list", "--node", "bob", "--token", tok.Token, url)
	mustRun(t, "gc", "--token", admin, url)

	// A token added while the server runs works after SIGHUP.
	bob := strings.TrimSpace(mustRun(t, "server", "add-token", "--auth", auth, "--node", "bob"))
	mustFail(t, "does not know this token", "init", "--token", bob, "--node", "bob", url)
	srv.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logsString(), "reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged after SIGHUP:\n%s", logsString())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustRun(t, "init", "--token", bob, "--node", "bob", url)

	srv.Process.Signal(syscall.SIGTERM)
	if err := srv.Wait(); err != nil {
		t.Fatalf("server exit: %v\n%s", err, logs.String())
	}
	for _, want := range []string{"<6>serving store", "<6>connection", "opened", "<3>", "<6>stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("server log lacks %q:\n%s", want, logs.String())
		}
	}
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
