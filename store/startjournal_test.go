package store

import (
	"strings"
	"testing"

	"github.com/clnbackup/backup/store/journal"
)

// TestStartJournal: a journal started at a seq numbers on from it, survives
// a reopen with that numbering, and a node that has a journal, or whose
// lease the caller does not hold, is refused.
func TestStartJournal(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		before  func(t *testing.T, st *Store) // what the node already has
		first   uint64
		owner   string // "" for the lease's holder
		wantErr string
	}{
		{"fresh node", func(*testing.T, *Store) {}, 403, "", ""},
		{"lease of another owner", func(*testing.T, *Store) {}, 403, "0123456789abcdef", "held by another writer"},
		{"journal already there", func(t *testing.T, st *Store) {
			j, err := st.OpenJournal(ctx, "n1")
			if err != nil {
				t.Fatal(err)
			}
			j.Close()
		}, 403, "", "already has a journal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, _ := newTestStore(t)
			if !st.CanStartJournal() {
				t.Fatal("a local store cannot start journals")
			}
			tc.before(t, st)
			h, err := st.AcquireLease(ctx, "n1", 0)
			if err != nil {
				t.Fatal(err)
			}
			owner := tc.owner
			if owner == "" {
				owner = h.Lease().Owner
			}
			j, err := st.StartJournal(ctx, "n1", tc.first, owner)
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

// TestStartJournalNeedsLease: without any lease the start is refused.
func TestStartJournalNeedsLease(t *testing.T) {
	t.Parallel()
	st, _ := newTestStore(t)
	if _, err := st.StartJournal(ctx, "n1", 5, "0123456789abcdef"); err == nil || !strings.Contains(err.Error(), "nobody holds its lease") {
		t.Fatalf("StartJournal without a lease: %v", err)
	}
}
