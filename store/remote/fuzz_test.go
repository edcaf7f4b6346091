package remote

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/chunk"
)

// seedFrames are a frame of every message of the protocol doc, and a few
// broken ones.
func seedFrames() [][]byte {
	var out [][]byte
	for _, g := range goldenMessages() {
		var b bytes.Buffer
		w := bufio.NewWriter(&b)
		writeFrame(w, g.typ, g.want)
		w.Flush()
		out = append(out, b.Bytes())
	}
	return append(out, []byte{msgJAppend, 0xff, 0xff, 0xff, 0xff}, []byte{0x77, 0, 0, 0, 1, 0})
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
			_, p, err := readFrame(r, frameLimit, nil)
			if err != nil {
				return
			}
			if len(p) > len(data) {
				t.Fatalf("payload of %d bytes from %d input bytes", len(p), len(data))
			}
			decodeAny(p)
		}
	})
}

// FuzzDecode runs every message decoder on arbitrary payloads.
func FuzzDecode(f *testing.F) {
	for _, g := range goldenMessages() {
		f.Add(g.typ, g.want)
	}
	f.Fuzz(func(t *testing.T, typ byte, p []byte) {
		decodeAny(p)
	})
}

// decoders are every message decoder.
var decoders = []func([]byte) (message, error){
	decodeAs(decodeHello), decodeAs(decodeHelloOK), decodeAs(decodeErrorReply),
	decodeAs(decodePutRequest), decodeAs(decodeGetRequest), decodeAs(decodeNameRequest),
	decodeAs(decodeStatReply), decodeAs(decodeListRequest), decodeAs(decodeItemsReply),
	decodeAs(decodeIDsRequest), decodeAs(decodeMissingReply), decodeAs(decodePutBodiesRequest),
	decodeAs(decodePutBodiesReply), decodeAs(decodeBodyReply),
	decodeAs(decodeNodeRequest), decodeAs(decodeJournalStateReply), decodeAs(decodeJournalWriteRequest),
	decodeAs(decodeJournalWriteReply), decodeAs(decodeJournalReadRequest), decodeAs(decodeRecordReply),
	decodeAs(decodeJournalTrimRequest), decodeAs(decodeJournalTrimReply),
	decodeAs(decodeQuotaReply), decodeAs(decodeJournalStartRequest),
}

// decodeAny decodes p as every message the server or the client reads.
func decodeAny(p []byte) {
	for _, decode := range decoders {
		decode(p)
	}
	decodeError(p)
}

// fuzzDecoder checks one decoder on arbitrary payloads, seeded with the
// golden encodings of its message: it never panics, refuses with
// errMalformed, and what it accepts re-encodes to the same bytes (every
// message has one encoding) and decodes back equal.
func fuzzDecoder[M message](f *testing.F, decode func([]byte) (M, error)) {
	for _, g := range goldenMessages() {
		if _, ok := g.msg.(M); ok {
			f.Add(g.want)
		}
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		m, err := decode(p)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("refused without errMalformed: %v", err)
			}
			return
		}
		again := encode(m)
		if canonical(m) && !bytes.Equal(again, p) {
			t.Fatalf("decoded %+v from\n%q\nwhich encodes as\n%q", m, p, again)
		}
		m2, err := decode(again)
		if err != nil {
			t.Fatalf("%+v re-encoded does not decode: %v", m, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("decoded %+v, re-encoded and decoded %+v", m, m2)
		}
	})
}

// canonical reports whether m's decoder reads all of its payload: every
// message but a hello of another version, whose rest is left unread.
func canonical(m message) bool {
	h, ok := m.(hello)
	return !ok || h.Version == ProtocolVersion
}

// One fuzz target per decoder: go test -fuzz runs one target at a time.
func FuzzDecodeHello(f *testing.F)               { fuzzDecoder(f, decodeHello) }
func FuzzDecodeHelloOK(f *testing.F)             { fuzzDecoder(f, decodeHelloOK) }
func FuzzDecodeErrorReply(f *testing.F)          { fuzzDecoder(f, decodeErrorReply) }
func FuzzDecodePutRequest(f *testing.F)          { fuzzDecoder(f, decodePutRequest) }
func FuzzDecodeGetRequest(f *testing.F)          { fuzzDecoder(f, decodeGetRequest) }
func FuzzDecodeNameRequest(f *testing.F)         { fuzzDecoder(f, decodeNameRequest) }
func FuzzDecodeStatReply(f *testing.F)           { fuzzDecoder(f, decodeStatReply) }
func FuzzDecodeListRequest(f *testing.F)         { fuzzDecoder(f, decodeListRequest) }
func FuzzDecodeItemsReply(f *testing.F)          { fuzzDecoder(f, decodeItemsReply) }
func FuzzDecodeIDsRequest(f *testing.F)          { fuzzDecoder(f, decodeIDsRequest) }
func FuzzDecodeMissingReply(f *testing.F)        { fuzzDecoder(f, decodeMissingReply) }
func FuzzDecodePutBodiesRequest(f *testing.F)    { fuzzDecoder(f, decodePutBodiesRequest) }
func FuzzDecodePutBodiesReply(f *testing.F)      { fuzzDecoder(f, decodePutBodiesReply) }
func FuzzDecodeBodyReply(f *testing.F)           { fuzzDecoder(f, decodeBodyReply) }
func FuzzDecodeNodeRequest(f *testing.F)         { fuzzDecoder(f, decodeNodeRequest) }
func FuzzDecodeJournalStateReply(f *testing.F)   { fuzzDecoder(f, decodeJournalStateReply) }
func FuzzDecodeJournalWriteRequest(f *testing.F) { fuzzDecoder(f, decodeJournalWriteRequest) }
func FuzzDecodeJournalWriteReply(f *testing.F)   { fuzzDecoder(f, decodeJournalWriteReply) }
func FuzzDecodeJournalReadRequest(f *testing.F)  { fuzzDecoder(f, decodeJournalReadRequest) }
func FuzzDecodeRecordReply(f *testing.F)         { fuzzDecoder(f, decodeRecordReply) }
func FuzzDecodeJournalTrimRequest(f *testing.F)  { fuzzDecoder(f, decodeJournalTrimRequest) }
func FuzzDecodeJournalTrimReply(f *testing.F)    { fuzzDecoder(f, decodeJournalTrimReply) }
func FuzzDecodeQuotaReply(f *testing.F)          { fuzzDecoder(f, decodeQuotaReply) }
func FuzzDecodeJournalStartRequest(f *testing.F) { fuzzDecoder(f, decodeJournalStartRequest) }

// TestBodyFrameBase: a body frame carries a delta's base id, and one
// without a base stays as it was (id, kind, raw, bytes).
func TestBodyFrameBase(t *testing.T) {
	for _, b := range []chunk.Body{
		{ID: chunker.Sum([]byte("y")), Kind: chunk.KindPage, Raw: 4096, Body: []byte("full")},
		{ID: chunker.Sum([]byte("y")), Kind: chunk.KindPage, Raw: 4096, Base: chunker.Sum([]byte("x")), Body: []byte("delta")},
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
	e.u8(byte(chunk.KindPage) | bodyDelta)
	e.id(chunker.ID{})
	e.u32(1)
	e.bytes([]byte("z"))
	d := dec{b: e.b}
	d.body()
	if d.done() == nil {
		t.Fatal("zero base accepted")
	}
}

// FuzzPeekJournalWriteNode: the node the server checks before decoding a
// journal write is the node of the write it then decodes.
func FuzzPeekJournalWriteNode(f *testing.F) {
	for _, g := range goldenMessages() {
		f.Add(g.want)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		node, perr := peekJournalWriteNode(p)
		req, err := decodeJournalWriteRequest(p)
		if err == nil && (perr != nil || node != req.Node) {
			t.Fatalf("peek gave node %q (%v), the request decodes with node %q", node, perr, req.Node)
		}
	})
}
