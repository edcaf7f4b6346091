package store_test

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
)

const pageSize = 4096

// benchStore creates a store in a temporary directory.
func benchStore(b *testing.B) *store.Store {
	b.Helper()
	st, _, err := store.Create(context.Background(), "file://"+filepath.Join(b.TempDir(), "store"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// pageGen makes distinct 4 KiB pages that compress about as well as the
// pages of a lightningd database (random keys and hashes, small integers,
// free space): roughly half of each page is random, the rest mostly zeros.
type pageGen struct {
	r   *rand.Rand
	buf []byte
	n   uint64
}

func newPageGen(seed uint64) *pageGen {
	return &pageGen{r: rand.New(rand.NewPCG(seed, 99)), buf: make([]byte, pageSize)}
}

func (g *pageGen) next() []byte {
	clear(g.buf)
	g.n++
	binary.BigEndian.PutUint64(g.buf, g.n) // distinct even if the random part repeats
	for off := 8; off < pageSize/2; off += 8 {
		binary.LittleEndian.PutUint64(g.buf[off:], g.r.Uint64())
	}
	for off := pageSize / 2; off < pageSize; off += 64 {
		g.buf[off] = byte(g.r.IntN(4)) // sparse small values
	}
	return g.buf
}

// fill stores n distinct pages and returns their IDs.
func fill(b *testing.B, st *store.Store, n int) []chunker.ID {
	b.Helper()
	ctx := context.Background()
	w, err := st.NewWriter(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	g := newPageGen(1)
	ids := make([]chunker.ID, n)
	for i := range ids {
		id, _, err := w.Put(ctx, chunk.KindPage, g.next())
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = id
	}
	if err := w.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	return ids
}

// batch is the pages per benchmark operation: 4 MiB, about one pack, so
// that even a -benchtime 1x run measures a representative amount of work.
const batch = 1024

// BenchmarkPut measures adding new pages: hash, zstd, pack, and the durable
// pack and index writes. One op is 1024 distinct pages and a Flush; MB/s of
// page bytes, and stored bytes (packs + indexes) per page byte.
func BenchmarkPut(b *testing.B) {
	ctx := context.Background()
	st := benchStore(b)
	w, err := st.NewWriter(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	g := newPageGen(2)
	b.SetBytes(batch * pageSize)
	for b.Loop() {
		for range batch {
			if _, isNew, err := w.Put(ctx, chunk.KindPage, g.next()); err != nil || !isNew {
				b.Fatalf("put: new=%v err=%v", isNew, err)
			}
		}
		if err := w.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
	s := w.Stats()
	b.ReportMetric(float64(s.Added())/float64(s.NewRawBytes), "stored/raw")
}

// BenchmarkPutExisting measures the dedup path: 1024 pages per op that the
// store already holds (hash and index lookup only).
func BenchmarkPutExisting(b *testing.B) {
	ctx := context.Background()
	st := benchStore(b)
	fill(b, st, batch)
	w, err := st.NewWriter(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	b.SetBytes(batch * pageSize)
	for b.Loop() {
		g := newPageGen(1)
		for range batch {
			if _, isNew, err := w.Put(ctx, chunk.KindPage, g.next()); err != nil || isNew {
				b.Fatalf("put: new=%v err=%v", isNew, err)
			}
		}
	}
}

// BenchmarkGet measures single verified chunk reads (locate, read from the
// pack, decompress, re-hash) in random order from 64 MiB of pages; one op
// is 1024 reads.
func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	st := benchStore(b)
	ids := fill(b, st, 16*batch)
	r := rand.New(rand.NewPCG(3, 4))
	b.SetBytes(batch * pageSize)
	for b.Loop() {
		for range batch {
			data, err := st.Get(ctx, ids[r.IntN(len(ids))])
			if err != nil || len(data) != pageSize {
				b.Fatalf("get: %v (%d bytes)", err, len(data))
			}
		}
	}
}

// BenchmarkReadChunks measures the bulk path restore uses: all chunks of
// 64 MiB of pages, grouped by pack, decompressed and verified in parallel.
func BenchmarkReadChunks(b *testing.B) {
	ctx := context.Background()
	st := benchStore(b)
	ids := fill(b, st, 16*batch)
	b.SetBytes(int64(len(ids)) * pageSize)
	for b.Loop() {
		var n atomic.Int64
		err := st.ReadChunks(ctx, ids, func(id chunker.ID, data []byte) error {
			n.Add(int64(len(data)))
			return nil
		})
		if err != nil || n.Load() != int64(len(ids))*pageSize {
			b.Fatalf("read chunks: %v (%d bytes)", err, n.Load())
		}
	}
}

// BenchmarkLookup measures one pass over the index objects of a store of
// 64Ki pages (about 30 packs) looking up a window of 8Ki of them: each
// window of a restore costs one such pass over every index object.
func BenchmarkLookup(b *testing.B) {
	ctx := context.Background()
	st := benchStore(b)
	ids := fill(b, st, 64*batch)
	want := ids[:8*batch]
	b.ReportAllocs()
	for b.Loop() {
		l, err := st.Lookup(ctx, want)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := l.Locate(want[0]); !ok {
			b.Fatal("a stored page not found")
		}
	}
}
