package packs

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/journal"
)

// TestPutBodies: what a store server does with a client's bodies. Bodies
// the store lacks are checked and stored once; bodies it holds, or repeated,
// are skipped without being decompressed (a garbage body under a stored id
// costs nothing); a request declaring more than a chunk's or a request's
// limit is refused before any work; a body whose content denies its kind is
// refused; a cancelled request stores nothing.
func TestPutBodies(t *testing.T) {
	t.Parallel()
	p := newTestPacks(t, nil)
	// The formats' check, as the store hands it down.
	p.checkContent = func(k chunk.Kind, data []byte) error {
		var err error
		switch k {
		case chunk.KindList:
			_, err = manifest.DecodeList(data)
		case chunk.KindChange:
			_, err = journal.DecodeChunk(data)
		}
		return err
	}
	stored := putPack(t, p, 7, 1)[0]
	enc, err := p.codec.Encoder()
	if err != nil {
		t.Fatal(err)
	}
	defer p.codec.PutEncoder(enc)
	body := func(kind chunk.Kind, data []byte) chunk.Body {
		return chunk.Body{ID: chunker.Sum(data), Kind: kind, Raw: uint32(len(data)), Body: enc.EncodeAll(data, nil)}
	}
	page := func(seed byte) chunk.Body { return body(chunk.KindPage, bytes.Repeat([]byte{seed, 'p'}, 2048)) }
	list := manifest.EncodeList([]chunker.ID{stored})
	change := journal.EncodeChunk([]journal.Record{{Seq: 1, Version: 1, Statements: []string{"UPDATE vars SET intval=1;"}}})
	garbage := chunk.Body{ID: stored, Kind: chunk.KindPage, Raw: 6000, Body: []byte("not zstd")}
	hugeStored := chunk.Body{ID: stored, Kind: chunk.KindPage, Raw: chunk.MaxSize, Body: []byte("x")}
	huge := func(id byte) chunk.Body {
		return chunk.Body{ID: chunker.ID{id}, Kind: chunk.KindPage, Raw: chunk.MaxSize, Body: []byte("x")}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		bodies  []chunk.Body
		want    error // nil: stored
		stored  []int // bodies that must be stored afterwards
		noWrite bool  // nothing added
	}{
		{name: "new page", bodies: []chunk.Body{page(1)}, stored: []int{0}},
		{name: "repeated page stored once", bodies: []chunk.Body{page(2), page(2), page(2)}, stored: []int{0}},
		{name: "repeats do not count against the request limit", bodies: []chunk.Body{hugeStored, hugeStored, hugeStored, hugeStored, hugeStored}, noWrite: true},
		{name: "garbage under a stored id skipped", bodies: []chunk.Body{garbage}, noWrite: true},
		{name: "list and change chunks", bodies: []chunk.Body{body(chunk.KindList, list), body(chunk.KindChange, change)}, stored: []int{0, 1}},
		{name: "a page declared a list", bodies: []chunk.Body{{ID: page(3).ID, Kind: chunk.KindList, Raw: page(3).Raw, Body: page(3).Body}}, want: chunk.ErrBad},
		{name: "a page declared a change", bodies: []chunk.Body{{ID: page(4).ID, Kind: chunk.KindChange, Raw: page(4).Raw, Body: page(4).Body}}, want: chunk.ErrBad},
		{name: "a list declared a page is still a page", bodies: []chunk.Body{body(chunk.KindPage, manifest.EncodeList([]chunker.ID{{9}}))}, stored: []int{0}},
		{name: "over the chunk limit", bodies: []chunk.Body{{ID: chunker.ID{1}, Kind: chunk.KindPage, Raw: chunk.MaxSize + 1, Body: []byte("x")}}, want: chunk.ErrBad},
		{name: "over the request limit", bodies: []chunk.Body{huge(1), huge(2), huge(3), huge(4), huge(5)}, want: chunk.ErrBad},
		{name: "cancelled", ctx: cancelled, bodies: []chunk.Body{page(5)}, want: context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.ctx
			if c == nil {
				c = ctx
			}
			added, err := p.PutBodies(c, tc.bodies)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("PutBodies: %v, want %v", err, tc.want)
				}
				if added != 0 {
					t.Fatalf("PutBodies refused, yet added %d bytes", added)
				}
				for _, b := range tc.bodies {
					if p.has(b.ID) && b.ID != stored {
						t.Fatalf("chunk %s stored by a refused request", b.ID.Short())
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("PutBodies: %v", err)
			}
			if tc.noWrite != (added == 0) {
				t.Fatalf("PutBodies added %d bytes", added)
			}
			for _, i := range tc.stored {
				if !p.has(tc.bodies[i].ID) {
					t.Fatalf("body %d not stored", i)
				}
			}
		})
	}
}
