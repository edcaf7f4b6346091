package remote

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
)

var ctx = context.Background()

// Tokens of the test auth file.
var (
	tokAdmin = strings.Repeat("a", 40)
	tokAlice = strings.Repeat("1", 40)
	tokBob   = strings.Repeat("2", 40)
)

func testAuth(t testing.TB) *Auth {
	t.Helper()
	a, err := ParseAuth(strings.NewReader("# test tokens\n" + tokAdmin + " *\n" + tokAlice + " alice\n" + tokBob + " bob,carol\n"))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// testServer is a store server on loopback over a store in a temporary
// directory; it can be stopped and started again on the same port.
type testServer struct {
	t    testing.TB
	st   *store.Store
	url  string // file:// URL of the store
	auth *Auth
	addr string
	opt  ServerOptions
	// dropAck is given to every server started (see Server.dropAck).
	dropAck func() bool

	mu   sync.Mutex
	srv  *Server
	done chan error
}

func newTestServer(t testing.TB, auth *Auth) *testServer {
	t.Helper()
	url := "file://" + filepath.Join(t.TempDir(), "store")
	st, _, err := store.Create(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, st: st, url: url, auth: auth}
	ts.opt = ServerOptions{Infof: t.Logf, Errorf: t.Logf}
	ts.start()
	t.Cleanup(func() {
		ts.stop()
		st.Close()
	})
	return ts
}

func (ts *testServer) start() {
	ts.t.Helper()
	addr := ts.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var l net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.addr = l.Addr().String()
	srv := NewServer(ts.st, ts.auth, ts.opt)
	srv.dropAck = ts.dropAck
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	ts.mu.Lock()
	ts.srv, ts.done = srv, done
	ts.mu.Unlock()
}

// stop shuts the server down gracefully.
func (ts *testServer) stop() { ts.shutdown(ctx) }

// kill closes the listener and every connection at once.
func (ts *testServer) kill() {
	c, cancel := context.WithCancel(ctx)
	cancel()
	ts.shutdown(c)
}

func (ts *testServer) shutdown(c context.Context) {
	ts.mu.Lock()
	srv, done := ts.srv, ts.done
	ts.srv = nil
	ts.mu.Unlock()
	if srv == nil {
		return
	}
	if err := srv.Shutdown(c); err != nil && !errors.Is(err, context.Canceled) {
		ts.t.Errorf("shutdown: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		ts.t.Errorf("serve: %v", err)
	}
}

func (ts *testServer) socketURL() string { return "socket:" + ts.addr }

func (ts *testServer) dial(t testing.TB, token string) *Client {
	t.Helper()
	u, err := store.ParseURL(ts.socketURL())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := DialClient(ctx, u, store.Options{Token: token, RetryFor: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func (ts *testServer) open(t testing.TB, token string) *store.Store {
	t.Helper()
	st, err := store.Open(ctx, ts.socketURL(), store.Options{Token: token, RetryFor: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
