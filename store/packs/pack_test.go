package packs

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
)

func TestPackTrailerMatchesIndex(t *testing.T) {
	p := newTestPacks(t, nil)
	ids := putPack(t, p, 1, 5)
	loc := locate(t, p, ids[0])
	pack, err := p.be.Get(ctx, packName(loc.Pack), 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if chunker.Sum(pack) != loc.Pack {
		t.Fatal("pack name is not the hash of its content")
	}
	entries, err := parsePackTrailer(pack)
	if err != nil || len(entries) != 5 {
		t.Fatalf("trailer: %v (%d entries)", err, len(entries))
	}
	var n int
	p.be.List(ctx, "index/", func(backend.Info) error { n++; return nil })
	if n != 1 {
		t.Fatalf("%d index objects", n)
	}
}

func FuzzDecodeIndex(f *testing.F) {
	e := []chunk.Entry{{ID: chunker.Sum([]byte("a")), Kind: chunk.KindPage, Offset: 0, Length: 10, Raw: 4096}}
	f.Add(encodeIndex(indexVersion1, chunker.Sum(nil), e))
	f.Add(buildPack(indexVersion1, make([]byte, 10), e))
	// Version 2: a full entry and delta entries.
	e2 := append(e, chunk.Entry{ID: chunker.Sum([]byte("b")), Kind: chunk.KindPage, Offset: 10, Length: 3, Raw: 4096, Base: e[0].ID},
		chunk.Entry{ID: chunker.Sum([]byte("c")), Kind: chunk.KindList, Offset: 13, Length: 5, Raw: 40})
	f.Add(encodeIndex(indexVersion2, chunker.Sum(nil), e2))
	f.Add(encodeIndex(indexVersion2, chunker.Sum(nil), e2[1:2]))
	f.Add(buildPack(indexVersion2, make([]byte, 18), e2))
	f.Fuzz(func(t *testing.T, b []byte) {
		if pack, entries, err := decodeIndex(b, int64(len(b))); err == nil {
			v := binary.BigEndian.Uint16(b[6:8])
			if !bytes.Equal(encodeIndex(v, pack, entries), b) {
				t.Fatal("index does not round-trip")
			}
			for _, e := range entries {
				if e.Delta() && (e.Kind != chunk.KindPage || e.Base == e.ID || v != indexVersion2) {
					t.Fatalf("accepted a bad delta entry %+v (index version %d)", e, v)
				}
			}
		}
		parsePackTrailer(b)
	})
}

func TestDecodeIndexV2(t *testing.T) {
	a, b := chunker.Sum([]byte("a")), chunker.Sum([]byte("b"))
	full := chunk.Entry{ID: a, Kind: chunk.KindPage, Length: 10, Raw: 4096}
	delta := chunk.Entry{ID: b, Kind: chunk.KindPage, Offset: 10, Length: 3, Raw: 4096, Base: a}
	idx := encodeIndex(indexVersion2, chunker.ID{}, []chunk.Entry{full, delta})
	_, got, err := decodeIndex(idx, 13)
	if err != nil || len(got) != 2 || got[0] != full || got[1] != delta {
		t.Fatalf("decode: %v %+v", err, got)
	}
	if _, _, err := decodeIndex(idx, 12); err == nil {
		t.Fatal("entry outside the pack accepted")
	}
	bad := func(name string, b []byte) {
		t.Helper()
		if _, _, err := decodeIndex(b, -1); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	bad("truncated base", idx[:len(idx)-1])
	bad("trailing byte", append(append([]byte(nil), idx...), 0))
	v1 := append([]byte(nil), idx...)
	binary.BigEndian.PutUint16(v1[6:], indexVersion1)
	bad("delta in a version-1 index", v1)
	list := append([]byte(nil), idx...)
	list[indexHeaderLen+indexEntryLen+chunker.IDSize] = byte(chunk.KindList) | kindDelta
	bad("delta list chunk", list)
	self := encodeIndex(indexVersion2, chunker.ID{}, []chunk.Entry{{ID: a, Kind: chunk.KindPage, Raw: 1, Base: b}})
	copy(self[indexHeaderLen+indexEntryLen:], a[:])
	bad("delta against itself", self)
	zero := encodeIndex(indexVersion2, chunker.ID{}, []chunk.Entry{{ID: a, Kind: chunk.KindPage, Raw: 1, Base: b}})
	copy(zero[indexHeaderLen+indexEntryLen:], make([]byte, 32))
	bad("zero base", zero)
	v3 := append([]byte(nil), idx...)
	binary.BigEndian.PutUint16(v3[6:], 3)
	bad("version 3", v3)
}

// TestKeyIndex: the bucketed search finds every key, its first position
// among equal keys, and nothing else, including at the ends of the range.
func TestKeyIndex(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys []uint64
	}{
		{"empty", nil},
		{"ends", []uint64{0, 1, 1<<48 - 1, 1 << 48, ^uint64(0) - 1, ^uint64(0)}},
		{"repeats", []uint64{5, 5, 5, 1 << 60, 1 << 60, ^uint64(0), ^uint64(0)}},
		{"spread", func() []uint64 {
			var k []uint64
			for i := uint64(0); i < 5000; i++ {
				k = append(k, i*0x9e3779b97f4a7c15)
			}
			slices.Sort(k)
			return k
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newKeyIndex(tc.keys)
			for i, k := range tc.keys {
				at, ok := x.search(k)
				if !ok || tc.keys[at] != k || (at > 0 && tc.keys[at-1] == k) || at > i {
					t.Fatalf("key %#x (at %d): found %v at %d", k, i, ok, at)
				}
			}
			for _, k := range []uint64{2, 3, 1<<48 + 1, 1<<60 + 1, ^uint64(0) - 2} {
				if _, ok := slices.BinarySearch(tc.keys, k); ok {
					continue
				}
				if _, ok := x.search(k); ok {
					t.Fatalf("found %#x, which is not there", k)
				}
			}
		})
	}
}

// TestLookupCondemned: a lookup tells a chunk whose only copy gc condemned
// (readable, but no writer may rely on it) from one stored again besides
// its condemned copy (the fresh copy is preferred) and from an untouched
// one.
func TestLookupCondemned(t *testing.T) {
	p := newTestPacks(t, nil)
	ids := putPack(t, p, 1, 3)
	first := locate(t, p, ids[0])
	rec := newCondemnedRecord(2)
	rec.add(chunkCopy{ids[0], first.Pack}, 0)
	rec.add(chunkCopy{ids[1], first.Pack}, 0)
	if _, err := writeCondemned(ctx, p.be, p.now(), rec); err != nil {
		t.Fatal(err)
	}
	if err := p.BeginWrite(ctx); err != nil { // a writer loads the record
		t.Fatal(err)
	}
	again := putPack(t, p, 1, 2)[1] // ids[1] stored again (with ids[0])
	if again != ids[1] {
		t.Fatal("test chunks differ")
	}
	// ids[0]'s second copy is removed from the picture: only its condemned
	// copy counts for this test.
	l, err := p.lookup(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct{ has, first bool }{{true, false}, {true, false}, {true, true}} {
		info, ok := l.Locate(ids[i])
		if !ok || l.Has(ids[i]) != want.has || (info.Pack == first.Pack) != want.first {
			t.Fatalf("chunk %d: located %v in the first pack %v, has %v", i, ok, info.Pack == first.Pack, l.Has(ids[i]))
		}
	}
	// A condemned-only chunk: found, not to be relied on.
	only := putPack(t, p, 9, 1)[0]
	pack := locate(t, p, only).Pack
	rec.add(chunkCopy{only, pack}, 0)
	if _, err := writeCondemned(ctx, p.be, p.now().Add(time.Second), rec); err != nil {
		t.Fatal(err)
	}
	if err := p.BeginWrite(ctx); err != nil {
		t.Fatal(err)
	}
	l, err = p.lookup(ctx, []chunker.ID{only})
	if err != nil {
		t.Fatal(err)
	}
	if info, ok := l.Locate(only); !ok || l.Has(only) || info.Pack != pack {
		t.Fatalf("condemned-only chunk: located %v (%+v), has %v", ok, info, l.Has(only))
	}
}
