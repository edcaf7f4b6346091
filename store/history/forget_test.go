package history_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
)

// forgetTimes are the creation times of manifests 1..10 of a node: a few
// per hour, day and ISO week (2026-01-01 is a Thursday of week 1; the 5th
// and the 12th are Mondays, weeks 2 and 3).
var forgetTimes = []string{
	"2026-01-01 10:00", // 1  W01
	"2026-01-01 22:00", // 2
	"2026-01-02 09:00", // 3
	"2026-01-05 08:00", // 4  W02
	"2026-01-05 08:30", // 5
	"2026-01-05 09:10", // 6
	"2026-01-06 12:00", // 7
	"2026-01-12 07:00", // 8  W03
	"2026-01-12 07:20", // 9
	"2026-01-12 07:40", // 10 newest
}

// putManifests creates node with empty-database manifests created at times.
func putManifests(t *testing.T, st *store.Store, node string, times []string) {
	t.Helper()
	if err := st.CreateNode(ctx, store.NodeInfo{Name: node}); err != nil {
		t.Fatal(err)
	}
	for i, s := range times {
		created, err := time.Parse("2006-01-02 15:04", s)
		if err != nil {
			t.Fatal(err)
		}
		m := &manifest.Manifest{Format: manifest.FormatVersion, Node: node, Seq: uint64(i + 1), Created: created}
		if err := putManifest(ctx, st, m); err != nil {
			t.Fatal(err)
		}
	}
}

func seqsOf(t *testing.T, st *store.Store, node string) []uint64 {
	t.Helper()
	s, err := st.ManifestSeqs(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func kept(r history.ForgetReport, node string) []uint64 {
	var out []uint64
	for _, d := range r.Decisions {
		if d.Node == node && d.Keep {
			out = append(out, d.Manifest)
		}
	}
	return out
}

func TestForgetPolicies(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	for _, tc := range []struct {
		name   string
		policy history.ForgetPolicy
		keep   []uint64
		reason string // a reason some kept manifest must give
	}{
		{"none", history.ForgetPolicy{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "no keep rule given"},
		{"last 3", history.ForgetPolicy{Last: 3}, []uint64{8, 9, 10}, "last 3"},
		{"last 1", history.ForgetPolicy{Last: 1}, []uint64{10}, "newest manifest"},
		{"hourly 2", history.ForgetPolicy{Hourly: 2}, []uint64{7, 10}, "hourly (2026-01-06 12:00)"},
		{"daily 3", history.ForgetPolicy{Daily: 3}, []uint64{6, 7, 10}, "daily (2026-01-05)"},
		{"weekly 2", history.ForgetPolicy{Weekly: 2}, []uint64{7, 10}, "weekly (2026-W02)"},
		{"weekly 5, only 3 weeks", history.ForgetPolicy{Weekly: 5}, []uint64{3, 7, 10}, "weekly (2026-W01)"},
		{"within 25h", history.ForgetPolicy{Within: 25 * time.Hour}, []uint64{8, 9, 10}, "within 25h of the newest"},
		{"within 7d", history.ForgetPolicy{Within: 7 * day}, []uint64{4, 5, 6, 7, 8, 9, 10}, "within 1w"},
		{"within exactly to 4", history.ForgetPolicy{Within: 6*day + 23*time.Hour + 40*time.Minute}, []uint64{4, 5, 6, 7, 8, 9, 10}, "within"},
		{"combined", history.ForgetPolicy{Last: 1, Daily: 2, Weekly: 3}, []uint64{3, 7, 10}, "weekly (2026-W01)"},
		{"hourly + within", history.ForgetPolicy{Hourly: 3, Within: time.Hour}, []uint64{6, 7, 8, 9, 10}, "hourly (2026-01-05 09:00)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := newStore(t)
			putManifests(t, st, "a", forgetTimes)
			putManifests(t, st, "b", forgetTimes[:2])
			// Dry run: decisions, nothing deleted.
			dry, err := history.Forget(ctx, st, history.ForgetOptions{Policy: tc.policy, DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := kept(dry, "a"); !slices.Equal(got, tc.keep) {
				t.Fatalf("keeps %v, want %v; decisions %+v", got, tc.keep, dry.Decisions)
			}
			if n := len(seqsOf(t, st, "a")) + len(seqsOf(t, st, "b")); n != 12 || dry.Deleted != 0 {
				t.Fatalf("dry run deleted: %d manifests left, Deleted %d", n, dry.Deleted)
			}
			found := false
			for _, d := range dry.Decisions {
				if len(d.Reasons) == 0 {
					t.Fatalf("decision without a reason: %+v", d)
				}
				if d.Keep && strings.Contains(strings.Join(d.Reasons, ", "), tc.reason) {
					found = true
				}
				if !d.Keep && d.Reasons[0] != "matches no keep rule" {
					t.Fatalf("drop reason %v", d.Reasons)
				}
			}
			if !found {
				t.Fatalf("no kept manifest gives reason %q: %+v", tc.reason, dry.Decisions)
			}
			// The real run deletes exactly what the dry run dropped.
			rep, err := history.Forget(ctx, st, history.ForgetOptions{Policy: tc.policy})
			if err != nil {
				t.Fatal(err)
			}
			if got := seqsOf(t, st, "a"); !slices.Equal(got, tc.keep) {
				t.Fatalf("after forget node a has %v, want %v", got, tc.keep)
			}
			if rep.Deleted != rep.Dropped || rep.Dropped != dry.Dropped || rep.Kept+rep.Dropped != 12 {
				t.Fatalf("report %+v vs dry run %+v", rep, dry)
			}
			if got := seqsOf(t, st, "b"); !slices.Contains(got, 2) {
				t.Fatalf("node b lost its newest manifest: %v", got)
			}
		})
	}
}

// TestForgetNeverNewest: the newest manifest by sequence number is kept even
// when it cannot be read and when its clock went backwards; --node limits
// forget to one node.
func TestForgetNeverNewest(t *testing.T) {
	t.Parallel()
	st, url := newStore(t)
	times := slices.Clone(forgetTimes)
	times[9] = "2025-06-01 00:00" // newest by seq, oldest by clock
	putManifests(t, st, "a", times)
	putManifests(t, st, "b", forgetTimes)
	rep, err := history.Forget(ctx, st, history.ForgetOptions{Node: "a", Policy: history.ForgetPolicy{Last: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqsOf(t, st, "a"); !slices.Equal(got, []uint64{9, 10}) {
		t.Fatalf("node a keeps %v (%+v)", got, rep.Decisions)
	}
	if got := seqsOf(t, st, "b"); len(got) != 10 {
		t.Fatalf("--node a touched node b: %v", got)
	}
	// Damage b's newest manifest: it is kept (with a reason), and the rules
	// apply to the readable ones.
	path := filepath.Join(strings.TrimPrefix(url, "file://"), filepath.FromSlash(store.ManifestObject("b", 10)))
	raw, _ := os.ReadFile(path)
	if err := os.WriteFile(path, raw[:len(raw)-20], 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err = history.Forget(ctx, st, history.ForgetOptions{Node: "b", Policy: history.ForgetPolicy{Last: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqsOf(t, st, "b"); !slices.Equal(got, []uint64{9, 10}) {
		t.Fatalf("node b keeps %v (%+v)", got, rep.Decisions)
	}
	last := rep.Decisions[len(rep.Decisions)-1]
	if !last.Keep || !strings.Contains(strings.Join(last.Reasons, " "), "unreadable") {
		t.Fatalf("damaged newest: %+v", last)
	}
	if _, err := history.Forget(ctx, st, history.ForgetOptions{Node: "nobody", Policy: history.ForgetPolicy{Last: 1}}); err == nil {
		t.Fatal("forget of a missing node succeeded")
	}
	if _, err := history.Forget(ctx, st, history.ForgetOptions{Policy: history.ForgetPolicy{Last: -1}}); err == nil {
		t.Fatal("negative keep rule accepted")
	}
}

// TestForgetThenGC: restore points recorded from a real trace with
// compactions; forget drops all but the last two; gc, with a short grace
// period and an injected clock, reclaims the dropped snapshots' chunks on
// its second run after the first; every kept restore point still restores
// to the expected database, and the newest state to the node's own final
// database.
func TestForgetThenGC(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	_, url := newStore(t)
	st := openWithClock(t, url, clock)
	recs := traceRecords(t, "trace1.jsonl")
	committed := resolved(recs)
	if _, err := history.Init(ctx, st, "n1", "", nil); err != nil {
		t.Fatal(err)
	}
	n, err := history.OpenNode(ctx, st, "n1")
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if i > 0 && i%60 == 0 {
			if _, err := n.Compact(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		feed(t, n, r)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	all := seqsOf(t, st, "n1")
	if len(all) < 10 {
		t.Fatalf("only %d manifests", len(all))
	}
	before, _ := st.Usage(ctx)
	keep := all[len(all)-2:]
	// The chunks only the manifests about to be dropped name.
	dead := map[chunker.ID]bool{}
	for _, seq := range all[:len(all)-2] {
		for _, id := range chunksOf(t, st, seq) {
			dead[id] = true
		}
	}
	for _, seq := range keep {
		for _, id := range chunksOf(t, st, seq) {
			delete(dead, id)
		}
	}

	clock.Advance(time.Hour)
	rep, err := history.Forget(ctx, st, history.ForgetOptions{Policy: history.ForgetPolicy{Last: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqsOf(t, st, "n1"); !slices.Equal(got, keep) || rep.Deleted != len(all)-2 {
		t.Fatalf("kept %v, want %v (%+v)", got, keep, rep)
	}

	// Run 1 condemns (the packs are older than the grace period now), run 2
	// a grace period later deletes and repacks.
	clock.Advance(testGrace + time.Minute)
	r1 := gc(t, st)
	if r1.NewlyCondemned == 0 || r1.DeletedChunks != 0 {
		t.Fatalf("first gc: %+v", r1)
	}
	clock.Advance(testGrace + time.Minute)
	r2 := gc(t, st)
	if r2.DeletedChunks == 0 || r2.ReclaimedBytes == 0 {
		t.Fatalf("second gc reclaimed nothing: %+v", r2)
	}
	after, _ := st.Usage(ctx)
	t.Logf("packs: %d -> %d bytes (%d -> %d packs); %s", before.PackBytes, after.PackBytes, before.Packs, after.Packs, strings.Join(r2.Lines(), "; "))
	if after.PackBytes >= before.PackBytes {
		t.Fatalf("pack bytes %d -> %d", before.PackBytes, after.PackBytes)
	}
	// Every chunk only dropped manifests named is gone (none waits in a
	// mostly live pack here), as a fresh reader of the store sees it.
	fresh := openWithClock(t, url, clock)
	if _, err := packsOf(t, fresh).LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if r2.BlockedChunks != 0 || len(dead) == 0 || r2.DeletedChunks != len(dead) {
		t.Fatalf("%d chunks only dropped manifests named; gc deleted %d, kept %d in live packs", len(dead), r2.DeletedChunks, r2.BlockedChunks)
	}
	for id := range dead {
		if _, ok := indexOf(t, fresh).Locate(id); ok {
			t.Fatalf("chunk %s of a dropped snapshot survived gc", id)
		}
	}

	for _, seq := range keep {
		m, err := st.Manifest(ctx, "n1", seq)
		if err != nil {
			t.Fatal(err)
		}
		got, res := restore(t, st, history.RestoreOptions{Node: "n1", Manifest: seq})
		assertSame(t, fmt.Sprintf("kept manifest %d after gc", seq), got, expectedAt(t, committed, m.LastVersion()))
		if res.Version != m.LastVersion() {
			t.Fatalf("manifest %d restored at %d", seq, res.Version)
		}
	}
	got, _ := restore(t, st, history.RestoreOptions{Node: "n1"})
	assertSame(t, "newest state after forget and gc", got, filepath.Join("..", "..", "testdata", "trace1-final.sqlite3"))
	if _, err := history.Restore(ctx, st, history.RestoreOptions{Node: "n1", Manifest: all[0], Dest: filepath.Join(t.TempDir(), "x")}); err == nil {
		t.Fatal("a forgotten manifest restored")
	}
	if v, err := history.Verify(ctx, st, history.VerifyOptions{ReadData: true}); err != nil || !v.OK() {
		t.Fatalf("verify after forget and gc: %v %+v", err, v.Problems)
	}
}

// chunksOf lists every chunk manifest seq of node n1 names: lists, patches,
// the pages they name, and change chunks.
func chunksOf(t *testing.T, st *store.Store, seq uint64) []chunker.ID {
	t.Helper()
	m, err := st.Manifest(ctx, "n1", seq)
	if err != nil {
		t.Fatal(err)
	}
	var ids []chunker.ID
	for _, id := range m.Snapshot.Lists {
		data, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		pages, err := manifest.DecodeList(data)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(append(ids, id), pages...)
	}
	for _, id := range m.Snapshot.Patches {
		data, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		p, err := manifest.DecodePatch(data)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		for _, e := range p.Entries {
			ids = append(ids, e.ID)
		}
	}
	for _, c := range m.Changes {
		ids = append(ids, c.ID)
	}
	return ids
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	day := 24 * time.Hour
	for in, want := range map[string]time.Duration{
		"36h": 36 * time.Hour, "7d": 7 * day, "2w": 14 * day, "1w3d12h": 10*day + 12*time.Hour,
		"90m": 90 * time.Minute, "1h30m": 90 * time.Minute, "1.5d": 36 * time.Hour, "300ms": 300 * time.Millisecond, "0s": 0,
	} {
		got, err := history.ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "7", "d", "-1d", "1y", "3 days", "1.2.3h", "99999999999999w", "1d-2h"} {
		if d, err := history.ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		}
	}
	for _, d := range []time.Duration{14 * day, 7 * day, 2 * day, 36 * time.Hour, 90 * time.Minute, 1500 * time.Millisecond} {
		if back, err := history.ParseDuration(history.FormatDuration(d)); err != nil || back != d {
			t.Errorf("FormatDuration(%v) = %q does not parse back: %v %v", d, history.FormatDuration(d), back, err)
		}
	}
}

// FuzzParseDuration: the parser never panics, never returns a negative
// duration, agrees with time.ParseDuration on what that accepts, and
// FormatDuration's output parses back to the same value.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"36h", "7d", "2w", "1w3d12h", "1.5d", "300ms", "-1h", "", "9223372036854775807ns", "1e3d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := history.ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("%q parsed to negative %v", s, d)
		}
		if !strings.ContainsAny(s, "dw") {
			if want, err := time.ParseDuration(s); err == nil && want != d {
				t.Fatalf("%q: %v, time.ParseDuration says %v", s, d, want)
			}
		}
		if back, err := history.ParseDuration(history.FormatDuration(d)); err != nil || back != d {
			t.Fatalf("%v formats as %q, which parses to %v, %v", d, history.FormatDuration(d), back, err)
		}
	})
}
