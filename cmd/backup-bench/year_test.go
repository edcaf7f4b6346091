package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
)

// TestYearSmall runs `backup-bench year` at 3 nodes x 40 days: the path of
// the year-of-history benchmark (compactions under the injected clock,
// then backup-cli forget --keep-daily 30 --keep-weekly 52, gc, gc
// --exclusive and verify). Each node keeps exactly the restore points the
// policy names (worked out from the days, apart from forget's code), and
// after gc every node's newest state and every kept restore point of two
// nodes restore equal, table by table, to the node's database then.
func TestYearSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds backup-cli and writes 117 compactions")
	}
	var stdout, stderr bytes.Buffer
	args := []string{"year", "--nodes", "3", "--days", "40", "--check-nodes", "2", "--json", "--work-dir", filepath.Join(t.TempDir(), "w")}
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.Bytes())
	}
	var res yearResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("%v\n%s", err, stdout.Bytes())
	}
	if !res.RetentionOK || len(res.Mismatches) > 0 {
		t.Fatalf("retention ok %v, mismatches %v", res.RetentionOK, res.Mismatches)
	}
	// Days 10-39 (daily), and the last day of the earlier ISO weeks: day 0
	// is a Monday, so day 6 (13, 20, 27, 34 and 39 are daily already).
	y := yearConfig{Days: 40, KeepDaily: 30, KeepWeekly: 52}
	kept := y.keptDays(0, 40)
	if len(kept) != 31 || !kept[6] || !kept[10] || kept[9] || kept[7] || !kept[39] {
		t.Fatalf("kept days %v", kept)
	}
	// Every node's newest state, and 31 restore points of each of 2 nodes.
	if res.KeptManifests != 3*31 || res.Restores != 3+2*31 {
		t.Fatalf("%d manifests kept, %d restores compared", res.KeptManifests, res.Restores)
	}
	if res.Generate.Manifests != 3*79 || res.Generate.GCRuns != 5 {
		t.Fatalf("generated %+v", res.Generate)
	}
	want := []string{"verify (a year)", "forget --dry-run", "forget", "gc --dry-run", "gc", "gc --exclusive", "verify (after gc)"}
	if len(res.Commands) != len(want) {
		t.Fatalf("commands %+v", res.Commands)
	}
	for i, c := range res.Commands {
		if c.Name != want[i] || c.MaxRSS <= 0 || c.Summary == "" {
			t.Errorf("command %d: %+v, want %s", i, c, want[i])
		}
	}
	var table bytes.Buffer
	res.print(&table)
	if !bytes.Contains(table.Bytes(), []byte("retention as the policy says: true")) {
		t.Errorf("table:\n%s", table.Bytes())
	}
}
