package remote

import (
	"bytes"
	"errors"
	"testing"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/history"
)

// TestAttackChunkIDsAcrossNodes (finding 12, informational): chunk ids are
// capabilities. Bob's token cannot learn alice's ids (her node's objects
// are denied to him), but with an id he knows, he can ask whether the
// store holds it and read it, whoever stored it: documented in
// docs/security.md until ids are keyed (the encryption issue). The test
// pins both halves, so a change to either is a decision, not an accident.
func TestAttackChunkIDsAcrossNodes(t *testing.T) {
	t.Parallel()
	ps := startProcServer(t)
	alice := ps.open(t, atkAlice)
	m, err := history.Init(ctx, alice, "alice", "../../testdata/trace1-final.sqlite3", nil)
	if err != nil {
		t.Fatalf("init alice: %v\n%s", err, ps.log())
	}
	if len(m.Snapshot.Lists) == 0 {
		t.Fatal("alice's snapshot names no list chunk")
	}
	id := m.Snapshot.Lists[0]
	want, err := alice.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}

	bob := ps.open(t, atkBob)
	objs := bob.Objects()
	for _, name := range []string{"nodes/alice/node.json", "nodes/alice/manifests/00000000000000000001"} {
		if _, err := objs.Get(ctx, name, 0, -1); err == nil {
			t.Errorf("bob read %s", name)
		} else if !errors.Is(err, ErrDenied) {
			t.Errorf("bob reads %s: %v, want a denial", name, err)
		}
	}
	err = objs.List(ctx, "nodes/alice/", func(backend.Info) error { return nil })
	if !errors.Is(err, ErrDenied) {
		t.Errorf("bob lists alice's node: %v, want a denial", err)
	}
	if nodes, err := bob.Nodes(ctx); err != nil {
		t.Fatal(err)
	} else if len(nodes) != 0 {
		t.Errorf("bob sees nodes %v, want none of his yet", nodes)
	}

	// With the id, the chunk is his to read (the documented capability).
	got, err := bob.Get(ctx, id)
	if err != nil {
		t.Fatalf("bob reads a chunk by a known id: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Error("bob read other bytes than alice's chunk")
	}
}
