package remote

// Attack tests of issue #12 findings 5, 6, 8 and the quotas: each replays
// the attack against a real `backup-cli server` process while a
// well-behaved client (node dave) keeps appending journal records, and
// checks that the attack is refused with a clear error and that dave
// never notices.

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/packs"
)

// dialProc opens a bare client of the server process with token.
func dialProc(t *testing.T, ps *procServer, token string) *Client {
	t.Helper()
	u, err := store.ParseURL(ps.url())
	if err != nil {
		t.Fatal(err)
	}
	cl, err := DialClient(ctx, u, store.Options{Token: token, RetryFor: 10 * time.Second})
	if err != nil {
		t.Fatalf("dial: %v\n%s", err, ps.log())
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// rawCall sends one request frame as is (the client library would refuse
// a bad name before sending it) and returns the server's answer.
func rawCall(cl *Client, typ byte, payload []byte) error {
	return cl.do(ctx, cl.general, func(c *conn, _ int) error {
		_, err := c.call(typ, payload, func(byte, []byte) error { return nil })
		return err
	})
}

// noPanics fails if the server process logged a panic or a stack trace.
func noPanics(t *testing.T, ps *procServer) {
	t.Helper()
	if log := ps.log(); strings.Contains(log, "panic") || strings.Contains(log, "goroutine ") {
		t.Fatalf("server log shows a panic:\n%s", log)
	}
}

// TestAttackListPrefixTraversal (finding 5): list prefixes and object
// names that walk out of the store are refused at the protocol edge, for
// node and admin tokens alike, with an error that names neither the host's
// layout nor the store's path.
func TestAttackListPrefixTraversal(t *testing.T) {
	t.Parallel()
	ps := startProcServer(t)
	b := startBystander(t, ps, 10*time.Millisecond)
	storeDir := filepath.Join(ps.dir, "store")
	tests := []struct {
		name  string
		token string
		typ   byte
		req   message
	}{
		{"node token lists up out of its node", atkAlice, msgList, listRequest{Prefix: "nodes/alice/../../../../usr/"}},
		{"node token lists /etc", atkAlice, msgList, listRequest{Prefix: "nodes/alice/../../../../etc/pass"}},
		{"admin lists an absolute prefix", atkAdmin, msgList, listRequest{Prefix: "/etc/"}},
		{"admin lists up out of the store", atkAdmin, msgList, listRequest{Prefix: "../../../../usr/"}},
		{"admin lists with a backslash", atkAdmin, msgList, listRequest{Prefix: "nodes\\..\\..\\"}},
		{"admin lists with NUL", atkAdmin, msgList, listRequest{Prefix: "nodes/\x00"}},
		{"admin lists an overlong prefix", atkAdmin, msgList, listRequest{Prefix: strings.Repeat("a/", 300)}},
		{"node token gets up out of its node", atkAlice, msgGet, getRequest{Name: "nodes/alice/../../../../etc/passwd", Length: -1}},
		{"admin gets an absolute name", atkAdmin, msgGet, getRequest{Name: "/etc/passwd", Length: -1}},
		{"node token stats an undefined name", atkAlice, msgStat, nameRequest{Name: "nodes/alice/secret"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := dialProc(t, ps, tc.token)
			err := rawCall(cl, tc.typ, encode(tc.req))
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("err = %v, want a bad request", err)
			}
			if strings.Contains(err.Error(), storeDir) || strings.Contains(err.Error(), "no such file") {
				t.Fatalf("the refusal reveals the filesystem: %v", err)
			}
			t.Logf("refused: %v", err)
		})
	}
	// Well-formed requests on the same server still work.
	cl := dialProc(t, ps, atkAdmin)
	var n int
	if err := cl.Objects().List(ctx, "nodes/", func(backend.Info) error { n++; return nil }); err != nil || n == 0 {
		t.Fatalf("admin list of nodes/: %d objects, %v", n, err)
	}
	noPanics(t, ps)
	time.Sleep(100 * time.Millisecond) // dave appends during the attack and after it
	p50, p99 := b.check(2 * time.Second)
	t.Logf("dave: p50 %v p99 %v; server %v", p50, p99, ps.usage())
}

// TestAttackReadOverflow (finding 8): a read whose offset plus length
// overflows an int64 is answered with an error, not a panic.
func TestAttackReadOverflow(t *testing.T) {
	t.Parallel()
	ps := startProcServer(t)
	b := startBystander(t, ps, 10*time.Millisecond)
	tests := []struct {
		token, name string
		off, length int64
	}{
		{atkAdmin, store.ConfigObject, 1, math.MaxInt64},
		{atkAdmin, store.ConfigObject, math.MaxInt64, math.MaxInt64},
		{atkAdmin, store.ConfigObject, -1, 2},
		{atkDave, "nodes/dave/node.json", 1, math.MaxInt64},
		{atkDave, store.ConfigObject, math.MinInt64, 1},
	}
	for _, tc := range tests {
		cl := dialProc(t, ps, tc.token)
		err := rawCall(cl, msgGet, encode(getRequest{Name: tc.name, Off: tc.off, Length: tc.length}))
		if err == nil {
			t.Fatalf("get %s [%d,+%d): no error", tc.name, tc.off, tc.length)
		}
		var re *Error
		if !errors.As(err, &re) || re.Code == codeInternal {
			t.Fatalf("get %s [%d,+%d): %v, want an error reply that is not an internal error", tc.name, tc.off, tc.length, err)
		}
		t.Logf("refused: %v", err)
	}
	noPanics(t, ps)
	time.Sleep(100 * time.Millisecond) // dave appends during the attack and after it
	p50, p99 := b.check(2 * time.Second)
	t.Logf("dave: p50 %v p99 %v; server %v", p50, p99, ps.usage())
}

// TestAttackJunkObjects (finding 6): alice's token cannot store garbage
// manifests, foreign manifests or objects the layout lacks under its
// node; admin gc and list keep working for every node. Junk that reached
// the store's directory anyway (written before this check, or damage)
// makes gc report alice and delete nothing, and list show dave whole.
func TestAttackJunkObjects(t *testing.T) {
	t.Parallel()
	ps := startProcServer(t)
	b := startBystander(t, ps, 10*time.Millisecond)
	alice := ps.open(t, atkAlice)
	if _, err := history.Init(ctx, alice, "alice", "", nil); err != nil {
		t.Fatal(err)
	}
	junk := []struct {
		name, data string
	}{
		{"nodes/alice/manifests/00000000000000000099", "garbage"},
		{"nodes/alice/manifests/00000000000000000098", "clnbackup-manifest 1\n{}\nblake3 00\n"},
		{"nodes/alice/junk", strings.Repeat("x", 1000)},
		{"nodes/alice/manifests/x/y", "x"},
		{"nodes/alice/node.json2", "x"},
		{"nodes/alice/lease/00000000000000000001", `{"node":"dave","gen":1}`},
	}
	for _, j := range junk {
		err := alice.Objects().PutIfAbsent(ctx, j.name, []byte(j.data))
		if !errors.Is(err, ErrBadRequest) {
			t.Fatalf("put %s: %v, want a bad request", j.name, err)
		}
		t.Logf("refused: %v", err)
	}
	admin := ps.open(t, atkAdmin)
	if _, err := history.GC(ctx, admin, packs.GCOptions{Grace: 3 * time.Hour}); err != nil {
		t.Fatalf("admin gc: %v\n%s", err, ps.log())
	}
	for _, node := range []string{"alice", "dave"} {
		if _, err := history.Summarize(ctx, admin, node); err != nil {
			t.Fatalf("admin list of %s: %v", node, err)
		}
	}
	// Junk on the server's disk: gc reports alice only and sweeps nothing.
	p := filepath.Join(ps.dir, "store", "nodes", "alice", "manifests", "00000000000000000099")
	if err := os.WriteFile(p, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := history.GC(ctx, admin, packs.GCOptions{Grace: 3 * time.Hour})
	var ue *history.UnreadableError
	if !errors.As(err, &ue) || len(ue.Nodes) != 1 || ue.Nodes["alice"] == nil {
		t.Fatalf("gc with alice's junk: %v, want alice reported", err)
	}
	if s, err := history.Summarize(ctx, admin, "dave"); err != nil || len(s.Manifests) == 0 {
		t.Fatalf("list of dave beside alice's junk: %+v %v", s, err)
	}
	if s, err := history.Summarize(ctx, admin, "alice"); err == nil || len(s.Errors) == 0 {
		t.Fatalf("list of alice: junk not reported: %+v", s)
	}
	noPanics(t, ps)
	time.Sleep(100 * time.Millisecond) // dave appends during the attack and after it
	p50, p99 := b.check(2 * time.Second)
	t.Logf("dave: p50 %v p99 %v; server %v", p50, p99, ps.usage())
}

// TestAttackQuota: with quota=1MiB on alice's line, alice's upload of
// random chunks is refused once it would pass the quota (not 1.3 GB
// later), the refusal says what to do, list reports the quota, and dave
// (no quota) keeps writing.
func TestAttackQuota(t *testing.T) {
	t.Parallel()
	ps := startProcServer(t)
	auth := strings.Replace(authLines(), atkAlice+" alice\n", atkAlice+" alice quota=1MiB\n", 1)
	if err := os.WriteFile(ps.auth, []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	ps.signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(ps.log(), "reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload:\n%s", ps.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	b := startBystander(t, ps, 10*time.Millisecond)
	alice := ps.open(t, atkAlice)
	if _, err := history.Init(ctx, alice, "alice", "", nil); err != nil {
		t.Fatal(err)
	}
	w, err := alice.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	rnd := rand.New(rand.NewSource(1))
	var refused error
	sent := 0
	for i := 0; i < 1000 && refused == nil; i++ {
		page := make([]byte, 4096)
		rnd.Read(page)
		if _, _, err := w.Put(ctx, chunk.KindPage, page); err != nil {
			refused = err
			break
		}
		sent += len(page)
		if i%32 == 31 {
			refused = w.Flush(ctx)
		}
	}
	if !errors.Is(refused, ErrDenied) || !strings.Contains(refused.Error(), "quota") {
		t.Fatalf("after %d bytes of random chunks: %v, want a quota refusal", sent, refused)
	}
	if sent > 2<<20 {
		t.Fatalf("%d bytes accepted against a 1 MiB quota", sent)
	}
	t.Logf("refused after %d bytes: %v", sent, refused)
	q, ok, err := alice.Quota(ctx)
	if err != nil || !ok || q.Limit != 1<<20 || q.Used > q.Limit || q.Used < 512<<10 {
		t.Fatalf("quota reported: %+v ok %v err %v", q, ok, err)
	}
	// backup-cli list --json reports it.
	tokFile := filepath.Join(t.TempDir(), "alice.token")
	if err := os.WriteFile(tokFile, []byte(atkAlice+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(serverBinary(t), "list", "--json", "--token-file", tokFile, ps.url()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"limit_bytes": 1048576`) {
		t.Fatalf("backup-cli list --json: %v\n%s", err, out)
	}
	// A restart counts again from the store: what alice's nodes reference.
	ps.kill()
	ps.start()
	alice2 := dialProc(t, ps, atkAlice)
	deadline = time.Now().Add(10 * time.Second)
	for {
		q2, err := alice2.Quota(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if q2.Counted {
			t.Logf("after a restart: %+v (before: %+v)", q2, q)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no count after the restart: %+v", q2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	noPanics(t, ps)
	time.Sleep(100 * time.Millisecond) // dave appends during the attack and after it
	p50, p99 := b.check(5 * time.Second)
	t.Logf("dave: p50 %v p99 %v; server %v", p50, p99, ps.usage())
	fmt.Fprint(os.Stderr)
}
