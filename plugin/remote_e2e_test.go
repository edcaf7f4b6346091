package plugin_test

// The plugin through a store server: `backup-cli server` as a real process
// on loopback, nodes whose backup.lock names socket:ADDR with a token.

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	ld "github.com/clnbackup/backup/plugin/lightningdtest"
	"github.com/clnbackup/backup/store/remote"
)

var (
	cliOnce sync.Once
	cliBin  string
	cliErr  error
)

// backupCLI builds cmd/backup-cli once (the store server).
func backupCLI(t testing.TB) string {
	t.Helper()
	cliOnce.Do(func() {
		cliBin = filepath.Join(filepath.Dir(pluginBin), "backup-cli")
		out, err := exec.Command("go", "build", "-o", cliBin, "github.com/clnbackup/backup/cmd/backup-cli").CombinedOutput()
		if err != nil {
			cliErr = fmt.Errorf("build backup-cli: %v\n%s", err, out)
		}
	})
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliBin
}

// storeServer is a `backup-cli server` process serving a directory store.
type storeServer struct {
	t        testing.TB
	bin      string
	storeDir string
	// storeURL, when set, is the store served instead of storeDir (an
	// s3:// bucket), and args are more flags.
	storeURL string
	args     []string
	addr     string
	auth     string
	mu       sync.Mutex
	cmd      *exec.Cmd
	logs     bytes.Buffer
	starts   int
}

func newToken(t testing.TB) string {
	tok, err := remote.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// startStoreServer starts a server on a free loopback port with an auth
// file giving each named node its own token (returned by node name).
func startStoreServer(t testing.TB, nodes ...string) (*storeServer, map[string]string) {
	t.Helper()
	return startStoreServerAt(t, "", nil, nodes...)
}

// startStoreServerAt is startStoreServer for the store at url ("" for a
// new directory), with more flags.
func startStoreServerAt(t testing.TB, url string, args []string, nodes ...string) (*storeServer, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	tokens := map[string]string{}
	var auth bytes.Buffer
	for _, n := range nodes {
		tokens[n] = newToken(t)
		fmt.Fprintf(&auth, "%s %s\n", tokens[n], n)
	}
	authFile := filepath.Join(dir, "auth")
	if err := os.WriteFile(authFile, auth.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &storeServer{t: t, bin: backupCLI(t), storeDir: filepath.Join(dir, "store"), storeURL: url, args: args, addr: addr, auth: authFile}
	s.start()
	t.Cleanup(func() { s.kill() })
	return s, tokens
}

func (s *storeServer) url() string { return "socket:" + s.addr }

func (s *storeServer) start() {
	s.t.Helper()
	if err := s.startErr(); err != nil {
		s.t.Fatal(err)
	}
}

// startErr is start for a goroutine other than the test's, which must not
// call t.Fatal: it returns what went wrong.
func (s *storeServer) startErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	url := "file://" + s.storeDir
	if s.storeURL != "" {
		url = s.storeURL
	}
	cmd := exec.Command(s.bin, append([]string{"server", url, s.addr, "--auth", s.auth}, s.args...)...)
	cmd.Stdout, cmd.Stderr = &lockedWriter{mu: &s.mu, w: &s.logs}, &lockedWriter{mu: &s.mu, w: &s.logs}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	s.starts++
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("store server on %s did not start listening: %v\n%s", s.addr, err, s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the server with SIGKILL: nothing graceful.
func (s *storeServer) kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd != nil {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
}

// stop stops the server with SIGTERM and checks it exits cleanly.
func (s *storeServer) stop() {
	s.t.Helper()
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		s.t.Errorf("store server exited with %v after SIGTERM\n%s", err, s.log())
	}
}

func (s *storeServer) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func remoteNode(t testing.TB, srv *storeServer, name, token string) *ld.Node {
	t.Helper()
	n, err := ld.SetupNodeAt(ctx, filepath.Join(t.TempDir(), "lightning"), srv.url(), token, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRemoteTrace1 plays trace1 through the plugin into a store server, with
// compactions, and restores it through the server.
func TestRemoteTrace1(t *testing.T) {
	t.Parallel()
	srv, tokens := startStoreServer(t, "alice")
	n := remoteNode(t, srv, "alice", tokens["alice"])
	res, err := ld.Play(ctx, pluginBin, n.Dir, readTrace(t, "trace1.jsonl"), ld.PlayOptions{
		Start: ld.Options{Logf: t.Logf}, Seed: seed(t), CompactEvery: 100,
	})
	if err != nil {
		t.Fatalf("%v\nserver log:\n%s", err, srv.log())
	}
	t.Logf("%d hooks through the server: p50 %v p99 %v max %v", res.Hooks, res.P50, res.P99, res.Max)
	restoredEquals(t, n, "../testdata/trace1-final.sqlite3")
	srv.stop()
}

// TestRemoteFourNodes has four nodes replay at once into one server.
func TestRemoteFourNodes(t *testing.T) {
	t.Parallel()
	names := []string{"n1", "n2", "n3", "n4"}
	srv, tokens := startStoreServer(t, names...)
	trace := readTrace(t, "trace1.jsonl")
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	nodes := make([]*ld.Node, len(names))
	for i, name := range names {
		nodes[i] = remoteNode(t, srv, name, tokens[name])
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = ld.Play(ctx, pluginBin, nodes[i].Dir, trace, ld.PlayOptions{Seed: uint64(i), CompactEvery: 60})
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %s: %v\nserver log:\n%s", names[i], err, srv.log())
		}
	}
	for _, n := range nodes {
		restoredEquals(t, n, "../testdata/trace1-final.sqlite3")
	}
}

// TestRemoteServerKilled kills the server (SIGKILL) at random moments of a
// replay of real changes, with compactions, and restarts it: hooks wait for
// it, and at the end the restore holds exactly what lightningd committed:
// no acknowledged change lost, none applied twice.
// Serial: each hook must be answered within 30 s and each server restart
// listen within 15 s, which other tests on two cores can push past.
func TestRemoteServerKilled(t *testing.T) {
	srv, tokens := startStoreServer(t, "alice")
	n := remoteNode(t, srv, "alice", tokens["alice"])
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log (%d starts):\n%s", srv.starts, srv.log())
		}
	})
	s := seed(t)
	t.Logf("seed %d (E2E_SEED=%d repeats the kill times)", s, s)
	rng := rand.New(rand.NewPCG(s, 1))
	hooks := ld.Hooks(readTrace(t, "long-3000.jsonl"))
	if testing.Short() {
		hooks = hooks[:1000]
	}
	m := newModel(t)
	l := start(t, n.Dir)
	done := make(chan struct{})
	kills := 0
	var killer sync.WaitGroup
	killer.Add(1)
	go func() {
		defer killer.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Duration(30+rng.IntN(300)) * time.Millisecond):
			}
			srv.kill()
			kills++
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			if err := srv.startErr(); err != nil {
				t.Error(err) // t.Fatal belongs to the test's goroutine
				return
			}
		}
	}()
	// However the test ends, the killer is stopped first: it must not
	// outlive the test.
	stopKiller := sync.OnceFunc(func() { close(done); killer.Wait() })
	defer stopKiller()
	writeHooks(t, l, m, hooks, func(i int) {
		if i%400 == 399 {
			compact(t, l)
		}
	})
	stopKiller()
	compactionIdle(t, l)
	t.Logf("%d hooks, %d server kills", len(hooks), kills)
	if kills < 3 {
		t.Errorf("only %d server kills during the replay", kills)
	}
	mustRestoreMatch(t, n, m, fmt.Sprintf("after %d server kills", kills))
	// A compaction after all that still works and changes nothing.
	compact(t, l)
	compactionIdle(t, l)
	mustRestoreMatch(t, n, m, "after a final compaction")
}

// TestRemoteKillRestart is TestKillRestart (lightningd and the plugin
// killed at random points, restarted, changes re-sent) with the store on a
// server.
// Serial, as TestKillRestart.
func TestRemoteKillRestart(t *testing.T) {
	srv, tokens := startStoreServer(t, "alice")
	n := remoteNode(t, srv, "alice", tokens["alice"])
	s := seed(t)
	t.Logf("seed %d", s)
	hooks := ld.Hooks(readTrace(t, "long-3000.jsonl"))[:1000]
	stats := ld.CrashReplay(t, pluginBin, n, newModel(t), hooks, 8, s)
	t.Logf("%d hooks, 8 kills: %v", len(hooks), stats)
}

// TestRemoteServerDown: a server that stays down longer than server_retry
// makes the db_write be refused (lightningd stops) rather than answered.
func TestRemoteServerDown(t *testing.T) {
	t.Parallel()
	srv, tokens := startStoreServer(t, "alice")
	n := remoteNode(t, srv, "alice", tokens["alice"])
	lockPath := filepath.Join(n.Dir, "backup.lock")
	lock := fmt.Sprintf(`{"backend_url": %q, "node": "alice", "token": %q, "server_retry": "1s"}`, n.URL, n.Token)
	if err := os.WriteFile(lockPath, []byte(lock), 0o600); err != nil {
		t.Fatal(err)
	}
	m := newModel(t)
	l := startInit(t, n.Dir)
	for v := uint32(1); v <= 5; v++ {
		write(t, l, m, ld.Change(v, 100))
	}
	srv.kill()
	began := time.Now()
	refused(t, l, ld.Change(6, 100), srv.addr)
	waited := time.Since(began)
	t.Logf("refused after %v", waited)
	if waited < time.Second {
		t.Errorf("refused after %v, before server_retry (1s) ran out", waited)
	}
	srv.start()
	mustRestoreMatch(t, n, m, "after the refused write")
}

// TestRemoteServerLateAtStart: lightningd starts (at boot, say) before the
// store server can be reached; the plugin waits for it within server_retry
// instead of stopping lightningd.
func TestRemoteServerLateAtStart(t *testing.T) {
	t.Parallel()
	srv, tokens := startStoreServer(t, "alice")
	n := remoteNode(t, srv, "alice", tokens["alice"])
	lock := fmt.Sprintf(`{"backend_url": %q, "node": "alice", "token": %q, "server_retry": "20s"}`, n.URL, n.Token)
	if err := os.WriteFile(filepath.Join(n.Dir, "backup.lock"), []byte(lock), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.kill()
	m := newModel(t)
	l := start(t, n.Dir)
	go func() {
		time.Sleep(700 * time.Millisecond)
		srv.start()
	}()
	began := time.Now()
	write(t, l, m, ld.Change(1, 100))
	t.Logf("first db_write answered after %v", time.Since(began))
	if err := l.Init(nil); err != nil {
		t.Fatal(err)
	}
	write(t, l, m, ld.Change(2, 100))
	mustRestoreMatch(t, n, m, "after a late server")
}
