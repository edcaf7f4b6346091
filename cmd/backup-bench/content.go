package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/crypt"
	"github.com/clnbackup/backup/store/journal"
	"github.com/klauspost/compress/zstd"
)

// changeLog accumulates the change-log bound of one node: the records the
// plugin journals (one per db_write hook), sealed at each compaction as the
// store seals them (store/history Node.seal: every record but the newest
// data_version, in journal.EncodeChunk batches of at most 256 KiB), each
// batch compressed alone with the store's zstd level. What a store keeping
// the changes between restore points must hold at least, without
// compressing them against each other.
type changeLog struct {
	enc     *zstd.Encoder
	pending []journal.Record
	seq     uint64
	buf     []byte
	Records int64 `json:"records"`
	Chunks  int64 `json:"chunks"`
	Raw     int64 `json:"raw_bytes"`
	Bytes   int64 `json:"bytes"`
}

// maxChangeChunk is store/history's batch bound (maxChangeChunk there).
const maxChangeChunk = 256 << 10

func newChangeLog() *changeLog {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		panic(err)
	}
	return &changeLog{enc: enc}
}

// add journals a hook.
func (l *changeLog) add(h workload.Hook) {
	l.seq++
	l.pending = append(l.pending, journal.Record{Seq: l.seq, Version: h.Version, Time: time.Now(), Statements: h.Statements})
}

// seal seals every pending record but the newest (lightningd may re-send
// its data_version), as a compaction does.
func (l *changeLog) seal() {
	if len(l.pending) < 2 {
		return
	}
	recs := l.pending[:len(l.pending)-1]
	var batch []journal.Record
	size := 0
	flush := func() {
		if len(batch) == 0 {
			return
		}
		raw := journal.EncodeChunk(batch)
		l.buf = l.enc.EncodeAll(raw, l.buf[:0])
		l.Chunks++
		l.Raw += int64(len(raw))
		l.Bytes += int64(len(l.buf))
		batch, size = nil, 0
	}
	for _, r := range recs {
		rs := 32
		for _, s := range r.Statements {
			rs += len(s) + 4
		}
		if size+rs > maxChangeChunk {
			flush()
		}
		batch = append(batch, r)
		size += rs
	}
	flush()
	l.Records += int64(len(recs))
	l.pending = append(l.pending[:0], l.pending[len(l.pending)-1])
}

func (l *changeLog) addTo(t *changeLog) {
	t.Records += l.Records
	t.Chunks += l.Chunks
	t.Raw += l.Raw
	t.Bytes += l.Bytes
}

// content is the stored bytes after gc by what they hold. Chunk bytes are
// the stored (compressed) lengths the pack trailers record, of the chunks
// the store's index places in that pack; a chunk copy the index does not
// place there (a dead copy gc has not reclaimed yet) is counted apart.
// Pack slack is what the file system allocates for the packs beyond their
// bytes (the partial last block). The other categories are allocated bytes
// of the store directory (storeUsage).
type content struct {
	Pages kindBytes `json:"page_chunks"`
	// PageDeltas are the page chunks (counted in Pages too) stored as
	// deltas against an earlier version of the page.
	PageDeltas    kindBytes `json:"page_delta_chunks"`
	Changes       kindBytes `json:"change_chunks"`
	ListsPatches  kindBytes `json:"list_and_patch_chunks"`
	Dead          kindBytes `json:"dead_chunk_copies"`
	PackTrailers  int64     `json:"pack_trailer_bytes"`
	PackSlack     int64     `json:"pack_block_slack_bytes"`
	Index         int64     `json:"index_bytes"`
	Manifests     int64     `json:"manifest_bytes"`
	Journal       int64     `json:"journal_bytes"`
	Other         int64     `json:"other_bytes"` // node records, leases, gc records, config
	IndexedChunks int       `json:"indexed_chunks"`
}

type kindBytes struct {
	Count int64 `json:"count"`
	Bytes int64 `json:"bytes"` // stored (compressed)
	Raw   int64 `json:"raw_bytes"`
}

func (k *kindBytes) add(e packEntry) {
	k.Count++
	k.Bytes += int64(e.length)
	k.Raw += int64(e.raw)
}

// total is the sum of every category: the stored bytes.
func (c content) total() int64 {
	return c.Pages.Bytes + c.Changes.Bytes + c.ListsPatches.Bytes + c.Dead.Bytes + c.PackTrailers + c.PackSlack + c.Index + c.Manifests + c.Journal + c.Other
}

// storeContent opens the store read-only, loads its index and reads every
// pack's trailer.
func storeContent(ctx context.Context, dir string, by map[string]usage, keyFile string) (content, error) {
	var c content
	var opts store.Options
	if keyFile != "" {
		data, err := os.ReadFile(keyFile)
		if err != nil {
			return c, err
		}
		kf, err := crypt.ParseKeyFile(data)
		if err != nil {
			return c, err
		}
		opts.Unlock.KeyFile = &kf
	}
	st, err := store.Open(ctx, "file://"+dir, opts)
	if err != nil {
		return c, err
	}
	defer st.Close()
	packs, err := st.Packs("content report")
	if err != nil {
		return c, err
	}
	index, err := packs.LoadIndex(ctx)
	if err != nil {
		return c, err
	}
	c.IndexedChunks = index.Len()
	var packsApparent int64
	err = filepath.WalkDir(filepath.Join(dir, "packs"), func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		pack, err := chunker.ParseID(filepath.Base(p))
		if err != nil {
			return fmt.Errorf("pack %s: %v", p, err)
		}
		entries, trailer, size, err := readPackTrailer(p)
		if err != nil {
			return err
		}
		packsApparent += size
		c.PackTrailers += trailer
		for _, e := range entries {
			info, ok := index.Locate(e.id)
			switch {
			case !ok || info.Pack != pack:
				c.Dead.add(e)
			case e.kind == chunk.KindPage:
				c.Pages.add(e)
				if e.delta {
					c.PageDeltas.add(e)
				}
			case e.kind == chunk.KindChange:
				c.Changes.add(e)
			default:
				c.ListsPatches.add(e)
			}
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	c.PackSlack = by["packs"].Allocated - packsApparent
	c.Index, c.Manifests, c.Journal = by["index"].Allocated, by["manifests"].Allocated, by["journal"].Allocated
	for k, u := range by {
		switch k {
		case "packs", "index", "manifests", "journal":
		default:
			c.Other += u.Allocated
		}
	}
	return c, nil
}

type packEntry struct {
	id          chunker.ID
	kind        chunk.Kind
	length, raw uint32
	delta       bool
}

// readPackTrailer parses a pack's trailer (docs/store-format.md): chunk
// bodies | index | nonce [16] | u32 index length | "CLNPACK1", the index
// being "CLNIDX" u16 version | pack id [32] | u32 count | entries of
// id [32] | u8 kind | u32 offset | u32 stored length | u32 raw length
// [| base id [32] when kind has 0x80 set, index version 2]. It
// returns the entries, the trailer's bytes (index, nonce, length, magic)
// and the pack's size.
func readPackTrailer(path string) (entries []packEntry, trailer, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, 0, err
	}
	size = fi.Size()
	const magic, tail = "CLNPACK1", 16 + 4 + 8
	var t [tail]byte
	if size < tail {
		return nil, 0, 0, fmt.Errorf("pack %s: too short", path)
	}
	if _, err := f.ReadAt(t[:], size-tail); err != nil {
		return nil, 0, 0, err
	}
	if string(t[20:]) != magic {
		return nil, 0, 0, fmt.Errorf("pack %s: bad trailer", path)
	}
	n := int64(binary.BigEndian.Uint32(t[16:20]))
	if n > size-tail {
		return nil, 0, 0, fmt.Errorf("pack %s: index length %d", path, n)
	}
	idx := make([]byte, n)
	if _, err := f.ReadAt(idx, size-tail-n); err != nil {
		return nil, 0, 0, err
	}
	const head, entryLen = 6 + 2 + chunker.IDSize + 4, chunker.IDSize + 13
	if len(idx) < head || !strings.HasPrefix(string(idx), "CLNIDX") {
		return nil, 0, 0, fmt.Errorf("pack %s: bad index", path)
	}
	count := int(binary.BigEndian.Uint32(idx[head-4:]))
	o := head
	for range count {
		if len(idx)-o < entryLen {
			return nil, 0, 0, fmt.Errorf("pack %s: %d entries in %d bytes", path, count, len(idx))
		}
		b := idx[o:]
		var e packEntry
		copy(e.id[:], b)
		e.kind = chunk.Kind(b[chunker.IDSize] &^ 0x80)
		e.delta = b[chunker.IDSize]&0x80 != 0
		e.length = binary.BigEndian.Uint32(b[chunker.IDSize+5:])
		e.raw = binary.BigEndian.Uint32(b[chunker.IDSize+9:])
		o += entryLen
		if e.delta {
			o += chunker.IDSize
		}
		entries = append(entries, e)
	}
	if o != len(idx) {
		return nil, 0, 0, fmt.Errorf("pack %s: %d entries in %d bytes", path, count, len(idx))
	}
	return entries, n + tail, size, nil
}
