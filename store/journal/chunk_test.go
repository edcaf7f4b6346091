package journal

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

func chunkSamples() [][]Record {
	return [][]Record{
		nil,
		{{Seq: 1, Version: 1, Time: time.Unix(1700000000, 5), Statements: []string{"CREATE TABLE t (a)", ""}}},
		{
			mkRec(7, 1400),
			pragma(7),
			{Seq: 0, Version: 9}, // legacy: no seq, unknown time, no statement
			{Seq: 12, Version: math.MaxUint32, Time: time.Unix(0, math.MaxInt64), Statements: []string{"émoji ✓ 'q''", strings.Repeat("x", 3000)}},
		},
	}
}

func TestChunkRoundTrip(t *testing.T) {
	t.Parallel()
	for _, recs := range chunkSamples() {
		b := EncodeChunk(recs)
		got, err := DecodeChunk(b)
		if err != nil {
			t.Fatalf("DecodeChunk(EncodeChunk(%s)): %v", describe(recs), err)
		}
		checkRecords(t, "chunk round trip", got, recs)
		for i := range got {
			if got[i].Time.IsZero() != recs[i].Time.IsZero() {
				t.Fatalf("record %d: zero time not preserved", i)
			}
		}
		if !bytes.Equal(EncodeChunk(got), b) {
			t.Fatal("encoding not canonical")
		}
	}
}

func TestDecodeChunkRejects(t *testing.T) {
	t.Parallel()
	valid := EncodeChunk(chunkSamples()[2])
	mod := func(f func(b []byte) []byte) []byte {
		return f(append([]byte(nil), valid...))
	}
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "shorter"},
		{"bad magic", mod(func(b []byte) []byte { b[0] = 'X'; return b }), "magic"},
		{"unknown version", mod(func(b []byte) []byte { b[8] = 2; return b }), "unknown format version 2"},
		{"truncated", valid[:len(valid)-1], "exceeds"},
		{"truncated in a record header", valid[:30], "cannot fit"},
		{"trailing bytes", append(append([]byte(nil), valid...), 0), "trailing"},
		{"absurd record count", mod(func(b []byte) []byte { copy(b[12:], []byte{0xff, 0xff, 0xff, 0xff}); return b }), "cannot fit"},
		{"absurd statement count", mod(func(b []byte) []byte { copy(b[16+20:], []byte{0xff, 0xff, 0xff, 0x7f}); return b }), "cannot fit"},
		{"absurd statement length", mod(func(b []byte) []byte { copy(b[16+24:], []byte{0xff, 0xff, 0xff, 0xff}); return b }), "exceeds"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeChunk(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeChunk: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeChunk: any input decodes without panicking and within bounded
// allocation, and whatever decodes re-encodes to the same bytes.
func FuzzDecodeChunk(f *testing.F) {
	for _, recs := range chunkSamples() {
		f.Add(EncodeChunk(recs))
	}
	f.Add([]byte("CLNJCHK\x00\x01\x00\x00\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := DecodeChunk(b)
		if err != nil {
			return
		}
		if again := EncodeChunk(recs); !bytes.Equal(again, b) {
			t.Fatalf("decoded %d records re-encode to different bytes", len(recs))
		}
		back, err := DecodeChunk(EncodeChunk(recs))
		if err != nil {
			t.Fatal(err)
		}
		checkRecords(t, "re-decode", back, recs)
	})
}

// TestDecodeChunkAllocation is serial: testing.AllocsPerRun counts the
// allocations of the whole process.
func TestDecodeChunkAllocation(t *testing.T) {
	// A header claiming the most records the input can hold, each with the
	// most statements: allocation must stay proportional to the input.
	b := EncodeChunk(nil)
	const n = 1000
	copy(b[12:], []byte{n & 0xff, n >> 8, 0, 0})
	for range n {
		b = append(b, make([]byte, chunkRecordFixed)...)
	}
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := DecodeChunk(b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 2 {
		t.Fatalf("%v allocations for %d empty records", allocs, n)
	}
}
