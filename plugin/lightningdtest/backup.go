package lightningdtest

// Helpers for the backup plugin's RPC methods and for changes that look like
// lightningd's.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clnbackup/backup/store/journal"
)

// Answers of backup-compact (the Python plugin's), as Compact reports them.
const (
	CompactStarted    = "compaction started"
	CompactInProgress = "compaction still in progress"
	CompactNothing    = "nothing to compact" // answered {"backupsize": N, "version_count": M}
)

// Compact calls backup-compact and returns which of the Python plugin's
// answers it gave; any other answer is an error.
func (l *Lightningd) Compact() (string, error) {
	res, err := l.Call("backup-compact", nil)
	if err != nil {
		return "", err
	}
	var a struct {
		Result       string `json:"result"`
		BackupSize   *int64 `json:"backupsize"`
		VersionCount *int   `json:"version_count"`
	}
	if err := json.Unmarshal(res, &a); err == nil {
		switch {
		case a.Result == CompactStarted || a.Result == CompactInProgress:
			return a.Result, nil
		case a.Result == "" && a.BackupSize != nil && a.VersionCount != nil && *a.BackupSize > 0:
			return CompactNothing, nil
		}
	}
	return "", fmt.Errorf("backup-compact answered %s, not one of the Python plugin's answers", res)
}

// CompactionState calls backup-status and returns whether a compaction is
// running and the last compaction's result as backup-status shows it
// ("last"; nil if none finished yet).
func (l *Lightningd) CompactionState() (running bool, last map[string]any, err error) {
	res, err := l.Call("backup-status", nil)
	if err != nil {
		return false, nil, err
	}
	var st struct {
		Compaction struct {
			State string         `json:"state"`
			Last  map[string]any `json:"last"`
		} `json:"compaction"`
	}
	if err := json.Unmarshal(res, &st); err != nil {
		return false, nil, fmt.Errorf("backup-status: %v: %s", err, res)
	}
	switch st.Compaction.State {
	case "idle", "running":
		return st.Compaction.State == "running", st.Compaction.Last, nil
	}
	return false, nil, fmt.Errorf("backup-status: unknown compaction state in %s", res)
}

// CompactionIdle polls backup-status until no compaction runs (at most
// timeout) and returns the last compaction's result (see CompactionState).
func (l *Lightningd) CompactionIdle(timeout time.Duration) (map[string]any, error) {
	deadline := time.Now().Add(timeout)
	for {
		running, last, err := l.CompactionState()
		if err != nil || !running {
			return last, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("compaction still running after %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Bump is lightningd's data_version bump, the last statement of most
// transactions: it makes the database's data_version v.
func Bump(v uint32) string {
	return fmt.Sprintf("UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = %d", v-1)
}

// Change is a small synthetic lightningd-like transaction with data_version
// v: version 1 creates a vars table (with lightningd's data_version row) and
// a kv table; later versions write one kv row, padded with pad bytes, and
// every one ends with Bump(v).
func Change(v uint32, pad int) journal.Record {
	if v == 1 {
		return journal.Record{Version: 1, Statements: []string{
			"CREATE TABLE vars (name TEXT, val TEXT, intval INTEGER, blobval BLOB, PRIMARY KEY (name))",
			"INSERT INTO vars (name, intval) VALUES ('data_version', 0)",
			"CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)", Bump(1)}}
	}
	return journal.Record{Version: v, Statements: []string{
		fmt.Sprintf("INSERT OR REPLACE INTO kv VALUES (%d, 'value %d %s')", v%7, v, strings.Repeat("x", pad)), Bump(v)}}
}

// Resent is what lightningd might send instead of r when it re-sends r's
// data_version after a restart: other statements. It adds a marker row to
// lightningd's vars table (named after the version, valued tag) and, when r
// only inserted datastore rows before its data_version bump, drops those
// inserts.
func Resent(r journal.Record, tag string) journal.Record {
	n := len(r.Statements)
	marker := fmt.Sprintf("INSERT OR REPLACE INTO vars (name, val) VALUES ('resent-%d', '%s')", r.Version, strings.ReplaceAll(tag, "'", "''"))
	if n == 0 || !strings.HasPrefix(r.Statements[n-1], "UPDATE vars SET intval = intval + 1 WHERE name = 'data_version'") {
		return journal.Record{Version: r.Version, Statements: append(slices.Clone(r.Statements), marker)}
	}
	body, bump := r.Statements[:n-1], r.Statements[n-1]
	if !slices.ContainsFunc(body, func(s string) bool { return !strings.HasPrefix(s, "INSERT INTO datastore") }) {
		body = nil
	}
	return journal.Record{Version: r.Version, Statements: append(slices.Clone(body), marker, bump)}
}
