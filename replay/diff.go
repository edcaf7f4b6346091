package replay

import (
	"bytes"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// MaxDiffLines bounds the differences Diff returns; a last line says how many
// more there were.
const MaxDiffLines = 100

// Diff compares the SQLite databases at pathA and pathB (both opened
// read-only) and returns their differences as human-readable lines, empty when
// they hold the same schema and the same rows. Every object in sqlite_master
// of either file is compared by its SQL; every table's rows are compared as
// multisets of all columns plus the rowid where the table has one, with values
// compared exactly (type and bytes). Row order, page layout and free space do
// not count. At most MaxDiffLines lines are returned. Tables with a rowid (every
// table of lightningd's schema) are read row by row in rowid order from both
// files at once, so that databases larger than memory can be compared; a
// WITHOUT ROWID table is still read into memory whole.
func Diff(pathA, pathB string) ([]string, error) {
	a, err := openRO(pathA)
	if err != nil {
		return nil, fmt.Errorf("replay: diff: open %s: %w", pathA, err)
	}
	defer a.Close()
	b, err := openRO(pathB)
	if err != nil {
		return nil, fmt.Errorf("replay: diff: open %s: %w", pathB, err)
	}
	defer b.Close()

	out := &diffOut{}
	schemaA, err := readSchema(a)
	if err != nil {
		return nil, fmt.Errorf("replay: diff: %s: %w", pathA, err)
	}
	schemaB, err := readSchema(b)
	if err != nil {
		return nil, fmt.Errorf("replay: diff: %s: %w", pathB, err)
	}
	names := make(map[string]bool)
	for k := range schemaA {
		names[k] = true
	}
	for k := range schemaB {
		names[k] = true
	}
	keys := make([]string, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		oa, inA := schemaA[k]
		ob, inB := schemaB[k]
		switch {
		case !inB:
			out.add("%s %s: only in A", oa.typ, oa.name)
			continue
		case !inA:
			out.add("%s %s: only in B", ob.typ, ob.name)
			continue
		case oa.sql != ob.sql:
			out.add("%s %s: schema differs:\n  A: %s\n  B: %s", oa.typ, oa.name, clip(oa.sql), clip(ob.sql))
		}
		if oa.typ == "table" && ob.typ == "table" {
			if err := diffTable(a, b, oa.name, out); err != nil {
				return nil, fmt.Errorf("replay: diff table %s: %w", oa.name, err)
			}
		}
	}
	return out.lines(), nil
}

type diffOut struct {
	l     []string
	extra int
}

func (o *diffOut) add(format string, args ...any) {
	if len(o.l) >= MaxDiffLines {
		o.extra++
		return
	}
	o.l = append(o.l, fmt.Sprintf(format, args...))
}

// addAll adds the lines and the count of lines left out of p, in order.
func (o *diffOut) addAll(p *diffOut) {
	for _, l := range p.l {
		o.add("%s", l)
	}
	o.extra += p.extra
}

func (o *diffOut) lines() []string {
	if o.extra > 0 {
		return append(o.l, fmt.Sprintf("... and %d more differences", o.extra))
	}
	return o.l
}

type schemaObj struct{ typ, name, sql string }

// readSchema returns sqlite_master keyed by type and name.
func readSchema(db *sql.DB) (map[string]schemaObj, error) {
	rows, err := db.Query("SELECT type, name, sql FROM sqlite_master")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := make(map[string]schemaObj)
	for rows.Next() {
		var o schemaObj
		var s sql.NullString
		if err := rows.Scan(&o.typ, &o.name, &s); err != nil {
			return nil, err
		}
		o.sql = s.String
		m[o.typ+" "+o.name] = o
	}
	return m, rows.Err()
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// tableRows is a table read for comparison: column names (the rowid first when
// there is one) and rows sorted by their canonical encoding.
type tableRows struct {
	tableQuery
	rows [][]any
	keys []string
}

// tableQuery is how a table is read for comparison: its column names (the
// rowid first when there is one) and the SELECT that reads them. Columns are
// selected as +col so the driver sees no declared type and converts nothing
// (DATETIME, BOOLEAN).
type tableQuery struct {
	cols  []string
	rowid bool
	sel   string
}

// queryTable finds the columns of table and builds the SELECT reading them.
func queryTable(db *sql.DB, table string) (*tableQuery, error) {
	q := quoteIdent(table)
	probe, err := db.Query("SELECT * FROM " + q + " LIMIT 0")
	if err != nil {
		return nil, err
	}
	cols, err := probe.Columns()
	probe.Close()
	if err != nil {
		return nil, err
	}
	t := &tableQuery{}
	var exprs []string
	// The rowid, under a name no column hides, if the table has one.
	for _, alias := range []string{"rowid", "_rowid_", "oid"} {
		if slices.Contains(cols, alias) {
			continue
		}
		if r, err := db.Query("SELECT " + alias + " FROM " + q + " LIMIT 0"); err == nil {
			r.Close()
			t.rowid = true
			t.cols = append(t.cols, alias)
			exprs = append(exprs, alias)
		}
		break
	}
	for _, c := range cols {
		t.cols = append(t.cols, c)
		exprs = append(exprs, "+"+quoteIdent(c))
	}
	t.sel = "SELECT " + strings.Join(exprs, ", ") + " FROM " + q
	return t, nil
}

// readTable reads every row of the table tq selects, into memory.
func readTable(db *sql.DB, tq *tableQuery) (*tableRows, error) {
	t := &tableRows{tableQuery: *tq}
	rows, err := db.Query(tq.sel)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		vals, err := scanRow(rows, len(tq.cols))
		if err != nil {
			return nil, err
		}
		t.rows = append(t.rows, vals)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	type keyed struct {
		key string
		row []any
	}
	ks := make([]keyed, len(t.rows))
	for i, r := range t.rows {
		ks[i] = keyed{encodeRow(r), r}
	}
	slices.SortFunc(ks, func(x, y keyed) int { return strings.Compare(x.key, y.key) })
	t.keys = make([]string, len(ks))
	for i, k := range ks {
		t.keys[i], t.rows[i] = k.key, k.row
	}
	return t, nil
}

// scanRow scans the current row of n columns as the driver gives them
// (database/sql copies []byte values into *any destinations).
func scanRow(rows *sql.Rows, n int) ([]any, error) {
	vals := make([]any, n)
	ptrs := make([]any, n)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	return vals, nil
}

// encodeRow gives a row a byte string that is equal for two rows exactly when
// every value has the same type and the same bytes.
func encodeRow(r []any) string {
	var b bytes.Buffer
	for _, v := range r {
		switch x := v.(type) {
		case nil:
			b.WriteByte(0)
		case int64:
			b.WriteByte(1)
			b.Write(binary.BigEndian.AppendUint64(nil, uint64(x)^(1<<63)))
		case float64:
			b.WriteByte(2)
			b.Write(binary.BigEndian.AppendUint64(nil, math.Float64bits(x)))
		case string:
			b.WriteByte(3)
			b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(x))))
			b.WriteString(x)
		case []byte:
			b.WriteByte(4)
			b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(x))))
			b.Write(x)
		default:
			s := fmt.Sprintf("%T:%v", x, x)
			b.WriteByte(5)
			b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(s))))
			b.WriteString(s)
		}
	}
	return b.String()
}

// diffTable compares the rows of one table present in both databases: row
// by row in rowid order when both have a rowid, in memory otherwise.
func diffTable(a, b *sql.DB, table string, out *diffOut) error {
	qa, err := queryTable(a, table)
	if err != nil {
		return fmt.Errorf("A: %w", err)
	}
	qb, err := queryTable(b, table)
	if err != nil {
		return fmt.Errorf("B: %w", err)
	}
	if !slices.Equal(qa.cols, qb.cols) {
		out.add("table %s: columns differ: A %v, B %v", table, qa.cols, qb.cols)
		return nil
	}
	if qa.rowid && qb.rowid {
		return diffRowidTable(a, b, table, qa, out)
	}
	ta, err := readTable(a, qa)
	if err != nil {
		return fmt.Errorf("A: %w", err)
	}
	tb, err := readTable(b, qb)
	if err != nil {
		return fmt.Errorf("B: %w", err)
	}
	diffRows(table, ta, tb, out)
	return nil
}

// diffRows compares two tables read whole: their rows as multisets, and in
// a rowid table a row present on both sides cell by cell.
func diffRows(table string, ta, tb *tableRows, out *diffOut) {
	if len(ta.rows) != len(tb.rows) {
		out.add("table %s: %d rows in A, %d rows in B", table, len(ta.rows), len(tb.rows))
	}
	// Merge the two sorted lists into the rows only one side holds.
	var onlyA, onlyB [][]any
	i, j := 0, 0
	for i < len(ta.keys) || j < len(tb.keys) {
		switch {
		case j == len(tb.keys) || (i < len(ta.keys) && ta.keys[i] < tb.keys[j]):
			onlyA = append(onlyA, ta.rows[i])
			i++
		case i == len(ta.keys) || tb.keys[j] < ta.keys[i]:
			onlyB = append(onlyB, tb.rows[j])
			j++
		default:
			i++
			j++
		}
	}
	// In a rowid table a row present on both sides with other values is
	// reported cell by cell.
	if ta.rowid {
		byRowid := make(map[string]int, len(onlyB))
		for k, r := range onlyB {
			byRowid[encodeRow(r[:1])] = k
		}
		matchedB := make(map[int]bool)
		var restA [][]any
		for _, r := range onlyA {
			k, ok := byRowid[encodeRow(r[:1])]
			if !ok || matchedB[k] {
				restA = append(restA, r)
				continue
			}
			matchedB[k] = true
			rb := onlyB[k]
			for c := 1; c < len(r); c++ {
				if encodeRow(r[c:c+1]) != encodeRow(rb[c:c+1]) {
					out.add("table %s rowid %s: column %s: A %s, B %s",
						table, formatValue(r[0]), ta.cols[c], formatValue(r[c]), formatValue(rb[c]))
				}
			}
		}
		var restB [][]any
		for k, r := range onlyB {
			if !matchedB[k] {
				restB = append(restB, r)
			}
		}
		onlyA, onlyB = restA, restB
	}
	for _, r := range onlyA {
		out.add("table %s: row only in A: %s", table, formatRow(ta.cols, r))
	}
	for _, r := range onlyB {
		out.add("table %s: row only in B: %s", table, formatRow(tb.cols, r))
	}
}

const clipLen = 200

func clip(s string) string {
	if len(s) <= clipLen {
		return s
	}
	return s[:clipLen] + "..."
}

func formatRow(cols []string, r []any) string {
	parts := make([]string, len(r))
	for i, v := range r {
		parts[i] = cols[i] + "=" + formatValue(v)
	}
	return clip("(" + strings.Join(parts, ", ") + ")")
}

// formatValue writes a value as an SQL literal, shortened for display.
func formatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		return clip(strconv.Quote(x))
	case []byte:
		return clip("x'" + hex.EncodeToString(x) + "'")
	default:
		return clip(fmt.Sprint(x))
	}
}

// rowCursor reads a query's rows one at a time: row is the current row, nil
// once the rows are exhausted.
type rowCursor struct {
	rows *sql.Rows
	n    int
	row  []any
}

// next moves to the next row.
func (c *rowCursor) next() error {
	c.row = nil
	if !c.rows.Next() {
		return c.rows.Err()
	}
	var err error
	c.row, err = scanRow(c.rows, c.n)
	return err
}

// rowidOf is the rowid of a row read by a tableQuery of a rowid table.
func rowidOf(r []any) (int64, error) {
	id, ok := r[0].(int64)
	if !ok {
		return 0, fmt.Errorf("rowid %v is a %T", r[0], r[0])
	}
	return id, nil
}

// openCursor runs the query of a rowid table in rowid order and reads its
// first row.
func openCursor(db *sql.DB, tq *tableQuery) (*rowCursor, error) {
	rows, err := db.Query(tq.sel + " ORDER BY " + tq.cols[0])
	if err != nil {
		return nil, err
	}
	c := &rowCursor{rows: rows, n: len(tq.cols)}
	if err := c.next(); err != nil {
		rows.Close()
		return nil, err
	}
	return c, nil
}

// rowidDiff is what diffRowidTable found, kept apart by kind so that it is
// reported in diffRows' order: the row counts, the cells of rows on both
// sides, the rows only in A, the rows only in B.
type rowidDiff struct {
	rowsA, rowsB        int64
	cells, onlyA, onlyB diffOut
}

// diffRowidTable compares a table that has a rowid on both sides, reading
// both in rowid order at once and merging them, so that no table is held in
// memory: rows with the same rowid are compared cell by cell, the others are
// only on one side. It reports what diffRows reports for the same tables.
func diffRowidTable(a, b *sql.DB, table string, tq *tableQuery, out *diffOut) error {
	ca, err := openCursor(a, tq)
	if err != nil {
		return fmt.Errorf("A: %w", err)
	}
	defer ca.rows.Close()
	cb, err := openCursor(b, tq)
	if err != nil {
		return fmt.Errorf("B: %w", err)
	}
	defer cb.rows.Close()
	var d rowidDiff
	for ca.row != nil || cb.row != nil {
		if err := d.step(table, tq.cols, ca, cb); err != nil {
			return err
		}
	}
	if d.rowsA != d.rowsB {
		out.add("table %s: %d rows in A, %d rows in B", table, d.rowsA, d.rowsB)
	}
	out.addAll(&d.cells)
	out.addAll(&d.onlyA)
	out.addAll(&d.onlyB)
	return nil
}

// step consumes the row of the lower rowid (both when they are the same).
func (d *rowidDiff) step(table string, cols []string, ca, cb *rowCursor) error {
	var idA, idB int64
	var err error
	if ca.row != nil {
		if idA, err = rowidOf(ca.row); err != nil {
			return fmt.Errorf("A: %w", err)
		}
	}
	if cb.row != nil {
		if idB, err = rowidOf(cb.row); err != nil {
			return fmt.Errorf("B: %w", err)
		}
	}
	switch {
	case cb.row == nil || (ca.row != nil && idA < idB):
		d.rowsA++
		d.onlyA.add("table %s: row only in A: %s", table, formatRow(cols, ca.row))
		if err := ca.next(); err != nil {
			return fmt.Errorf("A: %w", err)
		}
	case ca.row == nil || idB < idA:
		d.rowsB++
		d.onlyB.add("table %s: row only in B: %s", table, formatRow(cols, cb.row))
		if err := cb.next(); err != nil {
			return fmt.Errorf("B: %w", err)
		}
	default:
		d.rowsA++
		d.rowsB++
		d.cellDiffs(table, cols, ca.row, cb.row)
		if err := ca.next(); err != nil {
			return fmt.Errorf("A: %w", err)
		}
		if err := cb.next(); err != nil {
			return fmt.Errorf("B: %w", err)
		}
	}
	return nil
}

// cellDiffs records the cells in which two rows of the same rowid differ.
func (d *rowidDiff) cellDiffs(table string, cols []string, ra, rb []any) {
	for c := 1; c < len(ra); c++ {
		if encodeRow(ra[c:c+1]) != encodeRow(rb[c:c+1]) {
			d.cells.add("table %s rowid %s: column %s: A %s, B %s",
				table, formatValue(ra[0]), cols[c], formatValue(ra[c]), formatValue(rb[c]))
		}
	}
}
