package store

import (
	"strings"
	"testing"

	"github.com/clnbackup/backup/store/journal"
)

// TestStartJournal: a journal started at a seq numbers on from it, survives
// a reopen with that numbering, and a node that has a journal is refused.
func TestStartJournal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		before  func(t *testing.T, st *Store) // what the node already has
		first   uint64
		wantErr string
	}{
		{"fresh node", func(*testing.T, *Store) {}, 403, ""},
		{"journal already there", func(t *testing.T, st *Store) {
			j, err := st.OpenJournal(ctx, "n1")
			if err != nil {
				t.Fatal(err)
			}
			j.Close()
		}, 403, "already holds a journal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, _ := newTestStore(t)
			if !st.CanStartJournal() {
				t.Fatal("a local store cannot start journals")
			}
			tc.before(t, st)
			j, err := st.StartJournal(ctx, "n1", tc.first)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("StartJournal: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r, err := j.Append(journal.Record{Version: 7, Statements: []string{"SELECT 1"}})
			if err != nil || r.Seq != tc.first {
				t.Fatalf("first append: seq %d, %v; want %d", r.Seq, err, tc.first)
			}
			j.Close()
			if j, err = st.OpenJournal(ctx, "n1"); err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			if next := j.NextSeq(); next != tc.first+1 {
				t.Fatalf("reopened journal continues at %d, want %d", next, tc.first+1)
			}
		})
	}
}
