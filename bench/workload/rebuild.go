package workload

import "strings"

// rebuilt are the bulk tables Rebuild rewrites: none of them is referenced
// by another table's foreign key, so each can be dropped and re-created
// inside lightningd's transaction.
var rebuilt = []string{"channel_htlcs", "forwards", "invoices", "payments", "outputs", "datastore"}

// Rebuild streams one hook per bulk table (channel_htlcs, forwards,
// invoices, payments, outputs, datastore) that rebuilds the table the way
// lightningd's schema migrations do: CREATE TABLE t__new with the same
// columns, INSERT INTO t__new SELECT * FROM t, DROP TABLE t, ALTER TABLE
// t__new RENAME TO t, and the table's indexes created again. The rows stay
// the same, but every table and index is written afresh, densely, at other
// places in the file, as a VACUUM does (which lightningd never sends
// through db_write: it cannot run inside a transaction, and the plugin
// replays every hook in one). Pages whose rows moved or were repacked change
// content; leaf pages that were already full come out byte-identical at new
// places, which content-addressed pages still deduplicate.
func (g *Generator) Rebuild(fn func(Hook) error) error {
	if g.channels == 0 {
		return errNotPopulated
	}
	for _, t := range rebuilt {
		var create string
		var indexes []string
		for _, s := range schema {
			switch {
			case strings.HasPrefix(s, "CREATE TABLE "+t+" "):
				create = s
			case strings.HasPrefix(s, "CREATE ") && strings.Contains(s, " INDEX ") &&
				(strings.Contains(s, " ON "+t+"(") || strings.Contains(s, " ON "+t+" (")):
				indexes = append(indexes, s)
			}
		}
		stmts := []string{
			"CREATE TABLE " + t + "__new " + strings.TrimPrefix(create, "CREATE TABLE "+t+" "),
			"INSERT INTO " + t + "__new SELECT * FROM " + t,
			"DROP TABLE " + t,
			"ALTER TABLE " + t + "__new RENAME TO " + t,
		}
		stmts = append(stmts, indexes...)
		g.tick()
		if err := fn(g.hook(stmts)); err != nil {
			return err
		}
	}
	return nil
}
