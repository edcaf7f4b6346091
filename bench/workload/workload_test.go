package workload_test

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/replay"
)

// collect gathers the hooks a generator method streams.
func collect(t *testing.T, gen func(fn func(workload.Hook) error) error) []workload.Hook {
	t.Helper()
	var hs []workload.Hook
	if err := gen(func(h workload.Hook) error { hs = append(hs, h); return nil }); err != nil {
		t.Fatal(err)
	}
	return hs
}

// digest hashes hooks' versions and SQL.
func digest(hs []workload.Hook) string {
	h := sha256.New()
	for _, k := range hs {
		fmt.Fprintf(h, "%d\n", k.Version)
		for _, s := range k.Statements {
			io.WriteString(h, s)
			h.Write([]byte{0})
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// session runs a fixed scenario: populate, two steps, a block.
func session(t *testing.T, cfg workload.Config) []workload.Hook {
	g := workload.New(cfg)
	hs := collect(t, g.Populate)
	hs = append(hs, collect(t, g.Step)...)
	hs = append(hs, collect(t, g.Step)...)
	return append(hs, collect(t, g.Block)...)
}

// TestDeterministic checks that equal configs give byte-identical hooks and
// that the seed and HotRows change them.
func TestDeterministic(t *testing.T) {
	t.Parallel()
	base := workload.Config{Seed: 7, TargetBytes: 1 << 20, UpdateFrac: 0.02, DeleteFrac: 0.01, InsertFrac: 0.02}
	want := digest(session(t, base))
	for _, tc := range []struct {
		name string
		cfg  workload.Config
		same bool
	}{
		{"same config", base, true},
		{"other seed", workload.Config{Seed: 8, TargetBytes: base.TargetBytes, UpdateFrac: 0.02, DeleteFrac: 0.01, InsertFrac: 0.02}, false},
		{"hot rows", workload.Config{Seed: 7, TargetBytes: base.TargetBytes, UpdateFrac: 0.02, DeleteFrac: 0.01, InsertFrac: 0.02, HotRows: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := digest(session(t, tc.cfg)); (got == want) != tc.same {
				t.Fatalf("digest %s, base %s: same=%v, want %v", got, want, got == want, tc.same)
			}
		})
	}
}

// TestHookShape checks every hook is what lightningd would send: versions
// 1, 2, 3..., the data_version row created in the first, and the guarded
// bump last in each.
func TestHookShape(t *testing.T) {
	t.Parallel()
	hs := session(t, workload.Config{Seed: 1, TargetBytes: 1 << 20, UpdateFrac: 0.05, DeleteFrac: 0.02, InsertFrac: 0.05})
	if !strings.Contains(strings.Join(hs[0].Statements, "\n"), "INSERT INTO vars (name, intval) VALUES ('data_version', 0);") {
		t.Fatal("first hook does not create the data_version row")
	}
	for i, h := range hs {
		if h.Version != uint32(i+1) {
			t.Fatalf("hook %d has version %d", i, h.Version)
		}
		want := fmt.Sprintf("UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = %d", i)
		if last := h.Statements[len(h.Statements)-1]; last != want {
			t.Fatalf("hook %d ends with %q, want %q", i, last, want)
		}
	}
	for _, s := range workload.Schema() {
		if !strings.HasPrefix(s, "CREATE TABLE") && !strings.HasPrefix(s, "CREATE INDEX") && !strings.HasPrefix(s, "CREATE UNIQUE INDEX") {
			t.Fatalf("schema statement %q", s)
		}
	}
}

func queryInt(t *testing.T, path, q string) int64 {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow(q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// TestBuildSize builds small databases and checks their size against the
// target, their data_version against the generator, and their integrity.
func TestBuildSize(t *testing.T) {
	t.Parallel()
	for _, target := range []int64{1 << 20, 6 << 20} {
		t.Run(fmt.Sprint(target>>20, "MiB"), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "db.sqlite3")
			g := workload.New(workload.Config{Seed: 3, TargetBytes: target})
			if err := workload.Build(path, g.Populate); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if r := float64(fi.Size()) / float64(target); r < 0.85 || r > 1.15 {
				t.Errorf("file is %d bytes for a target of %d (%.2fx)", fi.Size(), target, r)
			}
			v, ok, err := replay.DataVersionOf(path)
			if err != nil || !ok || v != g.Version() {
				t.Fatalf("data_version %d ok=%v err=%v, want %d", v, ok, err, g.Version())
			}
			if err := replay.IntegrityCheck(path); err != nil {
				t.Fatal(err)
			}
			if n := queryInt(t, path, "SELECT count(*) FROM channel_htlcs"); n == 0 {
				t.Fatal("no HTLCs")
			}
		})
	}
}

// TestReplayMatchesBuild applies the same hooks through replay (as
// restore does) and through Build: the databases must hold the same rows.
func TestReplayMatchesBuild(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  workload.Config
	}{
		{"uniform", workload.Config{Seed: 11, TargetBytes: 2 << 20, UpdateFrac: 0.05, DeleteFrac: 0.03, InsertFrac: 0.04}},
		{"hot", workload.Config{Seed: 12, TargetBytes: 2 << 20, UpdateFrac: 0.05, DeleteFrac: 0.03, InsertFrac: 0.04, HotRows: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			g := workload.New(tc.cfg)
			hs := collect(t, g.Populate)
			before := len(hs)
			for range 3 {
				hs = append(hs, collect(t, g.Step)...)
			}
			if len(hs) == before {
				t.Fatal("steps produced no hooks")
			}
			built := filepath.Join(dir, "built.sqlite3")
			if err := workload.Build(built, workload.Hooks(hs...)); err != nil {
				t.Fatal(err)
			}
			replayed := filepath.Join(dir, "replayed.sqlite3")
			db, err := replay.Open(replayed)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hs {
				if err := db.Apply(h.Record()); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			diff, err := replay.Diff(built, replayed)
			if err != nil {
				t.Fatal(err)
			}
			if len(diff) > 0 {
				t.Fatalf("replay and Build differ:\n%s", strings.Join(diff, "\n"))
			}
			if v := queryInt(t, built, "SELECT intval FROM vars WHERE name = 'data_version'"); v != int64(g.Version()) {
				t.Fatalf("data_version %d, want %d", v, g.Version())
			}
		})
	}
}

func readPages(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pages [][]byte
	for off := 0; off < len(b); off += 4096 {
		pages = append(pages, b[off:off+4096])
	}
	return pages
}

// TestTouchPages checks that touching changes exactly the chosen leaf pages
// plus page 1 and the vars page, spread over the file.
func TestTouchPages(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "db.sqlite3")
	g := workload.New(workload.Config{Seed: 5, TargetBytes: 8 << 20})
	if err := workload.Build(path, g.Populate); err != nil {
		t.Fatal(err)
	}
	// The subtests run in order: each touches the same database further.
	for _, frac := range []float64{0.01, 0.05} {
		t.Run(fmt.Sprint(frac), func(t *testing.T) {
			old := readPages(t, path)
			hs := collect(t, func(fn func(workload.Hook) error) error { return g.TouchPages(path, frac, fn) })
			touched := 0
			for _, h := range hs {
				touched += len(h.Statements) - 1
			}
			if want := int(frac*float64(len(old)) + 0.5); touched != want {
				t.Fatalf("%d rows touched, want %d", touched, want)
			}
			if err := workload.Build(path, workload.Hooks(hs...)); err != nil {
				t.Fatal(err)
			}
			cur := readPages(t, path)
			if len(cur) != len(old) {
				t.Fatalf("page count %d -> %d", len(old), len(cur))
			}
			var changed []int
			for i := range cur {
				if !bytes.Equal(cur[i], old[i]) {
					changed = append(changed, i)
				}
			}
			if len(changed) != touched+2 {
				t.Fatalf("%d pages changed for %d touched rows (want rows + page 1 + vars page)", len(changed), touched)
			}
			if changed[0] != 0 {
				t.Fatal("page 1 did not change")
			}
			if span := changed[len(changed)-1] - changed[2]; span < len(cur)/2 {
				t.Fatalf("changed pages span only %d of %d pages", span, len(cur))
			}
		})
	}
}

// TestStepFractions checks that a step inserts, updates and deletes the
// configured fractions of the rows.
func TestStepFractions(t *testing.T) {
	t.Parallel()
	cfg := workload.Config{Seed: 21, TargetBytes: 4 << 20, UpdateFrac: 0.05, DeleteFrac: 0.03, InsertFrac: 0.04}
	g := workload.New(cfg)
	rows := 0
	for _, h := range collect(t, g.Populate)[2:] { // after the schema and channel hooks
		for _, s := range h.Statements {
			if strings.HasPrefix(s, "INSERT INTO ") {
				rows++
			}
		}
	}
	count := map[string]int{}
	for _, h := range collect(t, g.Step) {
		for _, s := range h.Statements {
			switch {
			case strings.HasPrefix(s, "UPDATE channels "), strings.HasPrefix(s, "UPDATE vars "):
			default:
				count[strings.Fields(s)[0]]++
			}
		}
	}
	deleted := cfg.DeleteFrac * float64(rows)
	for _, tc := range []struct {
		kind string
		want float64
	}{
		{"INSERT", cfg.InsertFrac * float64(rows)},
		{"DELETE", deleted},
		{"UPDATE", cfg.UpdateFrac * (float64(rows) - deleted)},
	} {
		if got := float64(count[tc.kind]); got < tc.want*0.95-6 || got > tc.want*1.05+6 {
			t.Errorf("%s: %v statements, want about %.0f (of %d rows)", tc.kind, got, tc.want, rows)
		}
	}
}

// TestRebuild checks that the VACUUM-like step keeps every row, moves the
// tables, and that replaying it gives what Build gives. (It does not change
// most pages' content: leaf pages that were already full come out identical
// at new places, which page dedup keeps, as it keeps them after a VACUUM.)
func TestRebuild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g := workload.New(workload.Config{Seed: 5, TargetBytes: 1 << 20, UpdateFrac: 0.02, DeleteFrac: 0.01, InsertFrac: 0.02})
	hs := collect(t, g.Populate)
	hs = append(hs, collect(t, g.Step)...)
	before := filepath.Join(dir, "before.sqlite3")
	if err := workload.Build(before, workload.Hooks(hs...)); err != nil {
		t.Fatal(err)
	}
	rb := collect(t, g.Rebuild)
	if len(rb) != 6 {
		t.Fatalf("%d rebuild hooks, want 6", len(rb))
	}
	after := filepath.Join(dir, "after.sqlite3")
	if err := workload.Build(after, workload.Hooks(append(hs, rb...)...)); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"channel_htlcs", "forwards", "invoices", "payments", "outputs", "datastore"} {
		q := "SELECT count(*) FROM " + table
		if a, b := queryInt(t, before, q), queryInt(t, after, q); a != b || a == 0 {
			t.Errorf("%s: %d rows before, %d after", table, a, b)
		}
	}
	if n := queryInt(t, after, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"); n != 8 {
		t.Errorf("%d explicit indexes after the rebuild, want 8", n)
	}
	q := "SELECT rootpage FROM sqlite_master WHERE name = 'channel_htlcs'"
	if a, b := queryInt(t, before, q), queryInt(t, after, q); a == b {
		t.Errorf("channel_htlcs still has root page %d: not rebuilt", a)
	}
	replayed := filepath.Join(dir, "replayed.sqlite3")
	db, err := replay.Open(replayed)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range append(hs, rb...) {
		if err := db.Apply(h.Record()); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if diff, err := replay.Diff(after, replayed); err != nil || len(diff) > 0 {
		t.Fatalf("replay and Build differ: %v %s", err, strings.Join(diff, "\n"))
	}
}
