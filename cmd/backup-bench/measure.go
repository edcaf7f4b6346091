package main

import (
	"bytes"
	"compress/zlib"
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
	enc      *zstd.Encoder
	seen     map[chunker.ID]bool
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
	return &pageBound{enc: enc, seen: map[chunker.ID]bool{}}
}

// add counts the snapshot db (a SQLite file of pageSize pages); it returns
// the pages new to the bound.
func (b *pageBound) add(db []byte, pageSize int) (newPages int64) {
	b.RawBytes += int64(len(db))
	for off := 0; off+pageSize <= len(db); off += pageSize {
		p := db[off : off+pageSize]
		b.Pages++
		id := chunker.Sum(p)
		if b.seen[id] {
			continue
		}
		b.seen[id] = true
		b.Distinct++
		newPages++
		b.buf = b.enc.EncodeAll(p, b.buf[:0])
		b.Bytes += int64(len(b.buf))
	}
	return newPages
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

// readAll reads a file whole.
func readAll(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
