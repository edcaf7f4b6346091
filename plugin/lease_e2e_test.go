package plugin_test

import (
	"context"
	"testing"

	ld "github.com/clnbackup/backup/plugin/lightningdtest"
	"github.com/clnbackup/backup/store"
)

// TestTwoPluginsOneNode: a second plugin for a node is refused while the
// first runs; after the first is killed with SIGKILL, the node is taken
// over: after `backup-cli unlock` (here its library call), and also without
// it, since a dead owner on the same host needs no manual step.
func TestTwoPluginsOneNode(t *testing.T) {
	t.Parallel()
	for _, unlock := range []bool{true, false} {
		name := "restart without unlock"
		if unlock {
			name = "unlock then start"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			n, m := newNode(t, ""), newModel(t)
			a := startInit(t, n.Dir)
			write(t, a, m, ld.Change(1, 0))
			refused(t, start(t, n.Dir), ld.Change(2, 0), "another")
			a.Kill()
			if unlock {
				st, err := store.Open(context.Background(), n.URL, store.Options{})
				if err != nil {
					t.Fatal(err)
				}
				cleared, err := st.BreakLease(context.Background(), n.Name, false)
				st.Close()
				if err != nil || cleared == nil {
					t.Fatalf("unlock after kill -9: cleared %v, %v", cleared, err)
				}
			}
			c := startInit(t, n.Dir)
			write(t, c, m, ld.Change(2, 0))
			c.Close()
			mustRestoreMatch(t, n, m, "after the takeover")
		})
	}
}
