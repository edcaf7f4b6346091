package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// walFixture is a WAL and the journal directories of its nodes.
type walFixture struct {
	root string
	size int64
}

func (fx walFixture) dir(node string) (string, error) {
	if node == "" || filepath.Base(node) != node {
		return "", fmt.Errorf("bad node name %q", node)
	}
	return filepath.Join(fx.root, "nodes", node, "journal"), nil
}

func (fx walFixture) path() string { return filepath.Join(fx.root, ".journals.wal") }

func (fx walFixture) open(t testing.TB) *WAL {
	t.Helper()
	w, err := OpenWAL(fx.path(), WALOptions{Size: fx.size, Dir: fx.dir})
	if err != nil {
		t.Fatalf("OpenWAL: %v", err)
	}
	return w
}

func (fx walFixture) journal(t testing.TB, w *WAL, node string) *Journal {
	t.Helper()
	dir, _ := fx.dir(node)
	return mustOpen(t, dir, Options{WAL: w, Node: node})
}

// crash drops a journal's and a WAL's files and locks without syncing or
// closing anything else, as a killed process would (the page cache keeps
// the writes: tests that need them gone damage the files).
func crashJournal(j *Journal) {
	j.f.Close()
	j.lock.Close()
	if j.group != nil {
		j.group.detach(j)
	}
}

func crashWAL(w *WAL) { w.f.Close() }

// readAll returns the logical records of the journal in dir.
func readAll(t testing.TB, dir string) []Record {
	t.Helper()
	var got []Record
	if err := Read(dir, 0, func(r Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatalf("Read %s: %v", dir, err)
	}
	return got
}

// TestWALGroupCommit appends from many nodes at once through one WAL small
// enough to be reset many times: every node's records come back in order,
// after a clean close and after a crash, and appends share fdatasyncs.
func TestWALGroupCommit(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(fmt.Sprintf("crash=%v", crash), func(t *testing.T) {
			fx := walFixture{root: t.TempDir(), size: 64 << 10}
			w := fx.open(t)
			const nodes, each = 8, 60
			js := make([]*Journal, nodes)
			for i := range js {
				js[i] = fx.journal(t, w, fmt.Sprintf("n%d", i))
			}
			var wg sync.WaitGroup
			for i, j := range js {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for v := uint32(1); v <= each; v++ {
						if _, err := j.Append(mkRec(v, 100+i*50)); err != nil {
							t.Errorf("node %d: %v", i, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if s := w.Syncs(); s >= nodes*each {
				t.Errorf("%d fdatasyncs for %d appends: no group commit", s, nodes*each)
			}
			for _, j := range js {
				if crash {
					crashJournal(j)
				} else {
					mustClose(t, j)
				}
			}
			if crash {
				crashWAL(w)
			} else if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			fx.open(t).Close()
			for i := range nodes {
				dir, _ := fx.dir(fmt.Sprintf("n%d", i))
				got := readAll(t, dir)
				if len(got) != each {
					t.Fatalf("node %d: %d records, want %d", i, len(got), each)
				}
				for k, r := range got {
					if want := mkRec(uint32(k+1), 100+i*50); r.Seq != uint64(k+1) || r.Version != want.Version || r.Statements[0] != want.Statements[0] {
						t.Fatalf("node %d record %d: seq %d version %d", i, k, r.Seq, r.Version)
					}
				}
			}
		})
	}
}

// TestWALReplayLostSegmentWrites: a crash lost the journal writes the WAL
// holds (they were never fdatasync'ed; here zeroed or garbled, in any
// order); opening the WAL writes them back.
func TestWALReplayLostSegmentWrites(t *testing.T) {
	for _, damage := range []string{"zero", "garble-middle", "drop-newer-segment"} {
		t.Run(damage, func(t *testing.T) {
			fx := walFixture{root: t.TempDir(), size: 256 << 10}
			w := fx.open(t)
			dir, _ := fx.dir("a")
			j := mustOpen(t, dir, Options{SegmentSize: 4096, WAL: w, Node: "a"})
			var want []Record
			for v := uint32(1); v <= 40; v++ {
				want = append(want, mustAppend(t, j, mkRec(v, 200)))
			}
			if _, err := j.Replace(mkRec(40, 50)); err != nil {
				t.Fatal(err)
			}
			want = append(want[:39], Record{Seq: 41, Version: 40, Time: mkRec(40, 50).Time, Statements: mkRec(40, 50).Statements})
			crashJournal(j)
			crashWAL(w)
			segs := segFiles(t, dir)
			newest := segs[len(segs)-1]
			switch damage {
			case "zero":
				zeroFileFrom(t, newest, headerSize)
			case "garble-middle":
				garble(t, newest, headerSize+100)
			case "drop-newer-segment":
				os.Remove(newest)
			}
			fx.open(t).Close()
			got := readAll(t, dir)
			if len(got) != len(want) {
				t.Fatalf("got %d records, want %d: %s", len(got), len(want), describe(got))
			}
			for i := range got {
				if !sameRecord(got[i], want[i]) {
					t.Fatalf("record %d: got %+v want %+v", i, got[i], want[i])
				}
			}
			// The journal takes appends again, with the next seq.
			j = fx.journal(t, fx.open(t), "a")
			if r := mustAppend(t, j, mkRec(41, 10)); r.Seq != 42 {
				t.Fatalf("next append got seq %d, want 42", r.Seq)
			}
			mustClose(t, j)
		})
	}
}

func zeroFileFrom(t *testing.T, path string, off int64) {
	t.Helper()
	b := readFile(t, path)
	clear(b[off:])
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func garble(t *testing.T, path string, off int64) {
	t.Helper()
	b := readFile(t, path)
	for i := off; i < off+64 && i < int64(len(b)); i++ {
		b[i] ^= 0x5a
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWALTornTail: a crash during a batch's write leaves a torn frame (and
// maybe valid frames after it, never acknowledged); replay keeps the
// frames before it and drops the rest, and the next generation never
// reads the old bytes.
func TestWALTornTail(t *testing.T) {
	fx := walFixture{root: t.TempDir(), size: 256 << 10}
	w := fx.open(t)
	j := fx.journal(t, w, "a")
	for v := uint32(1); v <= 5; v++ {
		mustAppend(t, j, mkRec(v, 100))
	}
	off := w.off
	crashJournal(j)
	crashWAL(w)
	// An unacknowledged batch: records 6 (torn) and 7 (whole).
	dir, _ := fx.dir("a")
	var batch []byte
	for v := uint32(6); v <= 7; v++ {
		r := mkRec(v, 100)
		r.Seq = uint64(v)
		fr, _ := appendFrame(nil, kindAppend, &r, 0)
		batch = appendWALFrame(batch, 1, "a", fr)
	}
	n := int(le.Uint32(batch)) + frameHeaderSize
	batch[n/2] ^= 1 // record 6 torn
	f, err := os.OpenFile(fx.path(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(batch, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	w = fx.open(t)
	if got := readAll(t, dir); len(got) != 5 {
		t.Fatalf("after replay: %s, want records 1-5", describe(got))
	}
	// The new generation writes from the start; a crash then must not
	// bring back the old generation's record 7.
	j = fx.journal(t, w, "a")
	if r := mustAppend(t, j, mkRec(6, 100)); r.Seq != 6 {
		t.Fatalf("seq %d, want 6", r.Seq)
	}
	crashJournal(j)
	crashWAL(w)
	fx.open(t).Close()
	if got := readAll(t, dir); len(got) != 6 {
		t.Fatalf("after second replay: %s, want records 1-6", describe(got))
	}
}

// TestWALHeaderDamage: one damaged header slot falls back to the other;
// both damaged refuses to open (changes may be in the log).
func TestWALHeaderDamage(t *testing.T) {
	fx := walFixture{root: t.TempDir(), size: 256 << 10}
	fx.open(t).Close() // generation 2 in slot 0, generation 1 in slot 1
	garble(t, fx.path(), 0)
	fx.open(t).Close() // falls back to slot 1, writes generation 2 to slot 0
	garble(t, fx.path(), 0)
	garble(t, fx.path(), walSlot1)
	if _, err := OpenWAL(fx.path(), WALOptions{Size: fx.size, Dir: fx.dir}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("both slots damaged: got %v, want ErrCorrupt", err)
	}
}

// TestWALLocked: a second opener of a WAL is refused.
func TestWALLocked(t *testing.T) {
	fx := walFixture{root: t.TempDir(), size: 256 << 10}
	w := fx.open(t)
	defer w.Close()
	if _, err := OpenWAL(fx.path(), WALOptions{Size: fx.size, Dir: fx.dir}); !errors.Is(err, ErrLocked) {
		t.Fatalf("got %v, want ErrLocked", err)
	}
}
