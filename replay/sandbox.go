package replay

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/clnbackup/backup/store/journal"
	"github.com/mattn/go-sqlite3"
)

// The replay sandbox. Journal records and legacy backup entries are SQL text
// from the store, and the store is not trusted as far as SQL is concerned: a
// leaked node token, a writable file:// store or a tampered legacy file can
// put any statement there. Replaying them verbatim ran them with every power
// SQLite has (ATTACH and VACUUM INTO create files at any path), as the user
// running restore. The sandbox limits a replayed statement to what lightningd
// itself sends: row and schema changes of the main database and
// PRAGMA foreign_keys. Everything else fails the replay with ErrRefused.
//
// The layers (the last three each stop ATTACH and VACUUM INTO on their own):
//   - statements beginning with transaction control, ATTACH, DETACH or VACUUM
//     are refused before anything of their record runs (precheck), with a
//     clear reason;
//   - an authorizer (sandbox.authorize) checks every statement SQLite
//     prepares, including each statement of a multi-statement string, the
//     internal ATTACH of VACUUM and the bodies of triggers and views stored
//     in the database;
//   - SQLITE_LIMIT_ATTACHED is 0, so no ATTACH (VACUUM's included) can
//     succeed even if it were authorized;
//   - SQLITE_DBCONFIG_DEFENSIVE, trusted_schema OFF and extension loading
//     off harden the connection against a hostile schema.

// ErrRefused is wrapped by the errors of Apply (and so of restore,
// compaction and legacy restore) for a statement the replay sandbox refused:
// lightningd never sends such a statement, so the history holds a record
// lightningd did not write. Callers test for it with errors.Is to tell
// tampering apart from damage.
var ErrRefused = errors.New("statement refused by the replay sandbox")

// refusedAdvice tells the operator what a refusal means and what to do.
const refusedAdvice = "lightningd never sends this: the history holds a record lightningd did not write " +
	"(a tampered store, a leaked node token or a crafted backup file); nothing was written outside the database being rebuilt. " +
	"Find out where the record came from before trusting this history; a restore point before it may still restore"

// driverName is the database/sql driver whose connections are hardened.
const driverName = "sqlite3-replay-sandbox"

// MaxValueLen bounds the length of any string or blob a replayed statement
// can make (SQLITE_LIMIT_LENGTH). No journal record can carry a longer
// literal (journal.MaxPayload), so only computed values such as
// zeroblob(1e9) or randomblob(1e9), memory and disk bombs, reach it.
const MaxValueLen = journal.MaxPayload

func init() {
	sql.Register(driverName, &sqlite3.SQLiteDriver{ConnectHook: harden})
}

// harden sets up every connection the package opens, before anything else
// runs on it: no attached databases, bounded values, defensive mode, an
// untrusted schema, no extension loading and temporary storage in memory
// (so that no statement makes SQLite create a temporary file). A setting
// that does not take fails the open: the sandbox fails closed.
func harden(c *sqlite3.SQLiteConn) error {
	for _, s := range []struct {
		name string
		op   int
		on   bool
	}{
		{"SQLITE_DBCONFIG_DEFENSIVE", dbconfigDefensive, true},
		{"SQLITE_DBCONFIG_TRUSTED_SCHEMA", dbconfigTrustedSchema, false},
		{"SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION", dbconfigEnableLoadExtension, false},
	} {
		got, err := dbConfig(c, s.op, s.on)
		if err != nil {
			return fmt.Errorf("replay sandbox: set %s: %w", s.name, err)
		}
		if got != s.on {
			return fmt.Errorf("replay sandbox: %s did not take", s.name)
		}
	}
	c.SetLimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
	c.SetLimit(sqlite3.SQLITE_LIMIT_LENGTH, MaxValueLen)
	if got := c.GetLimit(sqlite3.SQLITE_LIMIT_ATTACHED); got != 0 {
		return fmt.Errorf("replay sandbox: SQLITE_LIMIT_ATTACHED is %d, want 0", got)
	}
	if got := c.GetLimit(sqlite3.SQLITE_LIMIT_LENGTH); got > MaxValueLen {
		return fmt.Errorf("replay sandbox: SQLITE_LIMIT_LENGTH is %d, want at most %d", got, MaxValueLen)
	}
	for _, p := range []string{"PRAGMA trusted_schema = OFF", "PRAGMA temp_store = MEMORY"} {
		if _, err := c.Exec(p, nil); err != nil {
			return fmt.Errorf("replay sandbox: %s: %w", p, err)
		}
	}
	return nil
}

// Authorizer actions go-sqlite3 does not name.
const (
	authRecursive = 33 // SQLITE_RECURSIVE: a recursive common table expression
)

// sandbox is the authorizer state of one DB. trusted is set while the DB
// runs its own statements (BEGIN, COMMIT, ROLLBACK, reads); pragmaOnly while
// it runs a PRAGMA-only record outside a transaction; refused keeps the
// reason of the last denial for the error message. The authorizer runs on
// the goroutine that called Exec, so no locking is needed (a DB is not safe
// for concurrent use anyway).
type sandbox struct {
	trusted    bool
	pragmaOnly bool
	refused    string
}

// authorize is the SQLite authorizer of a replay connection: an allowlist of
// what lightningd's statements do. SQLite calls it for every statement it
// compiles, trigger bodies and views included. The schema the action is on
// is not checked: no database but main and temp can exist (ATTACH is
// refused), temp objects are refused, and SQLite's own ALTER TABLE reads
// temp.sqlite_temp_master. go-sqlite3 does not pass on the name of the
// trigger or view being compiled.
func (s *sandbox) authorize(op int, arg1, arg2, _ string) int {
	if s.trusted {
		return sqlite3.SQLITE_OK
	}
	reason := s.check(op, arg1, arg2)
	if reason == "" {
		return sqlite3.SQLITE_OK
	}
	if s.refused == "" {
		s.refused = reason
	}
	return sqlite3.SQLITE_DENY
}

// check returns why op is refused, or "" if it is allowed.
func (s *sandbox) check(op int, arg1, arg2 string) string {
	switch op {
	case sqlite3.SQLITE_PRAGMA:
		return checkPragma(arg1, arg2)
	case sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION, authRecursive,
		sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE,
		sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_DROP_TABLE, sqlite3.SQLITE_ALTER_TABLE,
		sqlite3.SQLITE_CREATE_INDEX, sqlite3.SQLITE_DROP_INDEX, sqlite3.SQLITE_REINDEX, sqlite3.SQLITE_ANALYZE,
		sqlite3.SQLITE_CREATE_TRIGGER, sqlite3.SQLITE_DROP_TRIGGER,
		sqlite3.SQLITE_CREATE_VIEW, sqlite3.SQLITE_DROP_VIEW:
		if s.pragmaOnly {
			// A PRAGMA-only record runs outside the replayer's
			// transaction: nothing else may hide in it.
			return "a PRAGMA-only change holds another statement"
		}
		if op == sqlite3.SQLITE_FUNCTION {
			return checkFunction(arg2)
		}
		return ""
	case sqlite3.SQLITE_TRANSACTION:
		return fmt.Sprintf("transaction control (%s) belongs to the replayer", arg1)
	case sqlite3.SQLITE_SAVEPOINT:
		return fmt.Sprintf("transaction control (SAVEPOINT %s %s) belongs to the replayer", arg1, arg2)
	case sqlite3.SQLITE_ATTACH:
		return fmt.Sprintf("ATTACH of %q would open another database file", arg1)
	case sqlite3.SQLITE_DETACH:
		return fmt.Sprintf("DETACH of %q", arg1)
	case sqlite3.SQLITE_CREATE_VTABLE, sqlite3.SQLITE_DROP_VTABLE:
		return fmt.Sprintf("virtual table %q (module %s)", arg1, arg2)
	case sqlite3.SQLITE_CREATE_TEMP_TABLE, sqlite3.SQLITE_CREATE_TEMP_INDEX,
		sqlite3.SQLITE_CREATE_TEMP_TRIGGER, sqlite3.SQLITE_CREATE_TEMP_VIEW,
		sqlite3.SQLITE_DROP_TEMP_TABLE, sqlite3.SQLITE_DROP_TEMP_INDEX,
		sqlite3.SQLITE_DROP_TEMP_TRIGGER, sqlite3.SQLITE_DROP_TEMP_VIEW:
		return fmt.Sprintf("temporary schema object %q", arg1)
	}
	return fmt.Sprintf("SQLite action %d (%q, %q) is not one lightningd's statements perform", op, arg1, arg2)
}

// deniedFunctions are SQL functions a replayed statement may not call even
// though they exist: load_extension loads a shared library from any path
// (it is also switched off on the connection), fts3_tokenizer can register a
// tokenizer by raw pointer. No other function of this SQLite build touches
// a file: readfile, writefile and edit belong to the sqlite3 shell, and
// sqlite_dbpage and dbstat are not compiled in (and are virtual tables,
// refused anyway).
var deniedFunctions = map[string]bool{
	"load_extension": true,
	"fts3_tokenizer": true,
}

func checkFunction(name string) string {
	if deniedFunctions[strings.ToLower(name)] {
		return fmt.Sprintf("function %s()", name)
	}
	return ""
}

// allowedPragmas are the PRAGMAs a replayed statement may run, with the
// values it may set: only what lightningd sends through db_write. Its
// SQLite backend emits PRAGMA foreign_keys = OFF and = ON around migrations
// that rebuild tables (testdata/trace1.jsonl, crash3.jsonl, long-3000.jsonl
// and legacy-v1.dbak hold no other PRAGMA). Reading a pragma's value
// (no value given) is allowed for the same names.
var allowedPragmas = map[string][]string{
	"foreign_keys": {"on", "off", "1", "0", "true", "false", "yes", "no"},
}

func checkPragma(name, value string) string {
	values, ok := allowedPragmas[strings.ToLower(name)]
	if !ok {
		if value != "" {
			return fmt.Sprintf("PRAGMA %s = %s", name, value)
		}
		return fmt.Sprintf("PRAGMA %s", name)
	}
	if value == "" {
		return ""
	}
	v := strings.ToLower(strings.Trim(value, `'"`))
	for _, a := range values {
		if v == a {
			return ""
		}
	}
	return fmt.Sprintf("PRAGMA %s = %s", name, value)
}

// refusedKeywords are the first keywords of statements refused before
// anything of their record runs: the authorizer would refuse them too, but
// only once the statements before them had run inside the transaction.
var refusedKeywords = map[string]string{
	"BEGIN":     "transaction control (BEGIN) belongs to the replayer",
	"COMMIT":    "transaction control (COMMIT) belongs to the replayer",
	"END":       "transaction control (END) belongs to the replayer",
	"ROLLBACK":  "transaction control (ROLLBACK) belongs to the replayer",
	"SAVEPOINT": "transaction control (SAVEPOINT) belongs to the replayer",
	"RELEASE":   "transaction control (RELEASE) belongs to the replayer",
	"ATTACH":    "ATTACH would open another database file",
	"DETACH":    "DETACH",
	"VACUUM":    "VACUUM (VACUUM INTO writes a copy of the database to any path)",
}

// precheck refuses a statement by its first keyword (after white space,
// comments and empty statements), returning the reason or "".
func precheck(stmt string) string {
	w := strings.ToUpper(firstWord(stmt))
	return refusedKeywords[w]
}

// firstWord returns the first SQL keyword of s: leading white space, "--"
// and "/* */" comments and semicolons are skipped, as SQLite skips them.
func firstWord(s string) string {
	for {
		s = strings.TrimLeft(s, " \t\r\n\f\v;")
		switch {
		case strings.HasPrefix(s, "--"):
			i := strings.IndexByte(s, '\n')
			if i < 0 {
				return ""
			}
			s = s[i+1:]
		case strings.HasPrefix(s, "/*"):
			i := strings.Index(s[2:], "*/")
			if i < 0 {
				return ""
			}
			s = s[2+i+2:]
		default:
			end := 0
			for end < len(s) && isWordByte(s[end]) {
				end++
			}
			return s[:end]
		}
	}
}

func isWordByte(b byte) bool {
	return b == '_' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9'
}
