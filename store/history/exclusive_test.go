package history_test

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/packs"
)

// storeBytes is the size of every file of a local store.
func storeBytes(t *testing.T, url string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(strings.TrimPrefix(url, "file://"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		in, err := d.Info()
		if err == nil {
			n += in.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGCExclusive: gc --exclusive refuses while a node's writer is live,
// naming the node; once it closes, the space of forgotten restore points
// comes back in one run, on packs written seconds ago (no grace period),
// every remaining restore point restores equal, and the leases are given
// back. A writer that opens a node during a run is refused or runs after
// it, and loses nothing.
func TestGCExclusive(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// during: what happens during the run: nothing, a writer opens n2
		// ("open"), a node n3 is created ("init"), n2's lease is removed
		// with unlock --force ("unlock").
		during string
	}{{"quiet", ""}, {"writer opens a node during the run", "open"}, {"node created during the run", "init"},
		{"lease forced away during the run", "unlock"}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			dbPath, g := buildDB(t, dir, 11, 2<<20)
			st, url := newStore(t)
			if _, err := history.Init(ctx, st, "n1", dbPath, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := history.Init(ctx, st, "n2", "", nil); err != nil {
				t.Fatal(err)
			}
			n, err := history.OpenNode(ctx, st, "n1")
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				touchAndCompact(t, n, g, dbPath, 0.4)
			}

			// Refused while n1's writer is live, naming it; nothing changed.
			before := storeBytes(t, url)
			for _, dry := range []bool{true, false} {
				_, err := history.GCExclusive(ctx, st, packs.GCOptions{DryRun: dry})
				var held *history.LeasesHeldError
				if !errors.As(err, &held) || len(held.Held) != 1 || held.Held[0].Node != "n1" || !strings.Contains(err.Error(), `node "n1"`) {
					t.Fatalf("gc --exclusive (dry run %v) with n1 open: %v", dry, err)
				}
			}
			if got := storeBytes(t, url); got != before {
				t.Fatalf("a refused gc --exclusive changed the store: %d -> %d bytes", before, got)
			}
			if l, err := st.Lease(ctx, "n2"); err != nil || st.LeaseLive(l) {
				t.Fatalf("a refused gc --exclusive kept the lease of n2: %v %v", l, err)
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}

			// Forget all but the newest restore point of n1; what the
			// others alone named is garbage now.
			if _, err := history.Forget(ctx, st, history.ForgetOptions{Node: "n1", Policy: history.ForgetPolicy{Last: 1}}); err != nil {
				t.Fatal(err)
			}
			wants := map[string]string{}
			for _, node := range []string{"n1", "n2"} {
				p, _ := restore(t, st, history.RestoreOptions{Node: node})
				wants[node] = p
			}
			before = storeBytes(t, url)
			dry, err := history.GCExclusive(ctx, st, packs.GCOptions{DryRun: true})
			if err != nil || !dry.Exclusive || dry.ReclaimedBytes == 0 {
				t.Fatalf("dry run: %+v, %v", dry, err)
			}
			if got := storeBytes(t, url); got != before {
				t.Fatalf("a dry run changed the store: %d -> %d bytes", before, got)
			}

			// A normal gc deletes nothing of packs this young.
			if r, err := history.GC(ctx, st, packs.GCOptions{DryRun: true}); err != nil || r.ReclaimedBytes != 0 {
				t.Fatalf("normal gc dry run: %+v, %v", r, err)
			}

			// During the run (its progress is reported after the leases are
			// taken and the chunks marked), a writer opens n2, or a new node
			// is created.
			var during error
			once := sync.Once{}
			opts := packs.GCOptions{Progress: func(done, total int64) {
				once.Do(func() {
					switch tc.during {
					case "open":
						w, err := history.OpenNode(ctx, st, "n2")
						if err == nil {
							w.Close()
						}
						during = err
					case "init":
						_, during = history.Init(ctx, st, "n3", dbPath, nil)
					case "unlock":
						_, during = st.BreakLease(ctx, "n2", true)
					}
				})
			}}
			rep, err := history.GCExclusive(ctx, st, opts)
			switch tc.during {
			case "open":
				if !errors.Is(during, store.ErrLeaseHeld) || err != nil {
					t.Fatalf("OpenNode during gc --exclusive: %v (want refused); gc: %v", during, err)
				}
			case "init":
				if during != nil || err == nil || !strings.Contains(err.Error(), `node "n3" was created during gc --exclusive`) {
					t.Fatalf("Init during gc --exclusive: %v; gc: %v (want stopped before deleting)", during, err)
				}
				if got := storeBytes(t, url); got < before {
					t.Fatalf("gc --exclusive deleted while a node it does not hold appeared: %d -> %d bytes", before, got)
				}
				p, _ := restore(t, st, history.RestoreOptions{Node: "n3"})
				wants["n3"] = p
				before = storeBytes(t, url)
				if rep, err = history.GCExclusive(ctx, st, packs.GCOptions{}); err != nil {
					t.Fatal(err)
				}
			case "unlock":
				if during != nil || err == nil || !strings.Contains(err.Error(), `lost the lease of node "n2"`) {
					t.Fatalf("unlock --force during gc --exclusive: %v; gc: %v (want stopped before deleting)", during, err)
				}
				if got := storeBytes(t, url); got < before {
					t.Fatalf("gc --exclusive deleted after losing a lease: %d -> %d bytes", before, got)
				}
				before = storeBytes(t, url)
				if rep, err = history.GCExclusive(ctx, st, packs.GCOptions{}); err != nil {
					t.Fatal(err)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
			}
			after := storeBytes(t, url)
			t.Logf("store %d -> %d bytes (%.0f%% reclaimed in one run); report %+v",
				before, after, 100*float64(before-after)/float64(before), rep)
			if rep.DeletedPacks+rep.RepackedPacks+rep.ConsolidatedPacks == 0 || rep.DeletedChunks == 0 || after >= before {
				t.Fatalf("gc --exclusive reclaimed nothing: %d -> %d bytes, %+v", before, after, rep)
			}
			if rep.YoungChunks+rep.NewlyCondemned+rep.WaitingChunks != 0 {
				t.Fatalf("gc --exclusive kept unreferenced chunks waiting: %+v", rep)
			}
			for node, want := range wants {
				got, _ := restore(t, st, history.RestoreOptions{Node: node})
				assertSame(t, "restore of "+node+" after gc --exclusive", got, want)
			}
			if vr, err := history.Verify(ctx, st, history.VerifyOptions{ReadData: true}); err != nil || !vr.OK() {
				t.Fatalf("verify after gc --exclusive: %+v, %v", vr, err)
			}
			// The leases are given back: writers open their nodes.
			for node := range wants {
				w, err := history.OpenNode(ctx, st, node)
				if err != nil {
					t.Fatalf("open %s after gc --exclusive: %v", node, err)
				}
				w.Close()
			}
		})
	}
}
