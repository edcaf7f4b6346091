package history_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/packs"
)

// TestUnreadableNode: one node's junk manifest (garbage, or one that
// decodes but names a page chunk as its list) makes gc report that node,
// and only it, and condemn and delete nothing, however often it runs; list
// still summarizes the other nodes and the node's readable manifests.
// Once the junk is removed, gc reclaims the garbage.
func TestUnreadableNode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		junk func(t *testing.T, st *store.Store, good *manifest.Manifest) []byte
	}{
		{"garbage bytes", func(*testing.T, *store.Store, *manifest.Manifest) []byte {
			return []byte("clnbackup-manifest 1\n{not json}\n")
		}},
		{"decodes but its list is a page", func(t *testing.T, st *store.Store, good *manifest.Manifest) []byte {
			// A real page of the node: gc cannot decode it as a list, so
			// it cannot know which pages the manifest needs.
			page := pageOfSnapshot(t, st, good)
			m := *good
			m.Seq = 99
			m.Snapshot.Lists = []chunker.ID{page}
			m.Snapshot.Patches = nil
			data, err := manifest.Encode(&m)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := &testClock{}
			_, url := newStore(t)
			st := openWithClock(t, url, clock)
			keepDB := filepath.Join("..", "..", "testdata", "trace1-final.sqlite3")
			aliceDB := filepath.Join("..", "..", "testdata", "crash3-final.sqlite3")
			if _, err := history.Init(ctx, st, "keep", keepDB, nil); err != nil {
				t.Fatal(err)
			}
			good, err := history.Init(ctx, st, "alice", aliceDB, nil)
			if err != nil {
				t.Fatal(err)
			}
			orphanNode(t, st, "gone", filepath.Join("..", "..", "testdata", "legacy-v1-live.sqlite3"))
			junkName := fmt.Sprintf("nodes/alice/manifests/%020d", 99)
			// Written to the directory as a node's client could before the
			// server checked objects by kind (or as damage leaves it).
			if err := st.Objects().PutIfAbsent(ctx, junkName, tc.junk(t, st, good)); err != nil {
				t.Fatal(err)
			}
			before, err := st.Usage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for round := range 3 {
				clock.Advance(testGrace + time.Minute)
				rep, err := history.GC(ctx, st, packs.GCOptions{Grace: testGrace})
				var ue *history.UnreadableError
				if !errors.As(err, &ue) || !errors.Is(err, history.ErrUnreadable) {
					t.Fatalf("gc round %d: err = %v, want an UnreadableError", round, err)
				}
				if len(ue.Nodes) != 1 || ue.Nodes["alice"] == nil || !strings.Contains(err.Error(), "deleted and condemned nothing") {
					t.Fatalf("gc round %d: reports %v, want node alice only: %v", round, ue.Nodes, err)
				}
				if rep.NewlyCondemned != 0 || rep.DeletedPacks != 0 {
					t.Fatalf("gc round %d swept with an unreadable node: %+v", round, rep)
				}
			}
			after, err := st.Usage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if after.PackBytes != before.PackBytes || after.Packs != before.Packs {
				t.Fatalf("packs changed while a node was unreadable: %+v -> %+v", before, after)
			}
			// list: the other node whole, alice's readable manifest and
			// the junk named.
			keep, err := history.Summarize(ctx, st, "keep")
			if err != nil || len(keep.Manifests) != 1 {
				t.Fatalf("summary of keep: %+v, %v", keep, err)
			}
			alice, err := history.Summarize(ctx, st, "alice")
			if err == nil && tc.name == "garbage bytes" {
				t.Fatal("summary of alice: no error for a garbage manifest")
			}
			if len(alice.Manifests) == 0 || alice.Manifests[0].Seq != good.Seq {
				t.Fatalf("summary of alice lost its readable manifest: %+v", alice)
			}
			t.Logf("alice: %v", alice.Errors)
			// Restores still work, junk removed gc reclaims the orphan.
			got, _ := restore(t, st, history.RestoreOptions{Node: "alice", Manifest: good.Seq})
			assertSame(t, "alice after gc rounds", got, aliceDB)
			if err := st.Objects().Delete(ctx, junkName); err != nil {
				t.Fatal(err)
			}
			clock.Advance(testGrace + time.Minute)
			if r := gc(t, st); r.NewlyCondemned == 0 {
				t.Fatalf("gc after the junk was removed condemned nothing: %+v", r)
			}
		})
	}
}

// pageOfSnapshot returns one page chunk of m's snapshot.
func pageOfSnapshot(t *testing.T, st *store.Store, m *manifest.Manifest) chunker.ID {
	t.Helper()
	data, err := st.Get(ctx, m.Snapshot.Lists[0])
	if err != nil {
		t.Fatal(err)
	}
	ids, err := manifest.DecodeList(data)
	if err != nil || len(ids) == 0 {
		t.Fatalf("list chunk of %d ids: %v", len(ids), err)
	}
	return ids[0]
}
