package journal

import (
	"bytes"
	"os"
	"testing"
)

// FuzzWAL feeds arbitrary bytes as a write-ahead log's frames (after valid
// header slots when mode is even, raw otherwise). Reading must not panic
// or hang, and must stop within the bytes; a log with records must replay
// them into journals or fail with an error, and a reopen must then find
// nothing left to replay.
func FuzzWAL(f *testing.F) {
	var frames []byte
	for i, node := range []string{"a", "b", "a"} {
		r := mkRec(uint32(i+1), 60)
		r.Seq = uint64(i/2 + 1)
		fr, _ := appendFrame(nil, kindAppend, &r, 0)
		frames = appendWALFrame(frames, 1, node, fr)
	}
	f.Add(byte(0), frames)
	f.Add(byte(0), frames[:len(frames)-5])
	f.Add(byte(0), append(frames[:20:20], 0, 0, 0))
	f.Add(byte(1), frames)
	f.Add(byte(0), []byte{})
	f.Fuzz(func(t *testing.T, mode byte, body []byte) {
		file := body
		if mode&1 == 0 {
			file = make([]byte, walDataStart, walDataStart+len(body))
			copy(file[walSlotOffset(1):], encodeWALSlot(1))
			file = append(file, body...)
		}
		gen, recs, end, err := readWAL(bytes.NewReader(file), int64(len(file)))
		if err == nil {
			if gen != 1 && mode&1 == 0 {
				t.Fatalf("generation %d, want 1", gen)
			}
			if end > int64(len(file)) || (len(recs) > 0 && end <= walDataStart) {
				t.Fatalf("end %d of %d bytes with %d records", end, len(file), len(recs))
			}
		}
		if err != nil || len(recs) == 0 {
			return // opening does nothing more than this read (and a reset)
		}
		// Replay, into journals of the seeds' nodes (other names have
		// none: nothing to replay).
		fx := walFixture{root: t.TempDir(), size: 64 << 10}
		for _, node := range []string{"a", "b"} {
			dir, _ := fx.dir(node)
			mustClose(t, mustOpen(t, dir, Options{}))
		}
		if err := os.WriteFile(fx.path(), file, 0o600); err != nil {
			t.Fatal(err)
		}
		w, err := OpenWAL(fx.path(), WALOptions{Size: fx.size, Dir: fx.dir})
		if err != nil {
			return
		}
		w.Close()
		w = fx.open(t)
		defer w.Close()
		if _, left, _, err := readWAL(w.f, int64(len(file))); err != nil || len(left) > 0 {
			t.Fatalf("after replay and reopen: %d records left, err %v", len(left), err)
		}
	})
}
