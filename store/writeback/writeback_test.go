package writeback

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
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
