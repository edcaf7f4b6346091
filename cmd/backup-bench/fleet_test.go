package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
)

// TestFleetSmall runs backup-bench fleet small (2 nodes, both modes,
// saturated, compacting every 20 records): changes are acknowledged, nodes
// compact, and the server's CPU, memory and fdatasyncs are measured.
func TestFleetSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds backup-cli and runs a server")
	}
	var stdout, stderr bytes.Buffer
	args := []string{"fleet", "--nodes", "2", "--duration", "1s", "--rate", "0", "--compact-records", "20", "--json", "--work-dir", filepath.Join(t.TempDir(), "w")}
	if err := run(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.Bytes())
	}
	var out struct {
		Results []fleetResult `json:"results"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("%v\n%s", err, stdout.Bytes())
	}
	if len(out.Results) != 2 {
		t.Fatalf("%d results, want 2 (group commit off and on)", len(out.Results))
	}
	for _, r := range out.Results {
		if r.Errors != 0 || r.Changes == 0 || r.Compactions == 0 || r.Fdatasyncs <= 0 || r.ServerPeakMiB <= 0 || r.HookP99Ms <= 0 {
			t.Errorf("result %+v", r)
		}
	}
}
