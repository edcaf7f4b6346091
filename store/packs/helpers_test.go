package packs

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/local"
)

var ctx = context.Background()

// newTestPacks is version-2 packs in a new local directory, on the clock
// now (time.Now when nil).
func newTestPacks(t testing.TB, now func() time.Time) *Packs {
	t.Helper()
	be, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return newTestPacksOn(t, be, now)
}

// newTestPacksOn is newTestPacks over be.
func newTestPacksOn(t testing.TB, be backend.Backend, now func() time.Time) *Packs {
	t.Helper()
	c, err := chunk.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if now == nil {
		now = time.Now
	}
	return New(be, Options{StoreVersion: 2, PackSize: 8 << 20, Codec: c, Now: now, MaxWriterAge: gcTestWriterAge})
}

// putPack stores n new page chunks (seeded by seed) as one pack, whether or
// not the store holds them.
func putPack(t testing.TB, p *Packs, seed byte, n int) []chunker.ID {
	t.Helper()
	enc, err := p.codec.Encoder()
	if err != nil {
		t.Fatal(err)
	}
	defer p.codec.PutEncoder(enc)
	var bodies []byte
	var entries []chunk.Entry
	var ids []chunker.ID
	for i := range n {
		data := bytes.Repeat([]byte{seed, byte(i), 3}, 1000)
		id := chunker.Sum(data)
		start := len(bodies)
		bodies = enc.EncodeAll(data, bodies)
		entries = append(entries, chunk.Entry{ID: id, Kind: chunk.KindPage, Offset: uint32(start), Length: uint32(len(bodies) - start), Raw: uint32(len(data))})
		ids = append(ids, id)
	}
	if _, err := p.writePack(ctx, bodies, entries); err != nil {
		t.Fatal(err)
	}
	return ids
}

// locate looks one chunk up.
func locate(t testing.TB, p *Packs, id chunker.ID) chunk.Info {
	t.Helper()
	l, err := p.lookup(ctx, []chunker.ID{id})
	if err != nil {
		t.Fatal(err)
	}
	info, ok := l.Locate(id)
	if !ok {
		t.Fatalf("chunk %s not found", id.Short())
	}
	return info
}
