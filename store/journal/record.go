// Package journal is a node's durable log of db_write changes not yet covered by
// a manifest. It is the only thing on the plugin's hot path: one framed,
// checksummed append and one fdatasync per change, into preallocated segment
// files, so that a change is durable before lightningd is told to commit it.
package journal

import (
	"strings"
	"time"
)

// Record is one db_write call: the statements of one lightningd transaction and
// the data_version the database has after it.
type Record struct {
	// Seq is the record's position in the node's journal, assigned by the
	// journal on append and never reused (1, 2, ...). Records that were
	// never in a journal (legacy backups) have Seq 0.
	Seq uint64
	// Version is lightningd's data_version after this change.
	Version uint32
	// Time is when the plugin received the change.
	Time time.Time
	// Statements are the SQL statements, complete and in order.
	Statements []string
}

// PragmaOnly reports whether every statement is a PRAGMA. lightningd sends such
// hooks (e.g. "PRAGMA foreign_keys = OFF;") with the same data_version as the
// change before them; they must be kept and replayed outside any transaction,
// since SQLite ignores some pragmas inside one.
func (r Record) PragmaOnly() bool {
	if len(r.Statements) == 0 {
		return false
	}
	for _, s := range r.Statements {
		if !IsPragma(s) {
			return false
		}
	}
	return true
}

// IsPragma reports whether stmt is a PRAGMA statement (case-insensitive,
// ignoring leading white space).
func IsPragma(stmt string) bool {
	s := strings.TrimLeft(stmt, " \t\r\n")
	return len(s) >= 6 && strings.EqualFold(s[:6], "PRAGMA")
}
