package workload

import (
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sort"

	"github.com/clnbackup/backup/chunker"
)

// touchable are the tables whose leaf pages TouchPages may change, each with
// a column of fixed size that is in no index, so that giving it a new value
// of the same size rewrites the row in place: exactly its leaf page changes.
var touchable = []struct {
	table, column string
	size          int
}{
	{"channel_htlcs", "shared_secret", hashSize},
	{"invoices", "payment_key", hashSize},
	{"payments", "destination", pointSize},
}

// leaf is one table leaf page and the rowids of its cells.
type leaf struct {
	page   uint32 // 1-based page number
	table  int    // index into touchable
	rowids []int64
}

// TouchPages streams hooks that change about frac of the database's pages,
// spread evenly over the file: it reads the b-trees of the database at
// dbPath (which must hold exactly the state the generator's hooks produced
// so far) and, for every chosen leaf page of channel_htlcs, invoices or
// payments, updates one row of it by rowid to a random value of the same
// size in a column no index covers. SQLite rewrites such a row in place, so
// the chosen leaf pages change, plus page 1 (change counter) and the vars
// page (data_version): nothing else. The count is round(frac * pages),
// capped at the number of leaf pages of those tables; the updates are cut
// into hooks of at most 1000 statements.
func (g *Generator) TouchPages(dbPath string, frac float64, fn func(Hook) error) error {
	if g.version == 0 {
		return errNotPopulated
	}
	leaves, pages, err := readLeaves(dbPath)
	if err != nil {
		return fmt.Errorf("workload: touch pages of %s: %w", dbPath, err)
	}
	want := int(math.Round(frac * float64(pages)))
	want = min(want, len(leaves))
	if want <= 0 {
		return nil
	}
	sort.Slice(leaves, func(i, j int) bool { return leaves[i].page < leaves[j].page })
	var stmts []string
	for k := range want {
		l := leaves[int((float64(k)+0.5)*float64(len(leaves))/float64(want))]
		tc := touchable[l.table]
		rowid := l.rowids[g.rng.IntN(len(l.rowids))]
		val := g.bytes(tc.size)
		if tc.size == pointSize {
			val[0] = 2 + val[0]&1
		}
		stmts = append(stmts, "UPDATE "+tc.table+" SET "+tc.column+" = "+blobLit(val)+" WHERE rowid = "+itoa(rowid))
		if len(stmts) == populateRowsPerHook {
			g.tick()
			if err := fn(g.hook(stmts)); err != nil {
				return err
			}
			stmts = nil
		}
	}
	if len(stmts) == 0 {
		return nil
	}
	g.tick()
	return fn(g.hook(stmts))
}

// readLeaves returns the non-empty leaf pages of the touchable tables and the
// database's page count.
func readLeaves(dbPath string) ([]leaf, uint32, error) {
	roots, err := rootPages(dbPath)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(dbPath)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	head := make([]byte, chunker.HeaderSize)
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, 0, err
	}
	h, err := chunker.ParseHeader(head)
	if err != nil {
		return nil, 0, err
	}
	w := &btreeWalker{f: f, pageSize: h.PageSize, pages: h.Pages, buf: make([]byte, h.PageSize)}
	var leaves []leaf
	for i, tc := range touchable {
		root, ok := roots[tc.table]
		if !ok {
			return nil, 0, fmt.Errorf("table %s not found", tc.table)
		}
		if err := w.walk(root, 0, func(page uint32, rowids []int64) {
			if len(rowids) > 0 {
				leaves = append(leaves, leaf{page: page, table: i, rowids: rowids})
			}
		}); err != nil {
			return nil, 0, fmt.Errorf("table %s: %w", tc.table, err)
		}
	}
	return leaves, h.Pages, nil
}

// rootPages reads the root page of every table from sqlite_master.
func rootPages(dbPath string) (map[string]uint32, error) {
	abs, err := filepath.Abs(dbPath)
	if err != nil {
		return nil, err
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: "mode=ro"}
	db, err := sql.Open("sqlite3", u.String())
	if err != nil {
		return nil, err
	}
	defer db.Close()
	rows, err := db.Query("SELECT name, rootpage FROM sqlite_master WHERE type = 'table'")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	roots := map[string]uint32{}
	for rows.Next() {
		var name string
		var root int64
		if err := rows.Scan(&name, &root); err != nil {
			return nil, err
		}
		roots[name] = uint32(root)
	}
	return roots, rows.Err()
}

// btreeWalker reads a table b-tree straight from the file (format:
// https://www.sqlite.org/fileformat2.html, "B-tree Pages").
type btreeWalker struct {
	f        *os.File
	pageSize uint32
	pages    uint32
	buf      []byte
}

var errBadPage = errors.New("damaged b-tree page")

// walk calls leafFn for every leaf page under page, in key order.
func (w *btreeWalker) walk(page uint32, depth int, leafFn func(uint32, []int64)) error {
	if page == 0 || page > w.pages || depth > 20 {
		return fmt.Errorf("%w: page %d at depth %d", errBadPage, page, depth)
	}
	if _, err := w.f.ReadAt(w.buf, int64(page-1)*int64(w.pageSize)); err != nil {
		return err
	}
	p := w.buf
	hdr := 0
	if page == 1 {
		hdr = chunker.HeaderSize
	}
	ncells := int(binary.BigEndian.Uint16(p[hdr+3:]))
	switch p[hdr] {
	case 0x0d: // table leaf
		rowids := make([]int64, 0, ncells)
		for c := range ncells {
			off := int(binary.BigEndian.Uint16(p[hdr+8+2*c:]))
			if off >= len(p) {
				return fmt.Errorf("%w: page %d cell %d", errBadPage, page, c)
			}
			_, n := varint(p[off:]) // payload size
			rowid, _ := varint(p[off+n:])
			rowids = append(rowids, int64(rowid))
		}
		leafFn(page, rowids)
		return nil
	case 0x05: // table interior
		right := binary.BigEndian.Uint32(p[hdr+8:])
		children := make([]uint32, 0, ncells+1)
		for c := range ncells {
			off := int(binary.BigEndian.Uint16(p[hdr+12+2*c:]))
			if off+4 > len(p) {
				return fmt.Errorf("%w: page %d cell %d", errBadPage, page, c)
			}
			children = append(children, binary.BigEndian.Uint32(p[off:]))
		}
		children = append(children, right)
		for _, ch := range children {
			if err := w.walk(ch, depth+1, leafFn); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%w: page %d has type %#x, not a table b-tree page", errBadPage, page, p[hdr])
}

// varint decodes a SQLite varint (1 to 9 bytes, big-endian, high bit = more).
func varint(b []byte) (uint64, int) {
	var v uint64
	for i := 0; i < 8 && i < len(b); i++ {
		v = v<<7 | uint64(b[i]&0x7f)
		if b[i] < 0x80 {
			return v, i + 1
		}
	}
	if len(b) < 9 {
		return v, len(b)
	}
	return v<<8 | uint64(b[8]), 9
}
