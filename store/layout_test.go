package store

import (
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/chunk"
)

func TestParseNodeObject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		node string
		kind NodeObjectKind
		seq  uint64
	}{
		{"nodes/alice/node.json", "alice", NodeRecord, 0},
		{"nodes/alice/manifests/00000000000000000007", "alice", NodeManifest, 7},
		{"nodes/alice/lease/18446744073709551615", "alice", NodeLease, 1<<64 - 1},
		{"nodes/alice/journal/0000000000000001.seg", "alice", NodeJournal, 0},
		{"nodes/alice/manifests/99999999999999999999", "", 0, 0}, // over 2^64
		{"nodes/alice/manifests/7", "", 0, 0},
		{"nodes/alice/manifests/0000000000000000000x", "", 0, 0},
		{"nodes/alice/junk", "", 0, 0},
		{"nodes/alice/node.json/x", "", 0, 0},
		{"nodes/alice/manifests/00000000000000000007/x", "", 0, 0},
		{"nodes/-bad/node.json", "", 0, 0},
		{"nodes/alice/../bob/node.json", "", 0, 0},
		{"packs/00/00", "", 0, 0},
	}
	for _, tc := range tests {
		node, kind, seq, err := ParseNodeObject(tc.name)
		if tc.kind == 0 {
			if err == nil {
				t.Errorf("ParseNodeObject(%q) = %s %s %d, want an error", tc.name, node, kind, seq)
			}
			continue
		}
		if err != nil || node != tc.node || kind != tc.kind || seq != tc.seq {
			t.Errorf("ParseNodeObject(%q) = %q %s %d %v, want %q %s %d", tc.name, node, kind, seq, err, tc.node, tc.kind, tc.seq)
		}
	}
}

// FuzzParseNodeObject: a name the layout accepts is rebuilt exactly from
// its parts (so nothing else hides in it).
func FuzzParseNodeObject(f *testing.F) {
	for _, s := range []string{"nodes/a/node.json", "nodes/a/manifests/00000000000000000001", "nodes/a/lease/00000000000000000002", "nodes/a/journal/x", "nodes/a/../x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		node, kind, seq, err := ParseNodeObject(name)
		if err != nil {
			return
		}
		var want string
		switch kind {
		case NodeRecord:
			want = nodeInfoName(node)
		case NodeManifest:
			want = manifestName(node, seq)
		case NodeLease:
			want = leaseName(node, seq)
		case NodeJournal:
			if !strings.HasPrefix(name, nodePrefix(node)+"journal/") {
				t.Fatalf("%q: journal file outside the journal", name)
			}
			return
		}
		if want != name {
			t.Fatalf("%q parsed as %s %q %d, which is %q", name, kind, node, seq, want)
		}
	})
}

func leaseName(node string, gen uint64) string {
	return leasePrefix(node) + strings.Repeat("0", 20-len(uitoa(gen))) + uitoa(gen)
}

func uitoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// TestCheckNodeObject: what a node's client may put under its node, by
// kind: well-formed objects pass, anything that would break gc, list or
// restore for others is refused with the reason.
func TestCheckNodeObject(t *testing.T) {
	t.Parallel()
	st, _ := newTestStore(t)
	pages := putChunks(t, st, 3)
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, _, err := w.Put(ctx, chunk.KindList, manifest.EncodeList(pages))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	enc := func(m manifest.Manifest) string {
		m.Format = manifest.FormatVersion
		m.Created = time.Unix(1e9, 0).UTC()
		data, err := manifest.Encode(&m)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	good := manifest.Manifest{Node: "alice", Seq: 1, Snapshot: manifest.Snapshot{PageSize: 4096, Pages: 3, Lists: []chunker.ID{list}}}
	missing := good
	missing.Snapshot.Lists = []chunker.ID{chunker.Sum([]byte("nowhere"))}
	wrongKind := good
	wrongKind.Snapshot.Lists = []chunker.ID{pages[0]}
	other := good
	other.Node = "bob"
	tests := []struct {
		what, name, data string
		ok               bool
	}{
		{"node record", "nodes/alice/node.json", `{"name":"alice","created":"2026-01-01T00:00:00Z"}`, true},
		{"node record of another node", "nodes/alice/node.json", `{"name":"bob","created":"2026-01-01T00:00:00Z"}`, false},
		{"node record with junk", "nodes/alice/node.json", `{"name":"alice"} trailing`, false},
		{"lease", "nodes/alice/lease/00000000000000000003", `{"node":"alice","owner":"o","host":"h","pid":1,"acquired":"2026-01-01T00:00:00Z","expires":"2026-01-01T00:01:00Z","gen":3}`, true},
		{"lease of another generation", "nodes/alice/lease/00000000000000000003", `{"node":"alice","gen":4}`, false},
		{"lease with unknown fields", "nodes/alice/lease/00000000000000000003", `{"node":"alice","gen":3,"x":1}`, false},
		{"manifest", "nodes/alice/manifests/00000000000000000001", enc(good), true},
		{"manifest at another seq", "nodes/alice/manifests/00000000000000000002", enc(good), false},
		{"manifest of another node", "nodes/alice/manifests/00000000000000000001", enc(other), false},
		{"manifest naming a missing chunk", "nodes/alice/manifests/00000000000000000001", enc(missing), false},
		{"manifest naming a page as a list", "nodes/alice/manifests/00000000000000000001", enc(wrongKind), false},
		{"garbage manifest", "nodes/alice/manifests/00000000000000000001", "garbage", false},
		{"object the layout does not have", "nodes/alice/junk", "x", false},
		{"journal file", "nodes/alice/journal/0000000000000001.seg", "x", false},
	}
	for _, tc := range tests {
		err := st.CheckNodeObject(ctx, tc.name, []byte(tc.data))
		if (err == nil) != tc.ok {
			t.Errorf("%s: CheckNodeObject(%s) = %v, want ok %v", tc.what, tc.name, err, tc.ok)
		} else if err != nil {
			t.Logf("%s: %v", tc.what, err)
		}
	}
}

// FuzzCheckNodeObject: whatever name and bytes a node's client puts, the
// check never panics, and what it accepts is an object of the layout that
// the store's readers decode.
func FuzzCheckNodeObject(f *testing.F) {
	f.Add("nodes/alice/node.json", []byte(`{"name":"alice","created":"2026-01-01T00:00:00Z"}`))
	f.Add("nodes/alice/lease/00000000000000000003", []byte(`{"node":"alice","gen":3}`))
	f.Add("nodes/alice/manifests/00000000000000000001", []byte("clnbackup-manifest 1\n{}\nblake3 00\n"))
	f.Add("nodes/alice/junk", []byte("x"))
	dir := f.TempDir()
	st, _, err := Create(ctx, "file://"+dir, Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		if err := st.CheckNodeObject(ctx, name, data); err != nil {
			return
		}
		node, kind, seq, err := ParseNodeObject(name)
		if err != nil {
			t.Fatalf("accepted %q, which the layout refuses: %v", name, err)
		}
		if kind == NodeManifest {
			m, err := manifest.Decode(data)
			if err != nil || m.Node != node || m.Seq != seq {
				t.Fatalf("accepted manifest %q that readers refuse: %v", name, err)
			}
		}
	})
}
