package writeback

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sync/errgroup"
)

// TestWriteAndDrain: paced writes put exactly the bytes at the offsets
// asked, in steps that do not divide the data, and draining a file
// changes nothing in it.
func TestWriteAndDrain(t *testing.T) {
	defer func(old int64) { Step = old }(Step)
	Step = 4096
	for _, tc := range []struct {
		name string
		off  int64
		size int
	}{
		{"empty", 0, 0},
		{"under a step", 0, 100},
		{"steps and a tail", 0, 3*4096 + 17},
		{"at an offset", 5000, 2*4096 + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "f")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			data := make([]byte, tc.size)
			rand.Read(data)
			if err := Write(f, data, tc.off); err != nil {
				t.Fatal(err)
			}
			if err := Drain(f, tc.off+int64(tc.size)+4096); err != nil {
				t.Fatal(err)
			}
			if err := DrainFile(path); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := append(make([]byte, tc.off), data...)
			if !bytes.Equal(got, want) {
				t.Fatalf("file holds %d bytes, not the %d written at %d", len(got), tc.size, tc.off)
			}
		})
	}
}

// TestConcurrentWriters: goroutines writing their own regions of one file
// at once (a compaction's pack readers) share the one step in flight and
// each region holds exactly its bytes.
func TestConcurrentWriters(t *testing.T) {
	defer func(old int64) { Step = old }(Step)
	Step = 4096
	const writers, region = 4, 5*4096 + 123
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := make([]byte, writers*region)
	rand.Read(want)
	var g errgroup.Group
	for w := range writers {
		g.Go(func() error { return Write(f, want[w*region:(w+1)*region], int64(w*region)) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("concurrent writers left other bytes than they wrote")
	}
}

// TestUrgentYield: a paced write held back by an urgent sync that never
// ends still finishes (each step waits a bounded time) with the bytes
// asked, and once every urgent sync is done nothing is held back.
func TestUrgentYield(t *testing.T) {
	defer func(old int64) { Step = old }(Step)
	Step = 4096
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 3*4096)
	rand.Read(data)
	done1, done2 := Urgent(), Urgent()
	if err := Write(f, data, 0); err != nil {
		t.Fatal(err)
	}
	done2()
	done1()
	urgent.mu.Lock()
	n := urgent.n
	urgent.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d urgent syncs still counted after both ended", n)
	}
	if err := Drain(f, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the file does not hold the bytes written while held back")
	}
}

// TestUrgentAllocates: marking a sync urgent, with no bulk writer
// waiting, allocates nothing (it is on every db_write's path).
func TestUrgentAllocates(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { Urgent()() }); n != 0 {
		t.Fatalf("Urgent allocates %v times a sync", n)
	}
}

// TestBudget: bulk writes never leave more than Budget bytes written back
// and unflushed; a sync of a db_write that began after some of them counts
// as their flush; and draining a clean file writes nothing back.
func TestBudget(t *testing.T) {
	defer func(step, budget int64) { Step, Budget = step, budget }(Step, Budget)
	Step, Budget = 4096, 4*4096
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unflushed := func() int64 {
		urgent.mu.Lock()
		defer urgent.mu.Unlock()
		return urgent.written - urgent.flushedTo
	}
	if err := Write(f, make([]byte, 10*4096+100), 0); err != nil {
		t.Fatal(err)
	}
	if u := unflushed(); u >= Budget {
		t.Fatalf("%d bytes written back and unflushed, budget %d", u, Budget)
	}
	if err := Write(f, make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	done := Urgent() // a db_write's sync, begun after the writes
	done()
	if u := unflushed(); u != 0 {
		t.Fatalf("%d bytes unflushed after a sync that began after them", u)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	urgent.mu.Lock()
	before := urgent.written
	urgent.mu.Unlock()
	if err := Drain(f, 11*4096); err != nil {
		t.Fatal(err)
	}
	urgent.mu.Lock()
	after := urgent.written
	urgent.mu.Unlock()
	if tells := dirtyBytes(f, 0, 4096) == 0; after != before && tells {
		t.Fatalf("draining a clean file counted %d bytes written back", after-before)
	}
	// Pages another writer left dirty (SQLite's checkpoint): drained
	// within the budget too, flushed through a scratch file.
	if _, err := f.WriteAt(make([]byte, 10*4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := Drain(f, 11*4096); err != nil {
		t.Fatal(err)
	}
	if u := unflushed(); u >= Budget {
		t.Fatalf("%d bytes drained and unflushed, budget %d", u, Budget)
	}
}
