package remote

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// TestJournalStart: journal-start on a real server creates a node's journal
// numbering from the requested seq, for the lease's holder only, only for
// the token's nodes and only for a node without a journal; a start
// repeated after its answer was lost gets the journal it created. The
// client's own lease check is bypassed (the journals are called directly),
// so every refusal here is the server's.
func TestJournalStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		token   string
		node    string
		owner   func(h *store.LeaseHolder) string
		before  func(t *testing.T, ts *testServer, owner string) // what the server's store has first
		wantErr string
	}{
		{"holder", tokAlice, "alice", holderOf, nothing, ""},
		{"not its node", tokAlice, "bob", holderOf, nothing, "not one of its nodes"},
		{"another owner", tokAlice, "alice", func(*store.LeaseHolder) string { return "0123456789abcdef" }, nothing, "held by another writer"},
		{"journal with records", tokAlice, "alice", holderOf, func(t *testing.T, ts *testServer, _ string) {
			j, err := ts.st.OpenJournal(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := j.Append(journal.Record{Version: 1, Statements: []string{"SELECT 1"}}); err != nil {
				t.Fatal(err)
			}
			j.Close()
		}, "already has a journal"},
		{"retried start", tokAlice, "alice", holderOf, func(t *testing.T, ts *testServer, owner string) {
			// The first try's journal, its answer lost.
			j, err := ts.st.StartJournal(ctx, "alice", 403, owner)
			if err != nil {
				t.Fatal(err)
			}
			j.Close()
		}, ""},
		{"retried start at another seq", tokAlice, "alice", holderOf, func(t *testing.T, ts *testServer, owner string) {
			j, err := ts.st.StartJournal(ctx, "alice", 7, owner)
			if err != nil {
				t.Fatal(err)
			}
			j.Close()
		}, "already has a journal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestServer(t, testAuth(t))
			h, err := ts.st.AcquireLease(ctx, tc.node, 0)
			if err != nil {
				t.Fatal(err)
			}
			tc.before(t, ts, h.Lease().Owner)
			js := ts.dial(t, tc.token).Journals().(journals)
			j, err := js.StartJournal(ctx, tc.node, 403, tc.owner(h))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("journal-start: %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if j.NextSeq() != 403 {
				t.Fatalf("started journal at next seq %d, want 403", j.NextSeq())
			}
			r, err := j.Append(journal.Record{Version: 9, Statements: []string{"SELECT 1"}})
			if err != nil || r.Seq != 403 {
				t.Fatalf("first append: seq %d, %v; want 403", r.Seq, err)
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			j, err = ts.st.OpenJournal(ctx, tc.node)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			if next := j.NextSeq(); next != 404 {
				t.Fatalf("the server's journal continues at %d, want 404", next)
			}
		})
	}
}

func holderOf(h *store.LeaseHolder) string    { return h.Lease().Owner }
func nothing(*testing.T, *testServer, string) {}

var legacyDbak = filepath.Join("..", "..", "testdata", "legacy-v1.dbak")

// TestImportLegacyThroughServer: a node token imports the Python plugin's
// backup into a store server (journal-start continues its numbering), and
// the newest state and an old version restore as the legacy backup does.
func TestImportLegacyThroughServer(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, testAuth(t))
	st := ts.open(t, tokAlice)
	if !st.CanStartJournal() {
		t.Fatal("a store server's journals cannot start a journal")
	}
	res, err := history.ImportLegacy(ctx, st, "alice", legacyDbak, history.ImportOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 400 || res.JournalRecords == 0 || res.NextSeq <= uint64(res.Records-res.JournalRecords) {
		t.Fatalf("import: %+v", res)
	}
	dir := t.TempDir()
	want, got := filepath.Join(dir, "want.sqlite3"), filepath.Join(dir, "got.sqlite3")
	if _, err := history.RestoreLegacy(ctx, legacyDbak, want, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := history.Restore(ctx, st, history.RestoreOptions{Node: "alice", Dest: got}); err != nil {
		t.Fatal(err)
	}
	if diff, err := replay.Diff(got, want); err != nil || len(diff) > 0 {
		t.Fatalf("newest state differs from the legacy restore: %v %q", err, diff)
	}
	v := uint32(57)
	old := filepath.Join(dir, "old.sqlite3")
	if rr, err := history.Restore(ctx, st, history.RestoreOptions{Node: "alice", Dest: old, Version: &v}); err != nil || rr.Version != v {
		t.Fatalf("restore --version 57: %+v, %v", rr, err)
	}
	// The next writer continues the numbering the import started.
	n, err := history.OpenNode(ctx, st, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	rec, err := n.Journal().Append(journal.Record{Version: 401, Statements: []string{"UPDATE vars SET intval = intval + 1 WHERE name = 'data_version'"}})
	if err != nil || rec.Seq != res.NextSeq {
		t.Fatalf("next record: seq %d, %v; the import said %d", rec.Seq, err, res.NextSeq)
	}
}
