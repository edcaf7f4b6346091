package replay

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/clnbackup/backup/store/journal"
)

// TraceEntry is one line of a recorded db_write trace (testdata/*.jsonl): a
// hook call (Event empty, Version and Writes set) or a marker such as
// "getmanifest", "init" or "eof". It exists so that every package's tests
// read the real traces the same way.
type TraceEntry struct {
	// Event is the marker name; empty for a hook call.
	Event string
	// Version is the hook's data_version.
	Version uint32
	// Writes are the hook's SQL statements.
	Writes []string
	// BeforeInit is true for hooks lightningd sent before the plugin's init.
	BeforeInit bool
	// PID is lightningd's process id; a new one means a restart.
	PID int
	// Seq is the hook's index within its lightningd process (for "eof", the
	// number of hooks that process sent).
	Seq int
}

// IsHook reports whether e is a db_write call rather than a marker.
func (e TraceEntry) IsHook() bool { return e.Event == "" }

type traceLine struct {
	Event       string    `json:"event"`
	DataVersion *uint32   `json:"data_version"`
	Writes      *[]string `json:"writes"`
	BeforeInit  bool      `json:"before_init"`
	PID         int       `json:"pid"`
	Seq         int       `json:"seq"`
}

// ReadTrace reads a JSON-lines db_write trace. Every line must be either a
// marker (with "event") or a hook (with "data_version" and "writes").
func ReadTrace(path string) ([]TraceEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	var out []TraceEntry
	for n := 1; ; n++ {
		var l traceLine
		if err := dec.Decode(&l); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("read trace %s: entry %d: %w", path, n, err)
		}
		e := TraceEntry{Event: l.Event, BeforeInit: l.BeforeInit, PID: l.PID, Seq: l.Seq}
		switch {
		case l.Event != "":
		case l.DataVersion != nil && l.Writes != nil:
			e.Version, e.Writes = *l.DataVersion, *l.Writes
		default:
			return nil, fmt.Errorf("read trace %s: entry %d: neither an event nor a hook", path, n)
		}
		out = append(out, e)
	}
}

// Records returns the hooks of a trace as journal records in trace order,
// numbered with Seq 1, 2, ... as a journal would number them.
func Records(entries []TraceEntry) []journal.Record {
	var out []journal.Record
	for _, e := range entries {
		if !e.IsHook() {
			continue
		}
		out = append(out, journal.Record{
			Seq:        uint64(len(out) + 1),
			Version:    e.Version,
			Statements: e.Writes,
		})
	}
	return out
}
