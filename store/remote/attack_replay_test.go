package remote

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// TestAttackReplayEscape replays security issue #12, finding 1, against a
// real server process: with carol's token (a leaked node token, or a
// compromised carol) an attacker appends to node carol's journal a record
// whose statements leave the database (COMMIT, ATTACH a file anywhere,
// write to it, BEGIN; or VACUUM INTO). Restore and compaction used to
// replay them verbatim and create the file as whoever ran them. Now:
//   - the admin's restore of carol fails wrapping replay.ErrRefused, naming
//     node carol, the record's data_version and the statement, and leaves
//     neither the attack's file nor any restore output;
//   - carol's own compaction fails the same way and leaves its temporary
//     directory empty;
//   - the admin's restore still fails once the compaction has sealed the
//     record into a change chunk;
//   - restoring the data_version before the record still works;
//   - a well-behaved node (dave) keeps appending meanwhile.
func TestAttackReplayEscape(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// stmts is the attack; PLANT is replaced by the file it creates.
		stmts []string
		// quoted is the statement the error quotes (its beginning).
		quoted string
	}{
		{"attach", []string{
			"UPDATE vars SET intval = 2 WHERE name = 'data_version'",
			"COMMIT",
			"ATTACH DATABASE 'PLANT' AS p",
			"CREATE TABLE p.t(x)",
			"INSERT INTO p.t VALUES('owned by carol')",
			"BEGIN",
		}, `statement 1 of 6 "COMMIT"`},
		{"attach in one string", []string{
			"UPDATE vars SET intval = 2 WHERE name = 'data_version'; COMMIT; ATTACH DATABASE 'PLANT' AS p; CREATE TABLE p.t(x); BEGIN",
		}, `statement 0 of 1 "UPDATE vars SET intval = 2 WHERE name = 'data_version'; COMMIT;`},
		{"vacuum into", []string{
			"UPDATE vars SET intval = 2 WHERE name = 'data_version'",
			"VACUUM INTO 'PLANT'",
		}, `statement 1 of 2 "VACUUM INTO '`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ps := startProcServer(t)
			dave := startBystander(t, ps, 20*time.Millisecond)
			plantDir := t.TempDir()
			plant := filepath.Join(plantDir, "planted.sqlite3")

			// The attacker, with carol's token.
			carol := ps.open(t, atkCarol)
			if _, err := history.Init(ctx, carol, "carol", "", nil); err != nil {
				t.Fatalf("init carol: %v\nserver log:\n%s", err, ps.log())
			}
			n, err := history.OpenNode(ctx, carol, "carol")
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			n.TempDir = t.TempDir()
			stmts := make([]string, len(tc.stmts))
			for i, s := range tc.stmts {
				stmts[i] = strings.ReplaceAll(s, "PLANT", plant)
			}
			for _, r := range []journal.Record{
				{Version: 1, Statements: []string{
					"CREATE TABLE vars (name TEXT, val TEXT, intval INTEGER, blobval BLOB, PRIMARY KEY (name))",
					"INSERT INTO vars (name, intval) VALUES ('data_version', 1)",
				}},
				{Version: 2, Statements: stmts},
				// A later change, so that compaction seals the attack.
				{Version: 3, Statements: []string{"UPDATE vars SET intval = 3 WHERE name = 'data_version'"}},
			} {
				if _, err := n.Journal().Append(r); err != nil {
					t.Fatalf("append data_version %d: %v", r.Version, err)
				}
			}

			admin := ps.open(t, atkAdmin)
			restore := func(what string, version *uint32) (string, error) {
				t.Helper()
				destDir := t.TempDir()
				dest := filepath.Join(destDir, "carol.sqlite3")
				_, err := history.Restore(ctx, admin, history.RestoreOptions{Node: "carol", Dest: dest, Version: version})
				if err == nil {
					return dest, nil
				}
				if entries, _ := os.ReadDir(destDir); len(entries) != 0 {
					t.Errorf("%s: failed restore left %v in %s", what, entries, destDir)
				}
				return dest, err
			}
			checkRefused := func(what string, err error, node string) {
				t.Helper()
				if !errors.Is(err, replay.ErrRefused) {
					t.Fatalf("%s: %v; want replay.ErrRefused", what, err)
				}
				for _, want := range []string{node, "data_version 2 ", tc.quoted, "lightningd never sends this"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s: error %q does not say %q", what, err, want)
					}
				}
				if _, err := os.Stat(plant); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s: the attack's file %s exists (%v)", what, plant, err)
				}
				if entries, _ := os.ReadDir(plantDir); len(entries) != 0 {
					t.Fatalf("%s: %s holds %v", what, plantDir, entries)
				}
			}

			_, err = restore("restore from the journal", nil)
			checkRefused("restore from the journal", err, `restore node "carol"`)

			_, err = n.Compact(ctx, nil)
			checkRefused("compaction", err, `compact node "carol"`)
			if entries, _ := os.ReadDir(n.TempDir); len(entries) != 0 {
				t.Errorf("compaction left %v in its temporary directory", entries)
			}

			_, err = restore("restore from a sealed change", nil)
			checkRefused("restore from a sealed change", err, `restore node "carol"`)

			// The history before the record is still there.
			v1 := uint32(1)
			dest, err := restore("restore of data_version 1", &v1)
			if err != nil {
				t.Fatalf("restore of data_version 1: %v", err)
			}
			if v, ok, err := replay.DataVersionOf(dest); err != nil || !ok || v != 1 {
				t.Fatalf("restored data_version %d %v %v, want 1", v, ok, err)
			}

			dave.check(5 * time.Second)
		})
	}
}
