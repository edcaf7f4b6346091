package remote

// The harness of the attack tests (attack_*_test.go): each finding of the
// security review is replayed against a real `backup-cli server` process
// with node tokens for alice, bob and carol and one admin token, while a
// well-behaved client on another token keeps appending journal records.
// The process's CPU time and peak RSS come from /proc, for the figures of
// docs/security.md.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// Tokens of the attack server's auth file (hex, as add-token makes them).
var (
	atkAdmin = strings.Repeat("ad", 20)
	atkAlice = strings.Repeat("a1", 20)
	atkBob   = strings.Repeat("b0", 20)
	atkCarol = strings.Repeat("ca", 20)
	atkDave  = strings.Repeat("da", 20) // the well-behaved client's
)

var cliBuild struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

// serverBinary builds cmd/backup-cli once per test binary.
func serverBinary(t testing.TB) string {
	t.Helper()
	cliBuild.once.Do(func() {
		cliBuild.dir, cliBuild.err = os.MkdirTemp("", "remote-attack-")
		if cliBuild.err != nil {
			return
		}
		cliBuild.bin = filepath.Join(cliBuild.dir, "backup-cli")
		out, err := exec.Command("go", "build", "-o", cliBuild.bin, "github.com/clnbackup/backup/cmd/backup-cli").CombinedOutput()
		if err != nil {
			cliBuild.err = fmt.Errorf("build backup-cli: %v\n%s", err, out)
		}
	})
	if cliBuild.err != nil {
		t.Fatal(cliBuild.err)
	}
	return cliBuild.bin
}

// procServer is a `backup-cli server` process over a directory store.
type procServer struct {
	t        testing.TB
	dir      string // the test's directory: store/, auth
	storeURL string // file:// URL of the store (for checks from the test)
	addr     string
	auth     string // auth file
	args     []string
	bin      string // the backup-cli to run (serverBinary when empty)

	mu   sync.Mutex
	cmd  *exec.Cmd
	logs bytes.Buffer
	done chan struct{}
}

// authLines is the attack server's auth file.
func authLines() string {
	return atkAdmin + " *\n" + atkAlice + " alice\n" + atkBob + " bob\n" + atkCarol + " carol\n" + atkDave + " dave\n"
}

// startProcServer starts a server process with the attack auth file (mode
// 0600) and extra flags; it is killed when the test ends.
func startProcServer(t testing.TB, extra ...string) *procServer {
	t.Helper()
	ps := newProcServer(t, extra...)
	ps.start()
	t.Cleanup(ps.kill)
	return ps
}

// newProcServer prepares a server process (its directory, auth file,
// address and arguments) without starting it.
func newProcServer(t testing.TB, extra ...string) *procServer {
	t.Helper()
	dir := t.TempDir()
	ps := &procServer{t: t, dir: dir, storeURL: "file://" + filepath.Join(dir, "store"), auth: filepath.Join(dir, "auth")}
	if err := os.WriteFile(ps.auth, []byte(authLines()), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps.addr = l.Addr().String()
	l.Close()
	ps.args = append([]string{"server", ps.storeURL, ps.addr, "--auth", ps.auth}, extra...)
	return ps
}

func (ps *procServer) start() {
	ps.t.Helper()
	bin := ps.bin
	if bin == "" {
		bin = serverBinary(ps.t)
	}
	cmd := exec.Command(bin, ps.args...)
	cmd.Stdout, cmd.Stderr = &syncWriter{mu: &ps.mu, w: &ps.logs}, &syncWriter{mu: &ps.mu, w: &ps.logs}
	if err := cmd.Start(); err != nil {
		ps.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	ps.mu.Lock()
	ps.cmd, ps.done = cmd, done
	ps.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", ps.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			ps.t.Fatalf("server exited at start:\n%s", ps.log())
		default:
		}
		if time.Now().After(deadline) {
			ps.t.Fatalf("server does not listen on %s: %v\n%s", ps.addr, err, ps.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the process with SIGKILL and waits for it.
func (ps *procServer) kill() {
	ps.mu.Lock()
	cmd, done := ps.cmd, ps.done
	ps.cmd = nil
	ps.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-done
}

// signal sends sig (e.g. syscall.SIGHUP) to the process.
func (ps *procServer) signal(sig os.Signal) {
	ps.t.Helper()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := ps.cmd.Process.Signal(sig); err != nil {
		ps.t.Fatal(err)
	}
}

func (ps *procServer) log() string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.logs.String()
}

func (ps *procServer) url() string { return "socket:" + ps.addr }

// open opens the served store with token.
func (ps *procServer) open(t testing.TB, token string) *store.Store {
	t.Helper()
	st, err := store.Open(ctx, ps.url(), store.Options{Token: token, RetryFor: 10 * time.Second})
	if err != nil {
		t.Fatalf("open %s: %v\nserver log:\n%s", ps.url(), err, ps.log())
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// usage is the process's CPU time and peak RSS so far.
type usage struct {
	CPU     time.Duration
	PeakRSS int64 // bytes
}

func (u usage) String() string {
	return fmt.Sprintf("cpu %s, peak rss %.1f MB", u.CPU.Round(time.Millisecond), float64(u.PeakRSS)/1e6)
}

// usage reads /proc/PID/stat (utime+stime) and /proc/PID/status (VmHWM).
func (ps *procServer) usage() usage {
	ps.t.Helper()
	ps.mu.Lock()
	pid := ps.cmd.Process.Pid
	ps.mu.Unlock()
	var u usage
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		ps.t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) in ")".
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	u.CPU = time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		ps.t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			u.PeakRSS = kb << 10
		}
	}
	return u
}

type syncWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// bystander is a well-behaved node writer (node dave) appending a journal
// record every interval while an attack runs; stop reports its latencies.
type bystander struct {
	t     testing.TB
	once  sync.Once
	stop  chan struct{}
	done  chan struct{}
	lat   []time.Duration
	errs  []error
	node  *history.Node
	store *store.Store
}

// startBystander initialises node dave on the server and starts appending.
func startBystander(t testing.TB, ps *procServer, interval time.Duration) *bystander {
	t.Helper()
	st := ps.open(t, atkDave)
	if _, err := history.Init(ctx, st, "dave", "", nil); err != nil {
		t.Fatalf("init dave: %v\nserver log:\n%s", err, ps.log())
	}
	n, err := history.OpenNode(ctx, st, "dave")
	if err != nil {
		t.Fatalf("open dave: %v", err)
	}
	b := &bystander{t: t, stop: make(chan struct{}), done: make(chan struct{}), node: n, store: st}
	go func() {
		defer close(b.done)
		for v := uint32(1); ; v++ {
			select {
			case <-b.stop:
				return
			case <-time.After(interval):
			}
			began := time.Now()
			_, err := n.Journal().Append(journal.Record{Version: v, Statements: []string{fmt.Sprintf("UPDATE vars SET intval=%d WHERE name='data_version';", v)}})
			b.lat = append(b.lat, time.Since(began))
			if err != nil {
				b.errs = append(b.errs, err)
				return
			}
		}
	}()
	t.Cleanup(func() { b.finish() })
	return b
}

// finish stops the appends (once) and returns their latencies, sorted.
func (b *bystander) finish() []time.Duration {
	b.once.Do(func() {
		close(b.stop)
		<-b.done
		b.node.Close()
		slices.Sort(b.lat)
	})
	return b.lat
}

// check stops the bystander and fails the test if an append failed, none
// ran, or the slowest took longer than max; it returns p50 and p99.
func (b *bystander) check(max time.Duration) (p50, p99 time.Duration) {
	b.t.Helper()
	lat := b.finish()
	for _, err := range b.errs {
		b.t.Errorf("well-behaved client (dave): append failed during the attack: %v", err)
	}
	if len(lat) == 0 {
		b.t.Fatal("well-behaved client (dave): no append ran during the attack")
	}
	p50, p99 = lat[len(lat)/2], lat[len(lat)*99/100]
	if slowest := lat[len(lat)-1]; slowest > max {
		b.t.Errorf("well-behaved client (dave): slowest of %d appends took %v during the attack (p50 %v, p99 %v), over %v", len(lat), slowest, p50, p99, max)
	}
	return p50, p99
}
