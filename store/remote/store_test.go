package remote

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/backend/backendtest"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
	"github.com/clnbackup/backup/store/packs"
)

// TestConformance runs the backend suite against an admin client's
// objects, through a real server on loopback.
func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t testing.TB) backend.Backend {
		ts := newTestServer(t, testAuth(t))
		// The suite expects an empty backend.
		if err := ts.st.Objects().Delete(ctx, store.ConfigObject); err != nil {
			t.Fatal(err)
		}
		return ts.dial(t, tokAdmin).Objects()
	})
}

// hooks returns a workload: populate, then steps.
func hooks(t testing.TB) []workload.Hook {
	g := workload.New(workload.Config{Seed: 7, TargetBytes: 512 << 10, UpdateFrac: 0.05, InsertFrac: 0.02, DeleteFrac: 0.01})
	var hs []workload.Hook
	add := func(h workload.Hook) error { hs = append(hs, h); return nil }
	if err := g.Populate(add); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := g.Step(add); err != nil {
			t.Fatal(err)
		}
	}
	return hs
}

// runHistory initialises node, appends the hooks with a compaction in the
// middle, and restores: the restored database's path.
func runHistory(t *testing.T, st *store.Store, node string, hs []workload.Hook) string {
	t.Helper()
	if _, err := history.Init(ctx, st, node, "", nil); err != nil {
		t.Fatal(err)
	}
	n, err := history.OpenNode(ctx, st, node)
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		if _, err := n.Journal().Append(h.Record()); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		// Two compactions; the changes after the last one come from
		// the journal.
		if i == len(hs)/2 || i == 3*len(hs)/4 {
			if _, err := n.Compact(ctx, nil); err != nil {
				t.Fatalf("compact: %v", err)
			}
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "restored.sqlite3")
	if _, err := history.Restore(ctx, st, history.RestoreOptions{Node: node, Dest: dest}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	return dest
}

// TestHistoryThroughServer: init, appends, compactions and restore through
// the server with a node token give the database the same steps give on a
// local store.
func TestHistoryThroughServer(t *testing.T) {
	hs := hooks(t)
	expected := filepath.Join(t.TempDir(), "expected.sqlite3")
	if err := workload.Build(expected, workload.Hooks(hs...)); err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, testAuth(t))
	remote := runHistory(t, ts.open(t, tokAlice), "alice", hs)

	localURL := "file://" + filepath.Join(t.TempDir(), "local")
	lst, _, err := store.Create(ctx, localURL, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer lst.Close()
	local := runHistory(t, lst, "alice", hs)
	for what, p := range map[string]string{"remote": remote, "local": local} {
		diff, err := replay.Diff(p, expected)
		if err != nil {
			t.Fatal(err)
		}
		if len(diff) > 0 {
			t.Fatalf("%s restore differs from the expected database: %v", what, diff[:min(5, len(diff))])
		}
	}
	// The server's store holds the node with manifests and a trimmed
	// journal, readable by the server itself.
	seqs, err := ts.st.ManifestSeqs(ctx, "alice")
	if err != nil || len(seqs) < 3 {
		t.Fatalf("server store manifests %v, %v", seqs, err)
	}
	// gc through an admin token works over the wire.
	admin := ts.open(t, tokAdmin)
	if admin.Config().ID != ts.st.Config().ID {
		t.Fatal("admin sees another store")
	}
	rep, err := history.GC(ctx, admin, packs.GCOptions{Grace: 2 * store.DefaultMaxWriterAge})
	if err != nil {
		t.Fatalf("gc through admin token: %v", err)
	}
	if rep.Nodes != 1 || rep.Packs == 0 {
		t.Fatalf("gc report %+v", rep)
	}
	// verify --read-data through an admin token: clean, journal included.
	vrep, err := history.Verify(ctx, admin, history.VerifyOptions{ReadData: true})
	if err != nil || len(vrep.Problems) > 0 || vrep.Journals != 1 {
		t.Fatalf("verify through admin token: %v %+v", err, vrep)
	}
}

// TestNodeTokenLimits: a node token reaches its own nodes' objects and
// nothing else, and is told why.
func TestNodeTokenLimits(t *testing.T) {
	ts := newTestServer(t, testAuth(t))
	for _, n := range []string{"alice", "bob"} {
		if _, err := history.Init(ctx, ts.st, n, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ts.st.Objects().PutIfAbsent(ctx, "packs/00/0011", []byte("pack")); err != nil {
		t.Fatal(err)
	}
	alice := ts.dial(t, tokAlice)
	o := alice.Objects()
	if alice.Chunks() == nil || alice.Admin() {
		t.Fatal("a node token needs the chunk service")
	}
	mustDeny := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrDenied) {
			t.Fatalf("%s: err = %v, want denied", what, err)
		}
		if !strings.Contains(err.Error(), "denied") {
			t.Fatalf("%s: message %q does not say denied", what, err)
		}
	}
	_, err := o.Get(ctx, "nodes/bob/node.json", 0, -1)
	mustDeny("read bob's node", err)
	mustDeny("write bob's object", o.PutIfAbsent(ctx, "nodes/bob/manifests/00000000000000000009", []byte("x")))
	mustDeny("list bob's objects", o.List(ctx, "nodes/bob/", func(backend.Info) error { return nil }))
	mustDeny("list packs", o.List(ctx, "packs/", func(backend.Info) error { return nil }))
	_, err = o.Get(ctx, "packs/00/0011", 0, -1)
	mustDeny("read a pack", err)
	_, err = o.Stat(ctx, "index/00/0011")
	mustDeny("stat an index", err)
	mustDeny("write a pack", o.PutIfAbsent(ctx, "packs/00/0022", []byte("x")))
	mustDeny("delete own manifest", o.Delete(ctx, "nodes/alice/manifests/00000000000000000001"))
	mustDeny("delete a pack", o.Delete(ctx, "packs/00/0011"))
	mustDeny("delete the config", o.Delete(ctx, store.ConfigObject))
	mustDeny("delete bob's lease", o.Delete(ctx, "nodes/bob/lease/00000000000000000001"))
	mustDeny("write a journal file", o.PutIfAbsent(ctx, "nodes/alice/journal/x.seg", []byte("x")))
	_, err = alice.Journals().OpenJournal(ctx, "bob")
	mustDeny("open bob's journal", err)
	mustDeny("read bob's journal", alice.Journals().ReadJournal(ctx, "bob", 0, func(journal.Record) error { return nil }))

	// What it may do still works on the same connection.
	var names []string
	if err := o.List(ctx, "", func(in backend.Info) error { names = append(names, in.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(names) < 3 || names[0] != store.ConfigObject {
		t.Fatalf("list: %v", names)
	}
	for _, n := range names[1:] {
		if !strings.HasPrefix(n, "nodes/alice/") {
			t.Fatalf("list shows %s to alice's token", n)
		}
	}
	nodes, err := ts.open(t, tokAlice).Nodes(ctx)
	if err != nil || fmt.Sprint(nodes) != "[alice]" {
		t.Fatalf("nodes = %v, %v", nodes, err)
	}
	// A lease must decode and be alice's at its generation (the server
	// checks a node token's objects by kind).
	if err := o.PutIfAbsent(ctx, "nodes/alice/lease/00000000000000000042", []byte("{}")); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("put of a lease naming no node: %v, want a bad request", err)
	}
	lease := `{"node":"alice","owner":"test","host":"h","pid":1,"acquired":"2026-01-01T00:00:00Z","expires":"2026-01-01T00:01:00Z","gen":42}`
	if err := o.PutIfAbsent(ctx, "nodes/alice/lease/00000000000000000042", []byte(lease)); err != nil {
		t.Fatal(err)
	}
	if err := o.Delete(ctx, "nodes/alice/lease/00000000000000000042"); err != nil {
		t.Fatalf("delete own lease: %v", err)
	}
	if _, err := o.Get(ctx, "nodes/alice/node.json", 0, -1); err != nil {
		t.Fatal(err)
	}
	// A token the server does not know is refused at once.
	u, _ := store.ParseURL(ts.socketURL())
	start := time.Now()
	if _, err := Dial(ctx, u, store.Options{Token: strings.Repeat("9", 40)}); !errors.Is(err, ErrDenied) {
		t.Fatalf("unknown token: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("unknown token retried")
	}
	// The journal can only be trimmed up to the newest manifest.
	st := ts.open(t, tokAlice)
	j, err := st.OpenJournal(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if _, err := j.Append(journal.Record{Version: 1, Statements: []string{"CREATE TABLE x(a)"}}); err != nil {
		t.Fatal(err)
	}
	if err := j.Trim(1); !errors.Is(err, ErrConflict) {
		t.Fatalf("trim past the newest manifest: %v", err)
	}
}

// TestPutDeltaBodyRefused: a node client may not send delta bodies (it
// stores full pages only); the server answers error 10.
func TestPutDeltaBodyRefused(t *testing.T) {
	ts := newTestServer(t, testAuth(t))
	cl := ts.dial(t, tokAlice)
	page := bytes.Repeat([]byte("p"), 4096)
	_, err := cl.Chunks().PutBodies(ctx, []chunk.Body{{ID: chunker.Sum(page), Kind: chunk.KindPage, Raw: 4096, Base: chunker.Sum([]byte("base")), Body: []byte("x")}})
	if !errors.Is(err, chunk.ErrBad) || !strings.Contains(err.Error(), "delta") {
		t.Fatalf("delta body from a node client: %v", err)
	}
}
