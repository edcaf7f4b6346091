package manifest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
)

func sample() *Manifest {
	return &Manifest{
		Format: FormatVersion, Node: "alice", Seq: 3, Created: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC),
		Snapshot: Snapshot{Version: 42, PageSize: 4096, Pages: 3, Lists: []chunker.ID{chunker.Sum([]byte("l"))}, Patches: []chunker.ID{chunker.Sum([]byte("p"))}},
		Changes: []ChangeRef{
			{ID: chunker.Sum([]byte("c1")), FirstSeq: 1, LastSeq: 10, FirstVersion: 43, LastVersion: 52, Records: 10},
			{ID: chunker.Sum([]byte("c2")), FirstSeq: 11, LastSeq: 12, FirstVersion: 53, LastVersion: 53, Records: 2},
		},
		JournalSeq: 12,
		Stats:      Stats{AddedBytes: 1000, NewChunks: 3, ReusedChunks: 7},
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	m := sample()
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := Encode(got)
	if !bytes.Equal(b, b2) {
		t.Fatalf("re-encoding differs:\n%s\n%s", b, b2)
	}
	if got.LastVersion() != 53 || got.Snapshot.Size() != 3*4096 {
		t.Fatalf("decoded %+v", got)
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	good, _ := Encode(sample())
	flip := bytes.Clone(good)
	flip[len(flip)/2] ^= 1
	future := bytes.Replace(good, []byte("clnbackup-manifest 1"), []byte("clnbackup-manifest 2"), 1)
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"truncated", good[:len(good)-20], "truncated"},
		{"truncated in half", good[:len(good)/2], "truncated"},
		{"flipped byte", flip, "damaged"},
		{"unknown version", future, "unknown manifest format version 2"},
		{"not a manifest", []byte("hello\nworld\n"), "not a manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Decode(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := Decode(future); !errors.Is(err, ErrUnknownFormat) {
		t.Fatalf("unknown version not ErrUnknownFormat: %v", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*Manifest)
	}{
		{"bad node", func(m *Manifest) { m.Node = "../x" }},
		{"empty node", func(m *Manifest) { m.Node = "" }},
		{"seq 0", func(m *Manifest) { m.Seq = 0 }},
		{"page size", func(m *Manifest) { m.Snapshot.PageSize = 1000 }},
		{"no lists", func(m *Manifest) { m.Snapshot.Lists = nil }},
		{"change order", func(m *Manifest) { m.Changes[1].FirstSeq = 5 }},
		{"journal seq", func(m *Manifest) { m.JournalSeq = 99 }},
		{"format", func(m *Manifest) { m.Format = 7 }},
	} {
		m := sample()
		tc.edit(m)
		if _, err := Encode(m); err == nil {
			t.Errorf("%s: encoded an invalid manifest", tc.name)
		}
	}
}

func TestNodeNames(t *testing.T) {
	t.Parallel()
	for name, ok := range map[string]bool{
		"default": true, "alice": true, "node-1.main_2": true, "A": true,
		"": false, "../x": false, "a/b": false, ".hidden": false, "-x": false, "a b": false,
		strings.Repeat("x", 64): true, strings.Repeat("x", 65): false, "ü": false,
	} {
		if err := ValidNodeName(name); (err == nil) != ok {
			t.Errorf("ValidNodeName(%q) = %v", name, err)
		}
	}
}

func TestListsAndPatches(t *testing.T) {
	t.Parallel()
	ids := make([]chunker.ID, 10)
	for i := range ids {
		ids[i] = chunker.Sum([]byte{byte(i)})
	}
	got, err := DecodeList(EncodeList(ids))
	if err != nil || len(got) != 10 || got[9] != ids[9] {
		t.Fatalf("list round trip: %v", err)
	}
	old := PageTable(ids)
	next := PageTable(append(append([]chunker.ID(nil), ids[:8]...), chunker.Sum([]byte("new")), ids[9], chunker.Sum([]byte("grown"))))
	p := old.Diff(next)
	if p.Pages != 11 || len(p.Entries) != 2 {
		t.Fatalf("diff = %+v", p)
	}
	p2, err := DecodePatch(EncodePatch(p))
	if err != nil {
		t.Fatal(err)
	}
	tab := append(PageTable(nil), old...)
	tab.Apply(p2)
	if err := tab.Check(11); err != nil {
		t.Fatal(err)
	}
	for i := range next {
		if tab[i] != next[i] {
			t.Fatalf("page %d differs after patch", i)
		}
	}
	shrink := old.Diff(next[:4])
	tab.Apply(shrink)
	if len(tab) != 4 {
		t.Fatalf("shrink: %d pages", len(tab))
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := Encode(sample())
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("clnbackup-manifest 1\n{}\nblake3 00\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if _, err := Encode(m); err != nil {
			t.Fatalf("decoded manifest does not re-encode: %v", err)
		}
	})
}

func FuzzDecodeListAndPatch(f *testing.F) {
	f.Add(EncodeList([]chunker.ID{chunker.Sum(nil)}))
	f.Add(EncodePatch(Patch{Pages: 3, Entries: []PatchEntry{{Page: 2, ID: chunker.Sum(nil)}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if ids, err := DecodeList(b); err == nil && !bytes.Equal(EncodeList(ids), b) {
			t.Fatal("list does not round-trip")
		}
		if p, err := DecodePatch(b); err == nil {
			if !bytes.Equal(EncodePatch(p), b) {
				t.Fatal("patch does not round-trip")
			}
			if p.Pages <= 1<<16 {
				var tab PageTable
				tab.Apply(p)
			}
		}
	})
}
