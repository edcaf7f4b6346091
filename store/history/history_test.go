package history_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
	"github.com/clnbackup/backup/store/packs"
)

var ctx = context.Background()

// newStore creates a store in a temporary directory.
func newStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	url := "file://" + filepath.Join(t.TempDir(), "store")
	st, created, err := store.Create(ctx, url, store.Options{})
	if err != nil || !created {
		t.Fatalf("create store: %v (created %v)", err, created)
	}
	t.Cleanup(func() { st.Close() })
	return st, url
}

// feed sends a hook through the journal as the plugin does: a non-PRAGMA
// change that repeats the last version replaces it (rewind), anything else
// is appended.
func feed(t testing.TB, n *history.Node, r journal.Record) {
	t.Helper()
	j := n.Journal()
	last, ok := j.Last()
	var err error
	if ok && r.Version == last.Version && !r.PragmaOnly() && !lastNonPragmaDiffers(j, r.Version) {
		_, err = j.Replace(r)
	} else {
		_, err = j.Append(r)
	}
	if err != nil {
		t.Fatalf("journal data_version %d: %v", r.Version, err)
	}
}

// lastNonPragmaDiffers is true when the records with the last version are
// all PRAGMA-only (a PRAGMA hook after a committed change), so a change with
// that version is not a rewind of them.
func lastNonPragmaDiffers(j store.Journal, v uint32) bool {
	// The trailing run of records of version v is never sealed, so never
	// trimmed: walk back over it from the newest record (Records(0) fails
	// with ErrTrimmed once a compaction trimmed older segments).
	last, ok := j.Last()
	if !ok {
		return true
	}
	for after := last.Seq; after > 0; after-- {
		var first journal.Record
		got := false
		if err := j.Records(after-1, func(r journal.Record) error {
			if !got {
				first, got = r, true
			}
			return nil
		}); err != nil || !got || first.Version != v {
			break
		}
		if !first.PragmaOnly() {
			return false
		}
	}
	return true
}

// resolved is the committed history of a trace: a non-PRAGMA hook that
// repeats the version of the previous non-PRAGMA hook replaces it and the
// PRAGMA hooks after it.
func resolved(recs []journal.Record) []journal.Record {
	var out []journal.Record
	for _, r := range recs {
		if !r.PragmaOnly() {
			i := len(out)
			for i > 0 && out[i-1].Version == r.Version {
				i--
			}
			if i < len(out) && hasNonPragma(out[i:]) {
				out = out[:i]
			}
		}
		out = append(out, r)
	}
	return out
}

func hasNonPragma(rs []journal.Record) bool {
	for _, r := range rs {
		if !r.PragmaOnly() {
			return true
		}
	}
	return false
}

// expectedAt applies the committed history up to data_version v to a fresh
// database and returns its path.
func expectedAt(t testing.TB, recs []journal.Record, v uint32) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "expected.sqlite3")
	db, err := replay.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Version > v {
			break
		}
		if err := db.Apply(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func assertSame(t testing.TB, what, got, want string) {
	t.Helper()
	diff, err := replay.Diff(got, want)
	if err != nil {
		t.Fatalf("%s: diff: %v", what, err)
	}
	if len(diff) > 0 {
		t.Fatalf("%s: restored database differs:\n%s", what, strings.Join(diff, "\n"))
	}
}

func traceRecords(t testing.TB, name string) []journal.Record {
	t.Helper()
	entries, err := replay.ReadTrace(filepath.Join("..", "..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return replay.Records(entries)
}

func restore(t testing.TB, st *store.Store, opts history.RestoreOptions) (string, history.RestoreResult) {
	t.Helper()
	if opts.Dest == "" {
		opts.Dest = filepath.Join(t.TempDir(), "restored.sqlite3")
	}
	if opts.Node == "" {
		opts.Node = "n1"
	}
	res, err := history.Restore(ctx, st, opts)
	if err != nil {
		t.Fatalf("restore %+v: %v", opts, err)
	}
	return opts.Dest, res
}

// TestRoundTripTraces applies real recorded traces through the journal,
// compacting at several points, then restores every manifest, several
// versions, and the newest state: in a plain store, and (trace1) in an
// encrypted store through file:// and through a keyless store server.
func TestRoundTripTraces(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		trace, final string
		compactAt    map[int]bool // compact before the hook with this index
		stores       []string
	}{
		{"trace1.jsonl", "trace1-final.sqlite3", map[int]bool{1: true, 5: true, 100: true, 250: true, 300: true, 386: true}, []string{"plain", "encrypted", "encrypted-server", "encrypted-s3"}},
		// crash3: compact right before the re-sent data_version 508, so
		// the uncommitted change must not have been sealed.
		{"crash3.jsonl", "crash3-final.sqlite3", map[int]bool{50: true, 300: true, 508: true, 509: true, 600: true}, []string{"plain", "encrypted"}},
	} {
		for _, kind := range tc.stores {
			t.Run(tc.trace+"/"+kind, func(t *testing.T) {
				t.Parallel()
				roundTripTrace(t, storeOfKind(t, kind), tc.trace, tc.final, tc.compactAt)
			})
		}
	}
}

func roundTripTrace(t *testing.T, st *store.Store, trace, final string, compactAt map[int]bool) {
	recs := traceRecords(t, trace)
	committed := resolved(recs)
	_, n := initNode(t, st, "", "")
	for i, r := range recs {
		if compactAt[i] {
			if _, err := n.Compact(ctx, nil); err != nil {
				t.Fatalf("compact before hook %d: %v", i, err)
			}
		}
		if i%97 == 0 {
			if _, err := n.Seal(ctx); err != nil {
				t.Fatalf("seal before hook %d: %v", i, err)
			}
		}
		feed(t, n, r)
	}
	// Newest state equals the node's own final database.
	got, res := restore(t, st, history.RestoreOptions{})
	assertSame(t, "newest state", got, filepath.Join("..", "..", "testdata", final))
	if last := committed[len(committed)-1].Version; res.Version != last {
		t.Fatalf("newest restore at data_version %d, want %d", res.Version, last)
	}
	// Every manifest.
	seqs, err := st.ManifestSeqs(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) < 8 {
		t.Fatalf("only %d manifests written", len(seqs))
	}
	for _, seq := range seqs {
		m, err := st.Manifest(ctx, "n1", seq)
		if err != nil {
			t.Fatal(err)
		}
		got, res := restore(t, st, history.RestoreOptions{Manifest: seq})
		if res.Version != m.LastVersion() {
			t.Fatalf("manifest %d restored at %d, want %d", seq, res.Version, m.LastVersion())
		}
		assertSame(t, "manifest", got, expectedAt(t, committed, m.LastVersion()))
	}
	// Several versions, including ones only in the journal.
	last := committed[len(committed)-1].Version
	for _, v := range []uint32{1, 2, 9, 57, 200, 384, 507, 508, 509, last - 1, last} {
		if v > last {
			continue
		}
		got, res := restore(t, st, history.RestoreOptions{Version: &v})
		if res.Version != v {
			t.Fatalf("restore --version %d gave %d", v, res.Version)
		}
		assertSame(t, "version", got, expectedAt(t, committed, v))
	}
}

func TestRestoreRefusals(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	if _, err := history.Init(ctx, st, "n1", "", nil); err != nil {
		t.Fatal(err)
	}
	existing := filepath.Join(t.TempDir(), "exists.sqlite3")
	os.WriteFile(existing, []byte("keep me"), 0o600)
	if _, err := history.Restore(ctx, st, history.RestoreOptions{Node: "n1", Dest: existing}); !errors.Is(err, history.ErrExists) {
		t.Fatalf("restore over an existing file: %v", err)
	}
	if b, _ := os.ReadFile(existing); string(b) != "keep me" {
		t.Fatal("existing file changed")
	}
	for _, name := range []string{"../x", "", "a/b", ".hidden", strings.Repeat("x", 65)} {
		if _, err := history.Init(ctx, st, name, "", nil); err == nil {
			t.Errorf("init accepted node name %q", name)
		}
		if _, err := history.Restore(ctx, st, history.RestoreOptions{Node: name, Dest: filepath.Join(t.TempDir(), "x")}); err == nil {
			t.Errorf("restore accepted node name %q", name)
		}
	}
	if _, err := history.Init(ctx, st, "n1", "", nil); !errors.Is(err, store.ErrNodeExists) {
		t.Fatalf("second init of n1: %v", err)
	}
	if _, err := history.Restore(ctx, st, history.RestoreOptions{Node: "nobody", Dest: filepath.Join(t.TempDir(), "x")}); !errors.Is(err, store.ErrNoNode) {
		t.Fatalf("restore of a missing node: %v", err)
	}
	v := uint32(99)
	if _, err := history.Restore(ctx, st, history.RestoreOptions{Node: "n1", Version: &v, Dest: filepath.Join(t.TempDir(), "x")}); err == nil {
		t.Fatal("restore of a version beyond the newest succeeded")
	}
}

// TestInitFromDatabase snapshots an existing database and restores it.
func TestInitFromDatabase(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	src := filepath.Join("..", "..", "testdata", "trace1-final.sqlite3")
	m, err := history.Init(ctx, st, "n1", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Snapshot.Version != 385 || m.Snapshot.Pages != 92 {
		t.Fatalf("snapshot at %d with %d pages", m.Snapshot.Version, m.Snapshot.Pages)
	}
	got, res := restore(t, st, history.RestoreOptions{})
	assertSame(t, "init snapshot", got, src)
	if res.Version != 385 {
		t.Fatalf("restored data_version %d", res.Version)
	}
	// A second node with the same database shares every page.
	m2, err := history.Init(ctx, st, "n2", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Stats.NewChunks != 0 || m2.Stats.AddedBytes != 0 {
		t.Fatalf("second node added %d chunks, %d bytes", m2.Stats.NewChunks, m2.Stats.AddedBytes)
	}
	var _ = manifest.FormatVersion
}

// TestRestoreFailsOnDamagedPack flips one byte inside a page chunk of a
// pack: restore fails, naming the chunk and its pack, and leaves no file.
func TestRestoreFailsOnDamagedPack(t *testing.T) {
	t.Parallel()
	st, url := newStore(t)
	src := filepath.Join("..", "..", "testdata", "trace1-final.sqlite3")
	m, err := history.Init(ctx, st, "n1", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Find page 10's chunk and damage it in its pack.
	victim := pageOf(t, st, "n1", m.Seq, 9)
	loc, ok := locate(t, st, victim)
	if !ok {
		t.Fatal("page chunk not indexed")
	}
	dir := strings.TrimPrefix(url, "file://")
	s := loc.Pack.String()
	path := filepath.Join(dir, "packs", s[:2], s)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	raw[int(loc.Offset)+int(loc.Length)/2] ^= 0x01
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "restored.sqlite3")
	_, err = history.Restore(ctx, st, history.RestoreOptions{Node: "n1", Dest: dest})
	if err == nil || !errors.Is(err, chunk.ErrCorrupt) || !strings.Contains(err.Error(), victim.String()) || !strings.Contains(err.Error(), s) {
		t.Fatalf("restore from a damaged pack: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(dest)); len(entries) != 0 {
		t.Fatalf("restore left files behind: %v", entries)
	}
}

// locate looks a chunk up the way readers do (one pass over the indexes).
func locate(t testing.TB, st *store.Store, id chunker.ID) (chunk.Info, bool) {
	t.Helper()
	l, err := st.Lookup(ctx, []chunker.ID{id})
	if err != nil {
		t.Fatal(err)
	}
	return l.Locate(id)
}

// know gives w a lookup of ids, as snapshots do before putting pages.
func know(t testing.TB, w *store.Writer, st *store.Store, ids ...chunker.ID) {
	t.Helper()
	l, err := st.Lookup(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	w.Know(l)
}

// initNode adds node n1 to st from the database at db ("" for an empty
// one) and opens it for writing, compacting in tempDir ("" for the
// default); the node is closed when the test ends.
func initNode(t testing.TB, st *store.Store, db, tempDir string) (*manifest.Manifest, *history.Node) {
	t.Helper()
	m, err := history.Init(ctx, st, "n1", db, nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := history.OpenNode(ctx, st, "n1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	n.TempDir = tempDir
	return m, n
}

// packsOf is the packs of a store the test sees whole.
func packsOf(t testing.TB, st *store.Store) *packs.Packs {
	t.Helper()
	p, err := st.Packs("test")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// indexOf is the whole chunk index of a store the test sees whole.
func indexOf(t testing.TB, st *store.Store) *packs.Index {
	t.Helper()
	x, err := packsOf(t, st).LoadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// putManifest commits m through a writer that stored nothing: the chunks
// it names are the test's business.
func putManifest(ctx context.Context, st *store.Store, m *manifest.Manifest) error {
	w, err := st.NewWriter(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	_, err = w.Commit(ctx, m)
	return err
}
