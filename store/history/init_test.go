package history_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
)

// TestInitLeavesNoHalfNode pins what a failed or repeated Init leaves: a
// database it cannot read adds no node (so init can simply run again); a
// node added by an init that stopped before its first manifest is finished
// by the next one; a node with a manifest is refused.
func TestInitLeavesNoHalfNode(t *testing.T) {
	t.Parallel()
	good := filepath.Join("..", "..", "testdata", "trace1-final.sqlite3")
	for _, tc := range []struct {
		name string
		// before prepares the store (and the lightning dir) and returns
		// the database Init reads.
		before  func(t *testing.T, st *store.Store, dir string) string
		wantErr error // nil: Init succeeds
		wantMsg string
		// wantNode: whether the node exists afterwards.
		wantNode bool
	}{
		{"not a database", func(t *testing.T, st *store.Store, dir string) string {
			p := filepath.Join(dir, "lightningd.sqlite3")
			if err := os.WriteFile(p, []byte("this is not an SQLite database, only some text"), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, nil, "no node was added", false},
		{"init stopped after adding the node", func(t *testing.T, st *store.Store, dir string) string {
			if err := st.CreateNode(ctx, store.NodeInfo{Name: "n1", Created: st.Now()}); err != nil {
				t.Fatal(err)
			}
			return good
		}, nil, "", true},
		{"node with a restore point", func(t *testing.T, st *store.Store, dir string) string {
			if _, err := history.Init(ctx, st, "n1", "", nil); err != nil {
				t.Fatal(err)
			}
			return good
		}, store.ErrNodeExists, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, _ := newStore(t)
			db := tc.before(t, st, t.TempDir())
			_, err := history.Init(ctx, st, "n1", db, nil)
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Init: %v, want %v", err, tc.wantErr)
				}
			case tc.wantMsg != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("Init: %v, want an error saying %q", err, tc.wantMsg)
				}
			case err != nil:
				t.Fatalf("Init: %v", err)
			}
			nodes, err := st.Nodes(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.Contains(nodes, "n1"); got != tc.wantNode {
				t.Fatalf("node n1 exists: %v, want %v (nodes %v)", got, tc.wantNode, nodes)
			}
			if tc.wantErr == nil && tc.wantMsg == "" {
				got, res := restore(t, st, history.RestoreOptions{Node: "n1"})
				assertSame(t, "finished init", got, good)
				if res.Version != 385 {
					t.Fatalf("restored data_version %d", res.Version)
				}
			}
		})
	}
}
