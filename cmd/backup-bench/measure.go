package main

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/clnbackup/backup/chunker"
	"github.com/klauspost/compress/zstd"
)

// pageBound accumulates the page bound: the zstd size of every distinct page
// of every snapshot, each page compressed alone with the encoder settings
// the store uses (store.encoder: SpeedDefault, no dictionary).
type pageBound struct {
	enc *zstd.Encoder
	// seen holds the id of every distinct page: 32 bytes a page, the only
	// state of the bound that grows with the databases.
	seen     map[chunker.ID]struct{}
	buf      []byte
	Pages    int64 `json:"pages"`          // pages of all snapshots
	Distinct int64 `json:"distinct_pages"` // distinct pages
	RawBytes int64 `json:"raw_bytes"`      // bytes of all snapshots
	Bytes    int64 `json:"bytes"`          // zstd bytes of the distinct pages
}

func newPageBound() *pageBound {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		panic(err)
	}
	return &pageBound{enc: enc, seen: map[chunker.ID]struct{}{}}
}

// addPage counts one page of a snapshot; it reports whether the page is new
// to the bound.
func (b *pageBound) addPage(p []byte) bool {
	b.Pages++
	id := chunker.Sum(p)
	if _, ok := b.seen[id]; ok {
		return false
	}
	b.seen[id] = struct{}{}
	b.Distinct++
	b.buf = b.enc.EncodeAll(p, b.buf[:0])
	b.Bytes += int64(len(b.buf))
	return true
}

// snapshotBlock is how much of a snapshot is read at a time: a multiple of
// every SQLite page size, so that a database of gigabytes is counted in
// constant memory.
const snapshotBlock = 1 << 20

// snapshotScan is what scanSnapshot finds in one snapshot besides the
// pages it adds to the bound.
type snapshotScan struct {
	Bytes     int64 // the file's size
	ZlibBytes int64 // its zlib size (zlibSize of the whole file)
	NewPages  int64 // pages new to the bound
}

// scanSnapshot counts the SQLite file at path in the bound, reading it in
// blocks: its whole pages (of the page size its header gives, the trailing
// part of a page not counted) and its raw bytes; and it compresses it with
// zlib as zlibSize would the whole file.
func (b *pageBound) scanSnapshot(path string) (snapshotScan, error) {
	var s snapshotScan
	f, err := os.Open(path)
	if err != nil {
		return s, fmt.Errorf("snapshot: %w", err)
	}
	defer f.Close()
	var z countWriter
	zw := zlib.NewWriter(&z)
	buf := make([]byte, snapshotBlock)
	pageSize, fill := 0, 0
	for {
		n, err := io.ReadFull(f, buf[fill:])
		zw.Write(buf[fill : fill+n]) // a countWriter never fails
		s.Bytes += int64(n)
		fill += n
		if pageSize == 0 {
			pageSize = headerPageSize(buf[:fill])
		}
		fill = b.addPages(buf[:fill], pageSize, &s.NewPages)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return s, fmt.Errorf("snapshot %s: %w", path, err)
		}
	}
	zw.Close()
	s.ZlibBytes = int64(z)
	b.RawBytes += s.Bytes
	return s, nil
}

// addPages counts the whole pages of block in the bound and moves the
// trailing part of a page to the start of block; it returns that part's
// length.
func (b *pageBound) addPages(block []byte, pageSize int, newPages *int64) int {
	off := 0
	for ; off+pageSize <= len(block); off += pageSize {
		if b.addPage(block[off : off+pageSize]) {
			*newPages++
		}
	}
	return copy(block, block[off:])
}

// headerPageSize is the page size a SQLite file's header gives (4096 when
// the file is too short to tell, or the field is not a page size).
func headerPageSize(head []byte) int {
	if len(head) < 18 {
		return 4096
	}
	switch ps := int(head[16])<<8 | int(head[17]); {
	case ps == 1:
		return 65536
	case ps >= 512:
		return ps
	}
	return 4096
}

// zlibSize is the size of data compressed with zlib at its default level,
// as the Python plugin's socket protocol sends snapshots and changes.
func zlibSize(data []byte) int64 {
	var n countWriter
	w := zlib.NewWriter(&n)
	w.Write(data)
	w.Close()
	return int64(n)
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// legacyChange is a change entry of the Python plugin's file: the
// statements joined by NUL, behind an 9-byte entry header.
func legacyChange(stmts []string) []byte {
	var b bytes.Buffer
	b.Write(make([]byte, 9))
	b.WriteString(strings.Join(stmts, "\x00"))
	return b.Bytes()
}

// usage is what the files of a directory take.
type usage struct {
	Files     int64 `json:"files"`
	Apparent  int64 `json:"apparent_bytes"`
	Allocated int64 `json:"allocated_bytes"`
}

func (u *usage) add(o usage) {
	u.Files += o.Files
	u.Apparent += o.Apparent
	u.Allocated += o.Allocated
}

// storeUsage walks the store directory: every regular file counts (packs,
// indexes, manifests, node records, leases, journal segments with their
// preallocated zeros and the spare segment, gc records, config), by
// category. Allocated bytes are st_blocks * 512: what the file system
// holds, including the partial last block of small files.
func storeUsage(dir string) (total usage, by map[string]usage, err error) {
	by = map[string]usage{}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		u := usage{Files: 1, Apparent: fi.Size()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			u.Allocated = st.Blocks * 512
		}
		rel, _ := filepath.Rel(dir, path)
		cat := category(filepath.ToSlash(rel))
		c := by[cat]
		c.add(u)
		by[cat] = c
		total.add(u)
		return nil
	})
	return total, by, err
}

func category(rel string) string {
	parts := strings.Split(rel, "/")
	switch {
	case parts[0] == "packs" || parts[0] == "index" || parts[0] == "gc":
		return parts[0]
	case parts[0] == "nodes" && len(parts) > 2:
		switch parts[2] {
		case "journal":
			return "journal"
		case "manifests":
			return "manifests"
		}
		return "node records"
	}
	return "other"
}
