package journal

import (
	"bufio"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestCrashTrace replays a real lightningd history (the repo's testdata/crash3.jsonl,
// from /work/shared/traces): lightningd was killed between the db_write hook
// for data_version 508 and its commit, and re-sent 508 with other statements
// after the restart. The journal is driven by the plugin's version rules and
// reopened at each lightningd restart; the logical history must hold every
// version once, with the re-sent 508, and keep the PRAGMA hooks.
func TestCrashTrace(t *testing.T) {
	t.Parallel()
	f, err := os.Open("../../testdata/crash3.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	opts := Options{SegmentSize: 64 << 10}
	var j *Journal
	defer func() {
		if j != nil {
			mustClose(t, j)
		}
	}()
	var model []Record // the correct history, built independently
	replaced := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var line struct {
			Event       string   `json:"event"`
			DataVersion *uint32  `json:"data_version"`
			Writes      []string `json:"writes"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if line.Event == "getmanifest" { // lightningd (re)started the plugin
			if j != nil {
				mustClose(t, j)
			}
			j = mustOpen(t, dir, opts)
			continue
		}
		if line.DataVersion == nil {
			continue
		}
		r := Record{Version: *line.DataVersion, Time: time.Now(), Statements: line.Writes}
		last, ok := j.Last()
		switch {
		case !ok || r.Version == last.Version+1 || (r.Version == last.Version && r.PragmaOnly()):
			mustAppend(t, j, r)
			model = append(model, r)
		case r.Version == last.Version:
			if _, err := j.Replace(r); err != nil {
				t.Fatal(err)
			}
			replaced++
			for len(model) > 0 && model[len(model)-1].Version == r.Version {
				model = model[:len(model)-1]
			}
			model = append(model, r)
		default:
			t.Fatalf("version %d after %d: the trace breaks the rules", r.Version, last.Version)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if replaced != 1 {
		t.Fatalf("%d rewinds in the trace, want 1", replaced)
	}
	mustClose(t, j)
	j = mustOpen(t, dir, opts)

	got := collect(t, j, 0)
	if len(got) != len(model) {
		t.Fatalf("%d logical records, model has %d", len(got), len(model))
	}
	seen := map[uint32]int{}
	for i, r := range got {
		if r.Version != model[i].Version || strings.Join(r.Statements, "\n") != strings.Join(model[i].Statements, "\n") {
			t.Fatalf("logical record %d (seq %d, version %d) differs from the model (version %d)", i, r.Seq, r.Version, model[i].Version)
		}
		if !r.PragmaOnly() {
			seen[r.Version]++
		}
	}
	for v := uint32(1); v <= 611; v++ {
		if seen[v] != 1 {
			t.Fatalf("version %d: %d changes in the logical history, want 1", v, seen[v])
		}
	}
	for _, r := range got {
		if r.Version == 508 && !strings.HasPrefix(r.Statements[0], "UPDATE version SET version=286") {
			t.Fatalf("version 508 is the uncommitted change: %.60q", r.Statements[0])
		}
	}
	if len(segFiles(t, dir)) < 3 {
		t.Fatal("the trace should span several 64 KiB segments")
	}
}
