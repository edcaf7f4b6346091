package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestMain lets the test binary act as the RSS wrapper, as backup-bench does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == rssWrapArg {
		os.Exit(rssWrap(os.Args[2:]))
	}
	os.Exit(m.Run())
}

// TestSmallRun runs the whole pipeline small (2 nodes x 1 MB x 2 steps,
// the second a VACUUM-like rebuild), and again on an encrypted store
// (--encrypt), and checks the JSON: every section is there and every node
// restored to lightningd's database, in both runs.
func TestSmallRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries and runs the pipeline")
	}
	work := t.TempDir()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--nodes", "2", "--size", "1MB", "--steps", "2", "--vacuum-step", "2", "--encrypt", "--json", "--work-dir", filepath.Join(work, "w")}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.Bytes())
	}
	data := stdout.Bytes()
	var r map[string]any
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	for _, k := range []string{"config", "machine", "hooks", "storage", "steps", "restores", "gc", "memory", "cli", "small", "encrypted", "targets", "definitions"} {
		if _, ok := r[k]; !ok {
			t.Errorf("JSON has no %q", k)
		}
	}
	var res result
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Restores) != 2 {
		t.Fatalf("%d restores, want 2", len(res.Restores))
	}
	for _, x := range res.Restores {
		if !x.Matched || x.Bytes == 0 || x.MBps <= 0 || x.MaxRSS <= 0 {
			t.Errorf("restore %+v", x)
		}
	}
	s := res.Storage
	if s.Stored.Allocated <= 0 || s.Bound.Bytes <= 0 || s.Python.Total() <= 0 || s.Snapshots != 6 || s.Bound.RawBytes < s.Bound.Bytes {
		t.Errorf("storage %+v", s)
	}
	if res.Hooks.Latency.Count == 0 || res.Hooks.Noop.Count != res.Hooks.Count || res.Memory.PluginIdleRSS <= 0 {
		t.Errorf("hooks %+v memory %+v", res.Hooks, res.Memory)
	}
	if len(res.Steps) != 2 || !res.Steps[1].Vacuum || !res.Steps[1].CLI || len(res.GC) != 2 || len(res.Targets) < 8 {
		t.Errorf("steps %+v, %d gc runs, %d targets", res.Steps, len(res.GC), len(res.Targets))
	}
	if sm := res.Small; sm == nil || len(sm.Restores) != 2 || !sm.Restores[0].Matched || !sm.Restores[1].Matched ||
		sm.Config.Nodes != 2 || sm.Config.Steps != 2 || sm.Config.Size != res.Config.Size*4 {
		t.Errorf("memory-check run (4x the size): %+v", res.Small)
	}
	// The stored bytes by content add up, and the change chunks are what
	// the change-log bound predicts (the same records, batched and
	// compressed the same way) within a few percent.
	k := s.Content
	if k.Pages.Count == 0 || k.Changes.Count == 0 || k.ListsPatches.Count == 0 || k.PackTrailers == 0 || k.total() != s.Stored.Allocated {
		t.Errorf("content %+v sums to %d, stored %d", k, k.total(), s.Stored.Allocated)
	}
	if b := s.ChangeBound; b.Bytes == 0 || b.Records == 0 || float64(k.Changes.Bytes) > 1.05*float64(b.Bytes) || float64(k.Changes.Bytes) < 0.95*float64(b.Bytes) {
		t.Errorf("change chunks %+v, change-log bound %+v", k.Changes, b)
	}
	if e := res.Encrypted; e == nil || !e.Config.Encrypted || res.Config.Encrypted || len(e.Restores) != 2 || !e.Restores[0].Matched || !e.Restores[1].Matched ||
		e.Hooks.Latency.Count != res.Hooks.Latency.Count || e.Storage.Stored.Allocated == 0 {
		t.Errorf("encrypted run: %+v", e)
	}
	var table bytes.Buffer
	res.print(&table)
	if !bytes.Contains(table.Bytes(), []byte("page bound")) || !bytes.Contains(table.Bytes(), []byte("PASS")) || !bytes.Contains(table.Bytes(), []byte("encrypted hook p99")) {
		t.Errorf("table:\n%s", table.Bytes())
	}
}
