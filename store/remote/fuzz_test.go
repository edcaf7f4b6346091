package remote

import (
	"bufio"
	"bytes"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/journal"
)

func seedFrames() [][]byte {
	var out [][]byte
	add := func(typ byte, p []byte) {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		writeFrame(w, typ, p)
		w.Flush()
		out = append(out, b.Bytes())
	}
	add(msgHello, encode(hello{Magic: magic, Version: ProtocolVersion, Token: tokAlice, Client: "fuzz"}))
	add(msgHelloOK, encode(helloOK{Version: 1, Label: "x", Nodes: []string{"a", "b"}}))
	var e enc
	e.str("nodes/a/node.json")
	e.i64(0)
	e.i64(-1)
	add(msgGet, e.b)
	e = enc{}
	e.str("a")
	e.u64(7)
	e.record(journal.Record{Seq: 3, Version: 9, Time: time.Unix(5, 6), Statements: []string{"INSERT", ""}})
	add(msgJAppend, e.b)
	e = enc{}
	e.u32(1)
	e.body(store.ChunkBody{ID: chunker.Sum([]byte("x")), Kind: store.KindPage, Raw: 1, Body: []byte("zz")})
	add(msgPutBodies, e.b)
	// A delta body (a version-2 store's read-bodies answer): base id after
	// the kind.
	e = enc{}
	e.body(store.ChunkBody{ID: chunker.Sum([]byte("y")), Kind: store.KindPage, Raw: 1, Base: chunker.Sum([]byte("x")), Body: []byte("zz")})
	add(msgBody, e.b)
	e = enc{}
	e.u32(1)
	e.body(store.ChunkBody{ID: chunker.Sum([]byte("y")), Kind: store.KindPage, Raw: 1, Base: chunker.Sum([]byte("x")), Body: []byte("zz")})
	add(msgPutBodies, e.b)
	add(msgError, encodeError(codeDenied, "no"))
	out = append(out, []byte{msgJAppend, 0xff, 0xff, 0xff, 0xff}, []byte{0x77, 0, 0, 0, 1, 0})
	return out
}

// FuzzFrame: reading frames from arbitrary bytes never panics, never
// allocates beyond what the input holds, and every decoder survives any
// payload.
func FuzzFrame(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			typ, p, err := readFrame(r, frameLimit, nil)
			if err != nil {
				return
			}
			if len(p) > len(data) {
				t.Fatalf("payload of %d bytes from %d input bytes", len(p), len(data))
			}
			decodeAny(typ, p)
		}
	})
}

// FuzzDecode runs every message decoder on arbitrary payloads.
func FuzzDecode(f *testing.F) {
	for _, s := range seedFrames() {
		if len(s) >= frameHeaderSize {
			f.Add(s[0], s[frameHeaderSize:])
		}
	}
	f.Fuzz(func(t *testing.T, typ byte, p []byte) {
		decodeAny(typ, p)
	})
}

// decodeAny decodes p as the server and the client would.
func decodeAny(typ byte, p []byte) {
	decodeHello(p)
	decodeHelloOK(p)
	decodeError(p)
	d := dec{b: p}
	switch typ % 8 {
	case 0:
		d.str(1024)
		d.i64()
		d.i64()
	case 1:
		d.ids()
	case 2:
		n := d.u32()
		for i := uint32(0); i < n && d.err == nil; i++ {
			d.body()
		}
	case 3:
		d.str(256)
		d.u64()
		d.record()
	case 4:
		_ = d.info()
	case 5:
		d.u64()
		d.i64()
		d.i64()
		if d.bool() {
			d.record()
		}
	case 6:
		d.record()
	case 7:
		var in backend.Info
		in = d.info()
		_ = in
	}
	d.done()
}

// TestBodyFrameBase: a body frame carries a delta's base id, and one
// without a base stays as it was (id, kind, raw, bytes).
func TestBodyFrameBase(t *testing.T) {
	for _, b := range []store.ChunkBody{
		{ID: chunker.Sum([]byte("y")), Kind: store.KindPage, Raw: 4096, Body: []byte("full")},
		{ID: chunker.Sum([]byte("y")), Kind: store.KindPage, Raw: 4096, Base: chunker.Sum([]byte("x")), Body: []byte("delta")},
	} {
		var e enc
		e.body(b)
		if want := 32 + 1 + 4 + 4 + len(b.Body); b.Base == (chunker.ID{}) && len(e.b) != want {
			t.Fatalf("full body frame of %d bytes, want %d", len(e.b), want)
		}
		d := dec{b: e.b}
		got := d.body()
		if err := d.done(); err != nil || got.ID != b.ID || got.Kind != b.Kind || got.Raw != b.Raw || got.Base != b.Base || !bytes.Equal(got.Body, b.Body) {
			t.Fatalf("round trip: %v %+v", err, got)
		}
	}
	// A delta flag with a zero base is refused.
	var e enc
	e.id(chunker.Sum([]byte("y")))
	e.u8(byte(store.KindPage) | bodyDelta)
	e.id(chunker.ID{})
	e.u32(1)
	e.bytes([]byte("z"))
	d := dec{b: e.b}
	d.body()
	if d.done() == nil {
		t.Fatal("zero base accepted")
	}
}
