package history_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/legacy"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

var realLegacy = filepath.Join("..", "..", "testdata", "legacy-v1.dbak")

// rawEntry is one entry of a v1 file as the Python plugin writes it.
type rawEntry struct {
	version uint32
	kind    legacy.EntryKind
	payload []byte
}

// readRaw reads every entry of a v1 file, payloads included.
func readRaw(t testing.TB, path string) []rawEntry {
	t.Helper()
	f, err := legacy.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []rawEntry
	err = f.Entries(func(e legacy.Entry) error {
		r := rawEntry{version: e.Version, kind: e.Kind}
		if e.Kind == legacy.Snapshot {
			b, err := io.ReadAll(e.Snapshot)
			if err != nil {
				return err
			}
			r.payload = b
		} else {
			r.payload = []byte(strings.Join(e.Statements, "\x00"))
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// writeDbak writes entries as a v1 file whose header names version.
func writeDbak(t testing.TB, path string, es []rawEntry, version uint32) {
	t.Helper()
	body := []byte{}
	for _, e := range es {
		body = binary.BigEndian.AppendUint32(body, uint32(len(e.payload)))
		body = binary.BigEndian.AppendUint32(body, e.version)
		body = append(body, byte(e.kind))
		body = append(body, e.payload...)
	}
	hdr := make([]byte, legacy.HeaderSize)
	binary.BigEndian.PutUint32(hdr[0:], legacy.FileVersion)
	binary.BigEndian.PutUint32(hdr[4:], version)
	binary.BigEndian.PutUint64(hdr[8:], uint64(legacy.HeaderSize+len(body)))
	binary.BigEndian.PutUint64(hdr[28:], uint64(len(es)))
	if err := os.WriteFile(path, append(hdr, body...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// legacyAt restores the legacy backup at version v with the legacy
// package: its entries up to the last one with version v, under a header
// that names v (what the plugin's file held when v was its newest).
func legacyAt(t testing.TB, es []rawEntry, v uint32) string {
	t.Helper()
	end := -1
	for i, e := range es {
		if e.version > v {
			break
		}
		if e.version == v {
			end = i
		}
	}
	if end < 0 {
		t.Fatalf("no entry with version %d", v)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "at.dbak")
	writeDbak(t, p, es[:end+1], v)
	dest := filepath.Join(dir, "at.sqlite3")
	if _, err := legacy.Restore(p, dest, nil); err != nil {
		t.Fatalf("legacy restore at version %d: %v", v, err)
	}
	return dest
}

// compacted is the real file as the plugin's compaction leaves it: a
// snapshot at 399 and the change to 400.
func compacted(t testing.TB, es []rawEntry) []rawEntry {
	db, err := os.ReadFile(legacyAt(t, es, 399))
	if err != nil {
		t.Fatal(err)
	}
	return []rawEntry{{399, legacy.Snapshot, db}, es[len(es)-1]}
}

// midSnapshot is the real file up to version 300 with a snapshot at 200 in
// the middle and, before the change to 250, a change with version 250 that
// lightningd never committed (rewound).
func midSnapshot(t testing.TB, es []rawEntry) []rawEntry {
	db, err := os.ReadFile(legacyAt(t, es, 200))
	if err != nil {
		t.Fatal(err)
	}
	var out []rawEntry
	snapped := false
	for _, e := range es {
		if e.version > 300 {
			break
		}
		if e.version > 200 && !snapped {
			out = append(out, rawEntry{200, legacy.Snapshot, db})
			snapped = true
		}
		if e.version == 250 && e.kind == legacy.Change && !strings.HasPrefix(string(e.payload), "PRAGMA") {
			out = append(out, rawEntry{250, legacy.Change, []byte("DELETE FROM vars")})
		}
		out = append(out, e)
	}
	return out
}

// TestImportLegacy imports legacy backups and restores every version they
// hold (a sample for the long real file), comparing each, table by table,
// with the legacy restore of that version; then the plugin's next record
// continues the journal after the imported ones.
func TestImportLegacy(t *testing.T) {
	t.Parallel()
	real := readRaw(t, realLegacy)
	for _, tc := range []struct {
		name     string
		entries  func(t testing.TB) []rawEntry
		version  uint32
		versions []uint32
		// snapshots, journal: what the import must report.
		snapshots, journal int
	}{
		{"real v1 file", func(testing.TB) []rawEntry { return real }, 400,
			[]uint32{1, 2, 3, 57, 100, 201, 302, 398, 399, 400}, 0, 1},
		{"compacted file", func(t testing.TB) []rawEntry { return compacted(t, real) }, 400,
			[]uint32{399, 400}, 1, 1},
		{"snapshot in the middle and a rewind", func(t testing.TB) []rawEntry { return midSnapshot(t, real) }, 300,
			[]uint32{1, 150, 199, 200, 201, 249, 250, 251, 299, 300}, 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			es := tc.entries(t)
			path := filepath.Join(t.TempDir(), "backup.dbak")
			writeDbak(t, path, es, tc.version)
			st, _ := newStore(t)
			res, err := history.ImportLegacy(ctx, st, "n1", path, history.ImportOptions{TempDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			if res.Version != tc.version || res.Snapshots != tc.snapshots || res.JournalRecords != tc.journal {
				t.Fatalf("import: %+v", res)
			}
			if vr, err := history.Verify(ctx, st, history.VerifyOptions{ReadData: true}); err != nil || len(vr.Problems) > 0 {
				t.Fatalf("verify after the import: %v; problems: %+v", err, vr.Problems)
			}
			for _, v := range tc.versions {
				v := v
				got, rr := restore(t, st, history.RestoreOptions{Version: &v})
				if rr.Version != v {
					t.Fatalf("restore --version %d restored %d", v, rr.Version)
				}
				assertSame(t, fmt.Sprintf("version %d", v), got, legacyAt(t, es, v))
			}

			// The plugin continues: its next record gets the next seq,
			// and seals and compacts on top of the imported history.
			n, err := history.OpenNode(ctx, st, "n1")
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			next := tc.version + 1
			rec, err := n.Journal().Append(journal.Record{Version: next, Statements: []string{
				"UPDATE vars SET intval = intval + 1 WHERE name = 'data_version'"}})
			if err != nil {
				t.Fatal(err)
			}
			if rec.Seq != res.NextSeq {
				t.Fatalf("next record got seq %d, the import said %d", rec.Seq, res.NextSeq)
			}
			got, _ := restore(t, st, history.RestoreOptions{})
			if v, _, err := replay.DataVersionOf(got); err != nil || v != next {
				t.Fatalf("newest state has data_version %d (%v), want %d", v, err, next)
			}
			if _, err := n.Compact(ctx, nil); err != nil {
				t.Fatal(err)
			}
			v := tc.version
			got, _ = restore(t, st, history.RestoreOptions{Version: &v})
			assertSame(t, "newest imported version after a compaction", got, legacyAt(t, es, v))
		})
	}
}

// TestImportLegacyRefuses: a node name in use is refused, and a damaged or
// hostile backup fails before any node exists.
func TestImportLegacyRefuses(t *testing.T) {
	t.Parallel()
	real := readRaw(t, realLegacy)
	for _, tc := range []struct {
		name string
		// prepare writes the backup (and may add to the store).
		prepare func(t *testing.T, st *store.Store, path, out string)
		want    string
		// node: whether n1 exists afterwards.
		node bool
	}{
		{"node name in use", func(t *testing.T, st *store.Store, path, out string) {
			if _, err := history.Init(ctx, st, "n1", "", nil); err != nil {
				t.Fatal(err)
			}
			writeDbak(t, path, real, 400)
		}, "node already exists", true},
		{"not a backup", func(t *testing.T, st *store.Store, path, out string) {
			os.WriteFile(path, []byte("hello, this is not a backup"), 0o600)
		}, "shorter than the 512-byte header", false},
		{"missing change", func(t *testing.T, st *store.Store, path, out string) {
			es := append(append([]rawEntry(nil), real[:100]...), real[101:]...)
			writeDbak(t, path, es, 400)
		}, "misses changes", false},
		{"attach a file", func(t *testing.T, st *store.Store, path, out string) {
			es := append([]rawEntry(nil), real[:3]...)
			es = append(es, rawEntry{es[2].version + 1, legacy.Change,
				[]byte("ATTACH DATABASE '" + out + "/planted.db' AS p\x00CREATE TABLE p.t(x)")})
			writeDbak(t, path, es, es[3].version)
		}, "ATTACH", false},
		{"snapshot that is no database", func(t *testing.T, st *store.Store, path, out string) {
			writeDbak(t, path, []rawEntry{{5, legacy.Snapshot, []byte("SQLite format 3\x00 and then junk, not pages at all")}}, 5)
		}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, _ := newStore(t)
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			if err := os.Mkdir(out, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "backup.dbak")
			tc.prepare(t, st, path, out)
			_, err := history.ImportLegacy(ctx, st, "n1", path, history.ImportOptions{TempDir: dir})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("import: %v, want an error with %q", err, tc.want)
			}
			_, nerr := st.Node(ctx, "n1")
			if exists := nerr == nil; exists != tc.node {
				t.Fatalf("node exists: %v (%v), want %v", exists, nerr, tc.node)
			}
			if !tc.node && !errors.Is(nerr, store.ErrNoNode) {
				t.Fatalf("node: %v", nerr)
			}
			if ents, _ := os.ReadDir(out); len(ents) > 0 {
				t.Fatalf("the backup wrote %d files outside the import", len(ents))
			}
		})
	}
}

// TestImportLegacyInterrupted: an import stopped after it added the node
// (here canceled halfway through writing restore points) removes the node
// and its manifests, so the same import can run again.
func TestImportLegacyInterrupted(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "backup.dbak")
	writeDbak(t, path, midSnapshot(t, readRaw(t, realLegacy)), 300)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	written := -1 // manifests the import had written when it was canceled
	stop := func(done, total int64) {
		if 4*done > 3*total && written < 0 { // halfway through the import, after the check
			seqs, _ := st.ManifestSeqs(ctx, "n1")
			written = len(seqs)
			cancel()
		}
	}
	_, err := history.ImportLegacy(cctx, st, "n1", path, history.ImportOptions{TempDir: dir, Progress: stop})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled import: %v", err)
	}
	if written < 1 {
		t.Fatalf("canceled with %d manifests written: the test must stop the import after it wrote some", written)
	}
	if _, err := st.Node(ctx, "n1"); !errors.Is(err, store.ErrNoNode) {
		t.Fatalf("node after a canceled import: %v", err)
	}
	if seqs, err := st.ManifestSeqs(ctx, "n1"); err != nil || len(seqs) > 0 {
		t.Fatalf("manifests after a canceled import: %v, %v", seqs, err)
	}
	if _, err := history.ImportLegacy(ctx, st, "n1", path, history.ImportOptions{TempDir: dir}); err != nil {
		t.Fatalf("import again: %v", err)
	}
}
