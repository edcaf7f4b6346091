package remote

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/journal"
)

// golden is one message as docs/remote-protocol.md spells it: a value and
// the bytes the doc prescribes for it, written out by hand (not with enc),
// so a change of layout fails here instead of between two releases.
type golden struct {
	name   string
	typ    byte // the frame that carries it
	msg    message
	decode func([]byte) (message, error)
	want   []byte
}

// decodeAs adapts a decoder to golden's decode.
func decodeAs[M message](fn func([]byte) (M, error)) func([]byte) (message, error) {
	return func(p []byte) (message, error) { return fn(p) }
}

// cat joins hand-written pieces of a payload.
func cat(parts ...string) []byte { return []byte(strings.Join(parts, "")) }

// Pieces of golden payloads.
const (
	// t1 is the time of golden messages as i64 Unix nanoseconds.
	t1 = "\x01\x02\x03\x04\x05\x06\x07\x08"
	// noTime is the i64 min that stands for no time.
	noTime = "\x80\x00\x00\x00\x00\x00\x00\x00"
)

// goldenTime is t1 as a time.Time.
var goldenTime = time.Unix(0, 0x0102030405060708)

// Chunk ids of golden messages, as values and as their 32 raw bytes.
var (
	idA, idAWire = goldenID(0xaa)
	idB, idBWire = goldenID(0xbb)
)

func goldenID(b byte) (chunker.ID, string) {
	var id chunker.ID
	for i := range id {
		id[i] = b
	}
	return id, strings.Repeat(string([]byte{b}), len(id))
}

// goldenMessages lists every message layout: requests by their frame
// type, then the replies that carry data.
func goldenMessages() []golden {
	var out []golden
	out = append(out, handshakeGolden()...)
	out = append(out, objectGolden()...)
	out = append(out, chunkGolden()...)
	out = append(out, journalGolden()...)
	return out
}

func handshakeGolden() []golden {
	return []golden{
		{"hello", msgHello, hello{Magic: magic, Version: 1, Token: "tok", Client: "cli"}, decodeAs(decodeHello),
			cat("CLNBSTOR", "\x00\x01", "\x00\x00\x00\x03tok", "\x00\x00\x00\x03cli")},
		{"hello-ok", msgHelloOK, helloOK{Version: 1, Admin: false, Label: "lbl", Nodes: []string{"a", "bc"}}, decodeAs(decodeHelloOK),
			cat("CLNBSTOR", "\x00\x01", "\x00", "\x00\x00\x00\x03lbl", "\x00\x02", "\x00\x00\x00\x01a", "\x00\x00\x00\x02bc")},
		{"hello-ok admin", msgHelloOK, helloOK{Version: 1, Admin: true}, decodeAs(decodeHelloOK),
			cat("CLNBSTOR", "\x00\x01", "\x01", "\x00\x00\x00\x00", "\x00\x00")},
		{"error", msgError, errorReply{Code: codeDenied, Msg: "no"}, decodeAs(decodeErrorReply),
			cat("\x03", "\x00\x00\x00\x02no")},
	}
}

func objectGolden() []golden {
	return []golden{
		{"put", msgPut, putRequest{Name: "config", Size: 0x0102}, decodeAs(decodePutRequest),
			cat("\x00\x00\x00\x06config", "\x00\x00\x00\x00\x00\x00\x01\x02")},
		{"get", msgGet, getRequest{Name: "a/b", Off: 5, Length: -1}, decodeAs(decodeGetRequest),
			cat("\x00\x00\x00\x03a/b", "\x00\x00\x00\x00\x00\x00\x00\x05", "\xff\xff\xff\xff\xff\xff\xff\xff")},
		{"quota ok", msgOK, quotaReply{Limit: 0x0a, Referenced: 3, Added: -1, Counted: true, CountedAt: goldenTime}, decodeAs(decodeQuotaReply),
			cat("\x00\x00\x00\x00\x00\x00\x00\x0a", "\x00\x00\x00\x00\x00\x00\x00\x03", "\xff\xff\xff\xff\xff\xff\xff\xff", "\x01", t1)},
		{"stat", msgStat, nameRequest{Name: "a/b"}, decodeAs(decodeNameRequest),
			cat("\x00\x00\x00\x03a/b")},
		{"stat ok", msgOK, statReply{Info: backend.Info{Name: "a/b", Size: 7, ModTime: goldenTime}}, decodeAs(decodeStatReply),
			cat("\x00\x00\x00\x03a/b", "\x00\x00\x00\x00\x00\x00\x00\x07", t1)},
		{"stat ok without time", msgOK, statReply{Info: backend.Info{Name: "a", Size: 0}}, decodeAs(decodeStatReply),
			cat("\x00\x00\x00\x01a", "\x00\x00\x00\x00\x00\x00\x00\x00", noTime)},
		{"list", msgList, listRequest{Prefix: "nodes/", After: "nodes/a"}, decodeAs(decodeListRequest),
			cat("\x00\x00\x00\x06nodes/", "\x00\x00\x00\x07nodes/a")},
		{"delete", msgDelete, nameRequest{Name: "x"}, decodeAs(decodeNameRequest),
			cat("\x00\x00\x00\x01x")},
		{"items", msgItems, itemsReply{Items: []backend.Info{{Name: "a", Size: 1, ModTime: goldenTime}, {Name: "b", Size: 2}}}, decodeAs(decodeItemsReply),
			cat("\x00\x00\x00\x02",
				"\x00\x00\x00\x01a", "\x00\x00\x00\x00\x00\x00\x00\x01", t1,
				"\x00\x00\x00\x01b", "\x00\x00\x00\x00\x00\x00\x00\x02", noTime)},
		{"items empty", msgItems, itemsReply{}, decodeAs(decodeItemsReply),
			cat("\x00\x00\x00\x00")},
	}
}

func chunkGolden() []golden {
	return []golden{
		{"missing", msgMissing, idsRequest{IDs: []chunker.ID{idA, idB}}, decodeAs(decodeIDsRequest),
			cat("\x00\x00\x00\x02", idAWire, idBWire)},
		{"missing ok", msgOK, missingReply{Missing: []bool{true, false, true}}, decodeAs(decodeMissingReply),
			cat("\x00\x00\x00\x03", "\x01\x00\x01")},
		{"put-bodies", msgPutBodies, putBodiesRequest{Bodies: []chunk.Body{
			{ID: idA, Kind: chunk.KindPage, Raw: 4096, Body: []byte("zst")},
			{ID: idB, Kind: chunk.KindPage, Raw: 4096, Base: idA, Body: []byte("d")},
		}}, decodeAs(decodePutBodiesRequest),
			cat("\x00\x00\x00\x02",
				idAWire, "\x01", "\x00\x00\x10\x00", "\x00\x00\x00\x03zst",
				idBWire, "\x81", idAWire, "\x00\x00\x10\x00", "\x00\x00\x00\x01d")},
		{"put-bodies ok", msgOK, putBodiesReply{Added: 0x0a0b}, decodeAs(decodePutBodiesReply),
			cat("\x00\x00\x00\x00\x00\x00\x0a\x0b")},
		{"read-bodies", msgReadBodies, idsRequest{IDs: []chunker.ID{idB}}, decodeAs(decodeIDsRequest),
			cat("\x00\x00\x00\x01", idBWire)},
		{"body", msgBody, bodyReply{Body: chunk.Body{ID: idB, Kind: chunk.KindList, Raw: 9, Body: []byte("zz")}}, decodeAs(decodeBodyReply),
			cat(idBWire, "\x02", "\x00\x00\x00\x09", "\x00\x00\x00\x02zz")},
		{"body delta", msgBody, bodyReply{Body: chunk.Body{ID: idB, Kind: chunk.KindPage, Raw: 4096, Base: idA, Body: []byte("d")}}, decodeAs(decodeBodyReply),
			cat(idBWire, "\x81", idAWire, "\x00\x00\x10\x00", "\x00\x00\x00\x01d")},
	}
}

// goldenRecord is a journal record of golden messages, recordWire its
// bytes.
var goldenRecord = journal.Record{Seq: 3, Version: 9, Time: goldenTime, Statements: []string{"INSERT 1", ""}}

const recordWire = "\x00\x00\x00\x00\x00\x00\x00\x03" + // u64 seq
	"\x00\x00\x00\x09" + // u32 version
	t1 + // time
	"\x00\x00\x00\x02" + // u32 n
	"\x00\x00\x00\x08INSERT 1" + "\x00\x00\x00\x00" // n × str

func journalGolden() []golden {
	return []golden{
		{"journal-open", msgJOpen, nodeRequest{Node: "alice"}, decodeAs(decodeNodeRequest),
			cat("\x00\x00\x00\x05alice")},
		{"journal-open ok", msgOK, journalStateReply{NextSeq: 4, Size: 0x100, Recovered: 2, HasLast: true, Last: goldenRecord}, decodeAs(decodeJournalStateReply),
			cat("\x00\x00\x00\x00\x00\x00\x00\x04", "\x00\x00\x00\x00\x00\x00\x01\x00", "\x00\x00\x00\x00\x00\x00\x00\x02", "\x01", recordWire)},
		{"journal-open ok empty", msgOK, journalStateReply{NextSeq: 1}, decodeAs(decodeJournalStateReply),
			cat("\x00\x00\x00\x00\x00\x00\x00\x01", "\x00\x00\x00\x00\x00\x00\x00\x00", "\x00\x00\x00\x00\x00\x00\x00\x00", "\x00")},
		{"journal-append", msgJAppend, journalWriteRequest{Node: "alice", Expected: 3, Record: goldenRecord}, decodeAs(decodeJournalWriteRequest),
			cat("\x00\x00\x00\x05alice", "\x00\x00\x00\x00\x00\x00\x00\x03", recordWire)},
		{"journal-replace", msgJReplace, journalWriteRequest{Node: "a", Expected: 7, Record: journal.Record{Seq: 0, Version: 1}}, decodeAs(decodeJournalWriteRequest),
			cat("\x00\x00\x00\x01a", "\x00\x00\x00\x00\x00\x00\x00\x07",
				"\x00\x00\x00\x00\x00\x00\x00\x00", "\x00\x00\x00\x01", noTime, "\x00\x00\x00\x00")},
		{"journal-append ok", msgOK, journalWriteReply{Seq: 3, Time: goldenTime, NextSeq: 4, Size: 0x200}, decodeAs(decodeJournalWriteReply),
			cat("\x00\x00\x00\x00\x00\x00\x00\x03", t1, "\x00\x00\x00\x00\x00\x00\x00\x04", "\x00\x00\x00\x00\x00\x00\x02\x00")},
		{"journal-records", msgJRecords, journalReadRequest{Node: "alice", After: 2}, decodeAs(decodeJournalReadRequest),
			cat("\x00\x00\x00\x05alice", "\x00\x00\x00\x00\x00\x00\x00\x02")},
		{"journal-read", msgJRead, journalReadRequest{Node: "bob", After: 0}, decodeAs(decodeJournalReadRequest),
			cat("\x00\x00\x00\x03bob", "\x00\x00\x00\x00\x00\x00\x00\x00")},
		{"record", msgRecord, recordReply{Record: goldenRecord}, decodeAs(decodeRecordReply),
			cat(recordWire)},
		{"journal-trim", msgJTrim, journalTrimRequest{Node: "alice", Upto: 0x0102}, decodeAs(decodeJournalTrimRequest),
			cat("\x00\x00\x00\x05alice", "\x00\x00\x00\x00\x00\x00\x01\x02")},
		{"journal-trim ok", msgOK, journalTrimReply{Size: 0x0300}, decodeAs(decodeJournalTrimReply),
			cat("\x00\x00\x00\x00\x00\x00\x03\x00")},
		{"journal-close", msgJClose, nodeRequest{Node: "alice"}, decodeAs(decodeNodeRequest),
			cat("\x00\x00\x00\x05alice")},
		{"journal-start", msgJStart, journalStartRequest{Node: "alice", FirstSeq: 0x0193, Owner: "0123456789abcdef"}, decodeAs(decodeJournalStartRequest),
			cat("\x00\x00\x00\x05alice", "\x00\x00\x00\x00\x00\x00\x01\x93", "\x00\x00\x00\x100123456789abcdef")},
	}
}

// TestMessagesGolden: every message encodes to the bytes of the protocol
// doc, decodes back to itself, and is refused with a byte more or less.
func TestMessagesGolden(t *testing.T) {
	for _, g := range goldenMessages() {
		t.Run(g.name, func(t *testing.T) {
			if len(g.want) > frameLimit(g.typ) {
				t.Fatalf("%d bytes do not fit in a %s frame", len(g.want), msgName(g.typ))
			}
			if got := encode(g.msg); !bytes.Equal(got, g.want) {
				t.Fatalf("encoded\n%q\nwant\n%q", got, g.want)
			}
			got, err := g.decode(g.want)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, g.msg) {
				t.Fatalf("decoded %+v, want %+v", got, g.msg)
			}
			if _, err := g.decode(append(bytes.Clone(g.want), 0)); !errors.Is(err, errMalformed) {
				t.Fatalf("a trailing byte: %v", err)
			}
			for n := range len(g.want) {
				if _, err := g.decode(g.want[:n]); !errors.Is(err, errMalformed) {
					t.Fatalf("the first %d of %d bytes: %v", n, len(g.want), err)
				}
			}
		})
	}
}

// TestDecodeLimits: the decoders hold strings and counts to the limits of
// the protocol (at the limit and one past it) and refuse counts the
// payload cannot hold, before allocating.
func TestDecodeLimits(t *testing.T) {
	str := func(n int) string { return string(encode(nameRequest{Name: strings.Repeat("n", n)})) }
	for _, c := range []struct {
		name   string
		decode func([]byte) (message, error)
		p      []byte
		// refused is part of the error, or "" when p is accepted.
		refused string
	}{
		{"name at the limit", decodeAs(decodeNameRequest), cat(str(maxNameLen)), ""},
		{"name over the limit", decodeAs(decodeNameRequest), cat(str(maxNameLen + 1)), "string of 1025 bytes exceeds 1024"},
		{"put name over the limit", decodeAs(decodePutRequest), cat(str(maxNameLen+1), "\x00\x00\x00\x00\x00\x00\x00\x00"), "exceeds 1024"},
		{"list after over the limit", decodeAs(decodeListRequest), cat(str(0), str(maxNameLen+1)), "exceeds 1024"},
		{"bool 2", decodeAs(decodeHelloOK), cat("CLNBSTOR", "\x00\x01", "\x02", "\x00\x00\x00\x00", "\x00\x00"), "bool"},
		{"items count beyond the payload", decodeAs(decodeItemsReply), cat("\x00\x00\x00\x02", "\x00\x00\x00\x01a", "\x00\x00\x00\x00\x00\x00\x00\x01", t1), "list page of 2 entries"},
		{"items count huge", decodeAs(decodeItemsReply), cat("\xff\xff\xff\xff"), "list page of 4294967295 entries"},
		{"ids at the limit", decodeAs(decodeIDsRequest), cat("\x00\x01\x00\x00", strings.Repeat(idAWire, maxIDsPerRequest)), ""},
		{"ids over the limit", decodeAs(decodeIDsRequest), cat("\x00\x01\x00\x01", strings.Repeat(idAWire, maxIDsPerRequest+1)), "65537 chunk ids"},
		{"ids beyond the payload", decodeAs(decodeIDsRequest), cat("\x00\x00\x00\x02", idAWire), "2 chunk ids"},
		{"missing answers over the limit", decodeAs(decodeMissingReply), cat("\x00\x01\x00\x01", strings.Repeat("\x00", maxIDsPerRequest+1)), "65537 answers"},
		{"missing answer 2", decodeAs(decodeMissingReply), cat("\x00\x00\x00\x01", "\x02"), "bool"},
		{"bodies beyond the payload", decodeAs(decodePutBodiesRequest), cat("\x00\x00\x00\x02", idAWire, "\x01", "\x00\x00\x00\x01", "\x00\x00\x00\x00"), "2 bodies do not fit"},
		{"delta body with a zero base", decodeAs(decodeBodyReply), cat(idBWire, "\x81", strings.Repeat("\x00", 32), "\x00\x00\x00\x01", "\x00\x00\x00\x00"), "zero base id"},
		{"body bytes over the limit", decodeAs(decodeBodyReply), cat(idBWire, "\x01", "\x00\x00\x00\x01", "\x04\x01\x00\x01"), "exceeds 67174400"},
		{"node at the limit", decodeAs(decodeNodeRequest), cat(str(maxNodeLen)), ""},
		{"node over the limit", decodeAs(decodeNodeRequest), cat(str(maxNodeLen + 1)), "string of 257 bytes exceeds 256"},
		{"append node over the limit", decodeAs(decodeJournalWriteRequest), cat(str(maxNodeLen+1), "\x00\x00\x00\x00\x00\x00\x00\x00", recordWire), "exceeds 256"},
		{"statements beyond the payload", decodeAs(decodeRecordReply), cat(recordWire[:20], "\x00\x00\x00\x03", "\x00\x00\x00\x00", "\x00\x00\x00\x00"), "statement count 3"},
		{"statements over the count limit", decodeAs(decodeRecordReply), cat(recordWire[:20], "\x00\x10\x00\x01", strings.Repeat("\x00\x00\x00\x00", maxRecordStatements+1)), "statement count 1048577 exceeds"},
		{"statements at the count limit", decodeAs(decodeRecordReply), cat(recordWire[:20], "\x00\x10\x00\x00", strings.Repeat("\x00\x00\x00\x00", maxRecordStatements)), ""},
		{"statement over the limit", decodeAs(decodeRecordReply), cat(recordWire[:20], "\x00\x00\x00\x01", "\x04\x00\x00\x01"), "exceeds 67108864"},
		{"owner at the limit", decodeAs(decodeJournalStartRequest), cat(str(1), "\x00\x00\x00\x00\x00\x00\x00\x01", str(maxOwnerLen)), ""},
		{"owner over the limit", decodeAs(decodeJournalStartRequest), cat(str(1), "\x00\x00\x00\x00\x00\x00\x00\x01", str(maxOwnerLen+1)), "string of 65 bytes exceeds 64"},
		{"has last 2", decodeAs(decodeJournalStateReply), cat(strings.Repeat("\x00", 24), "\x02"), "bool"},
		{"hello token over the limit", decodeAs(decodeHello), cat("CLNBSTOR", "\x00\x01", "\x00\x00\x10\x01"+strings.Repeat("t", MaxHandshakeFrame+1), "\x00\x00\x00\x00"), "exceeds 4096"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.decode(c.p)
			switch {
			case c.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.refused != "" && (!errors.Is(err, errMalformed) || !strings.Contains(err.Error(), c.refused)):
				t.Fatalf("got %v, want a refusal for %q", err, c.refused)
			}
		})
	}
}

// TestDecodeAllocationBounded: no decoder allocates much more than its
// payload holds, whatever the counts in it claim.
func TestDecodeAllocationBounded(t *testing.T) {
	payloads := [][]byte{
		cat("\xff\xff\xff\xff"), // a count, nothing to count
		cat("\x00\x01\x00\x00", idAWire),
		cat("CLNBSTOR", "\x00\x01", "\x00", "\x00\x00\x00\x00", "\xff\xff"), // 65535 nodes
		cat(recordWire[:20], "\xff\xff\xff\xff"),
		cat(strings.Repeat("\x00", 24), "\x01", recordWire[:20], "\x00\x10\x00\x00", strings.Repeat("\x00", 64)),
		cat("\x00\x00\x10\x00", idAWire, "\x01", "\x00\x00\x00\x01", "\x00\x00\x00\x00"),
	}
	for _, g := range goldenMessages() {
		payloads = append(payloads, g.want)
	}
	for i, p := range payloads {
		for j, decode := range decoders {
			got := allocated(func() { decode(p) })
			if limit := 10*uint64(len(p)) + 1024; got > limit {
				t.Errorf("payload %d (%d bytes), decoder %d: %d bytes allocated, more than %d", i, len(p), j, got, limit)
			}
		}
	}
}

// allocated returns the bytes fn allocates: the least of a few averages,
// so that what other goroutines allocate meanwhile does not count.
func allocated(fn func()) uint64 {
	const runs = 20
	least := uint64(math.MaxUint64)
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range runs {
			fn()
		}
		runtime.ReadMemStats(&after)
		least = min(least, (after.TotalAlloc-before.TotalAlloc)/runs)
	}
	return least
}
