package history_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/packs"
)

// testClock is an injectable clock: real time plus an offset tests move.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

const (
	testGrace     = 10 * time.Minute
	testWriterAge = time.Minute
)

func openWithClock(t *testing.T, url string, c *testClock) *store.Store {
	t.Helper()
	st, err := store.Open(ctx, url, store.Options{Now: c.Now, MaxWriterAge: testWriterAge})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func gc(t *testing.T, st *store.Store) packs.GCReport {
	t.Helper()
	rep, err := history.GC(ctx, st, packs.GCOptions{Grace: testGrace})
	if err != nil {
		t.Fatalf("gc: %v", err)
	}
	t.Logf("gc: %+v", rep)
	return rep
}

// orphanNode inits a node from db and then deletes its manifest, leaving
// every chunk of the snapshot unreferenced. It returns the manifest.
func orphanNode(t *testing.T, st *store.Store, node, db string) *manifest.Manifest {
	t.Helper()
	m, err := history.Init(ctx, st, node, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Objects().Delete(ctx, fmt.Sprintf("nodes/%s/manifests/%020d", node, m.Seq)); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGCWriterReusedCondemnedChunk is the known failure of deduplicating
// stores, made explicit: a writer finds chunks already present and skips
// writing them; gc then decides those chunks are garbage; the writer commits
// a manifest naming them. The manifest must still restore.
func TestGCWriterReusedCondemnedChunk(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	_, url := newStore(t)
	st := openWithClock(t, url, clock)
	db := filepath.Join("..", "..", "testdata", "trace1-final.sqlite3")
	old := orphanNode(t, st, "a", db)
	clock.Advance(testGrace + time.Minute) // the orphaned packs are old now

	// The writer, in its own process (its own Store), looks its pages up
	// before gc condemns them: every one is found and skipped.
	writerStore := openWithClock(t, url, clock)
	w, err := writerStore.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	know(t, w, writerStore, old.Snapshot.Lists...)
	for _, id := range old.Snapshot.Lists {
		if !w.Has(id) {
			t.Fatal("list chunk not found before gc")
		}
	}

	// gc run 1: nothing references the chunks: they are condemned, kept.
	r1 := gc(t, st)
	if r1.NewlyCondemned == 0 || r1.DeletedChunks != 0 {
		t.Fatalf("first gc: %+v", r1)
	}

	// The writer commits a manifest naming the reused chunks, well within
	// its age limit.
	if err := writerStore.CreateNode(ctx, store.NodeInfo{Name: "b"}); err != nil {
		t.Fatal(err)
	}
	mb := &manifest.Manifest{Format: manifest.FormatVersion, Node: "b", Seq: 1, Created: clock.Now(), Snapshot: old.Snapshot}
	if _, err := w.Commit(ctx, mb); err != nil {
		t.Fatal(err)
	}

	// A grace period later, gc run 2 must rescue them, not delete them.
	clock.Advance(testGrace + time.Minute)
	r2 := gc(t, st)
	if r2.RescuedChunks == 0 {
		t.Fatalf("second gc rescued nothing: %+v", r2)
	}
	got, _ := restore(t, st, history.RestoreOptions{Node: "b"})
	assertSame(t, "manifest naming reused chunks", got, db)
}

// TestGCWriterAfterCondemnation: a writer that starts after gc condemned
// chunks stores them again instead of reusing the condemned copies, and the
// next gc deletes the old copies without harm.
func TestGCWriterAfterCondemnation(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	_, url := newStore(t)
	st := openWithClock(t, url, clock)
	db := filepath.Join("..", "..", "testdata", "trace1-final.sqlite3")
	orphanNode(t, st, "a", db)
	clock.Advance(testGrace + time.Minute)
	gc(t, st)

	writerStore := openWithClock(t, url, clock)
	m, err := history.Init(ctx, writerStore, "c", db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Stats.NewChunks == 0 {
		t.Fatal("writer reused condemned chunks")
	}
	clock.Advance(testGrace + time.Minute)
	r := gc(t, st)
	if r.DeletedPacks == 0 {
		t.Fatalf("old condemned pack not deleted: %+v", r)
	}
	got, _ := restore(t, st, history.RestoreOptions{Node: "c"})
	assertSame(t, "restore after gc", got, db)
	// And a further run finds nothing more to do.
	clock.Advance(testGrace + time.Minute)
	if r := gc(t, st); r.DeletedPacks != 0 || r.NewlyCondemned != 0 {
		t.Fatalf("third gc: %+v", r)
	}
}

// TestWriterAgeLimit: a writer older than MaxWriterAge may not commit.
func TestWriterAgeLimit(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	_, url := newStore(t)
	st := openWithClock(t, url, clock)
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	clock.Advance(testWriterAge + time.Second)
	m := &manifest.Manifest{Format: manifest.FormatVersion, Node: "a", Seq: 1, Created: clock.Now()}
	if _, err := w.Commit(ctx, m); !errors.Is(err, store.ErrWriterTooOld) {
		t.Fatalf("commit by an old writer: %v", err)
	}
	if _, err := history.GC(ctx, st, packs.GCOptions{Grace: testWriterAge}); err == nil {
		t.Fatal("gc accepted a grace period shorter than twice the writer limit")
	}
}

// TestGCKeepsReferencedAndYoung: referenced chunks are never touched; young
// packs are kept with a reason; dry runs change nothing.
func TestGCKeepsReferencedAndYoung(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	_, url := newStore(t)
	st := openWithClock(t, url, clock)
	db := filepath.Join("..", "..", "testdata", "trace1-final.sqlite3")
	if _, err := history.Init(ctx, st, "keep", db, nil); err != nil {
		t.Fatal(err)
	}
	orphanNode(t, st, "gone", filepath.Join("..", "..", "testdata", "crash3-final.sqlite3"))
	r := gc(t, st)
	if r.YoungChunks == 0 || r.NewlyCondemned != 0 {
		t.Fatalf("young packs: %+v", r)
	}
	clock.Advance(testGrace + time.Minute)
	dry, err := history.GC(ctx, st, packs.GCOptions{Grace: testGrace, DryRun: true})
	if err != nil || dry.NewlyCondemned == 0 {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	gc(t, st)
	clock.Advance(testGrace + time.Minute)
	gc(t, st)
	got, _ := restore(t, st, history.RestoreOptions{Node: "keep"})
	assertSame(t, "referenced node after gc", got, db)
	u, err := st.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after gc: %+v", u)
}
