package history_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
	"github.com/clnbackup/backup/store/packs"
)

// tamperFixture is an encrypted store with two nodes: n1 from trace1 (a
// compaction, then a journal tail) and n2 from its first records.
func tamperFixture(t *testing.T) (url, dir string, recs []journal.Record) {
	t.Helper()
	st, url := newEncStore(t)
	recs = traceRecords(t, "trace1.jsonl")
	for _, node := range []string{"n1", "n2"} {
		if _, err := history.Init(ctx, st, node, "", nil); err != nil {
			t.Fatal(err)
		}
		n, err := history.OpenNode(ctx, st, node)
		if err != nil {
			t.Fatal(err)
		}
		upto := 120
		if node == "n2" {
			upto = 40
		}
		for i, r := range recs[:upto] {
			if i == 60 {
				if _, err := n.Compact(ctx, nil); err != nil {
					t.Fatal(err)
				}
			}
			feed(t, n, r)
		}
		n.Close()
	}
	return url, strings.TrimPrefix(url, "file://"), recs
}

// flip flips one bit in the middle of a store file.
func flip(t *testing.T, path string, at func(size int) int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[at(len(data))] ^= 0x10
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func firstFile(t *testing.T, glob string) string {
	t.Helper()
	m, _ := filepath.Glob(glob)
	if len(m) == 0 {
		t.Fatalf("no file %s", glob)
	}
	return m[0]
}

func lastFile(t *testing.T, glob string) string {
	t.Helper()
	m, _ := filepath.Glob(glob)
	if len(m) == 0 {
		t.Fatalf("no file %s", glob)
	}
	return m[len(m)-1]
}

// rawAppend appends records to a node's journal as the store's host
// could: through a keyless view, which moves sealed records as they are.
func rawAppend(t *testing.T, url, node string, rs ...journal.Record) {
	t.Helper()
	kst, err := store.Open(ctx, url, store.Options{Keyless: true})
	if err != nil {
		t.Fatal(err)
	}
	defer kst.Close()
	j, err := kst.OpenJournal(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, r := range rs {
		if _, err := j.Append(r); err != nil {
			t.Fatal(err)
		}
	}
}

// rawRecords reads a node's journal records as stored (sealed).
func rawRecords(t *testing.T, url, node string) []journal.Record {
	t.Helper()
	kst, err := store.Open(ctx, url, store.Options{Keyless: true})
	if err != nil {
		t.Fatal(err)
	}
	defer kst.Close()
	var out []journal.Record
	if err := kst.ReadJournal(ctx, node, 0, func(r journal.Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTamperEncrypted: every way the host of an encrypted store can alter
// it without the key is detected and named: a flipped bit in each object
// kind, node A's manifest put in node B's place, a record copied from
// another node, replayed twice, or forged in the clear. Restore fails
// clearly, never replaying a forged statement; a journal cut inside its
// last record restores the last authentic state.
func TestTamperEncrypted(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, url, dir string)
		node   string
		want   []string // in the restore's error; nil: restore succeeds
	}{
		{"manifest bit", func(t *testing.T, url, dir string) {
			flip(t, lastFile(t, dir+"/nodes/n1/manifests/*"), func(n int) int { return n / 2 })
		}, "n1", []string{"nodes/n1/manifests/0000", "does not open"}},
		{"node record bit", func(t *testing.T, url, dir string) {
			flip(t, dir+"/nodes/n1/node.json", func(n int) int { return n - 3 })
		}, "", []string{"nodes/n1/node.json", "does not open"}},
		{"pack body bit", func(t *testing.T, url, dir string) {
			packs, _ := filepath.Glob(dir + "/packs/*/*")
			for _, p := range packs {
				// A bit every 1000 bytes of the first half: bodies.
				for at := 50; ; at += 1000 {
					data, _ := os.ReadFile(p)
					if at > len(data)/2 {
						break
					}
					flip(t, p, func(int) int { return at })
				}
			}
		}, "n1", []string{"read chunk", "decrypt-and-verify failed"}},
		{"manifest of n1 as n2's", func(t *testing.T, url, dir string) {
			a := lastFile(t, dir+"/nodes/n1/manifests/*")
			data, _ := os.ReadFile(a)
			b := filepath.Join(dir, "nodes/n2/manifests", filepath.Base(a))
			if err := os.WriteFile(b, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "n2", []string{"nodes/n2/manifests/0000", "swapped"}},
		{"record copied from n1", func(t *testing.T, url, dir string) {
			rs := rawRecords(t, url, "n1")
			rawAppend(t, url, "n2", rs[len(rs)-1])
		}, "n2", []string{"of node \"n2\"", "does not open", "restore stops before it"}},
		{"record replayed twice", func(t *testing.T, url, dir string) {
			rs := rawRecords(t, url, "n1")
			rawAppend(t, url, "n1", rs[len(rs)-1])
		}, "n1", []string{"of node \"n1\"", "does not open"}},
		{"forged record in the clear", func(t *testing.T, url, dir string) {
			rs := rawRecords(t, url, "n1")
			last := rs[len(rs)-1]
			rawAppend(t, url, "n1", journal.Record{Version: last.Version + 1, Statements: []string{"DELETE FROM vars;"}})
		}, "n1", []string{"record 121", "does not open", "restore stops before it"}},
		{"journal cut inside its last record", func(t *testing.T, url, dir string) {
			seg := firstFile(t, dir+"/nodes/n1/journal/*")
			data, _ := os.ReadFile(seg)
			end := len(data)
			for end > 0 && data[end-1] == 0 {
				end--
			}
			clear(data[end-20 : end])
			if err := os.WriteFile(seg, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "n1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, dir, recs := tamperFixture(t)
			tc.tamper(t, url, dir)
			st, err := store.Open(ctx, url, unlocked())
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if tc.node == "" {
				// Not read by restore: read directly.
				if _, err := st.Node(ctx, "n1"); err == nil || !errors.Is(err, chunk.ErrCorrupt) || !strings.Contains(err.Error(), tc.want[0]) {
					t.Fatalf("read of a tampered node record: %v", err)
				}
				return
			}
			dest := filepath.Join(t.TempDir(), "restored.sqlite3")
			res, err := history.Restore(ctx, st, history.RestoreOptions{Node: tc.node, Dest: dest})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("restore: %v", err)
				}
				// The torn last record was never acknowledged: the
				// state before it is restored.
				committed := resolved(recs[:120])
				want := committed[len(committed)-2].Version
				if res.Version != want {
					t.Fatalf("restored data_version %d, want %d (the record before the cut one)", res.Version, want)
				}
				assertSame(t, "restore of a cut journal", dest, expectedAt(t, committed, want))
				return
			}
			if err == nil {
				t.Fatalf("restore of a tampered store succeeded (data_version %d)", res.Version)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("restore error %q lacks %q", err, w)
				}
			}
			if !errors.Is(err, chunk.ErrCorrupt) && !errors.Is(err, journal.ErrCorrupt) {
				t.Fatalf("restore error is not reported as corruption: %v", err)
			}
			if _, serr := os.Stat(dest); serr == nil {
				t.Fatal(fmt.Sprintf("a failed restore left %s", dest))
			}
		})
	}
}

// TestMaintainEncrypted: forget, gc (exclusive: at once) and verify with
// read-back work on an encrypted store and leave it restoring equal; then
// verify reports a tampered manifest and a tampered pack with the restore
// points they break.
func TestMaintainEncrypted(t *testing.T) {
	t.Parallel()
	url, dir, recs := tamperFixture(t)
	st, err := store.Open(ctx, url, unlocked())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := history.Forget(ctx, st, history.ForgetOptions{Policy: history.ForgetPolicy{Last: 1}}); err != nil {
		t.Fatal(err)
	}
	rep, err := history.GCExclusive(ctx, st, packs.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %+v", rep)
	vr, err := history.Verify(ctx, st, history.VerifyOptions{ReadData: true})
	if err != nil || !vr.OK() {
		t.Fatalf("verify after forget and gc: %v %+v", err, vr.Problems)
	}
	got, res := restore(t, st, history.RestoreOptions{Node: "n1"})
	committed := resolved(recs[:120])
	assertSame(t, "restore after gc", got, expectedAt(t, committed, res.Version))

	flip(t, lastFile(t, dir+"/nodes/n2/manifests/*"), func(n int) int { return n / 2 })
	vr, err = history.Verify(ctx, st, history.VerifyOptions{ReadData: true})
	if err != nil || vr.OK() {
		t.Fatalf("verify of a tampered manifest: %v, ok %v", err, vr.OK())
	}
	text := fmt.Sprint(vr.Problems)
	if !strings.Contains(text, "nodes/n2/manifests") && !strings.Contains(text, "n2") {
		t.Fatalf("verify does not name the manifest: %s", text)
	}
	packsFiles, _ := filepath.Glob(dir + "/packs/*/*")
	for _, p := range packsFiles {
		flip(t, p, func(int) int { return 60 })
	}
	vr, err = history.Verify(ctx, st, history.VerifyOptions{ReadData: true})
	if err != nil || vr.OK() || !strings.Contains(fmt.Sprint(vr.Problems), "does not open") {
		t.Fatalf("verify of tampered packs: %v %+v", err, vr.Problems)
	}
	t.Logf("verify: %.400s", fmt.Sprint(vr.Problems))
}
