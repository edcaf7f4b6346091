package plugin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBackupCompact: nothing to compact gives the legacy statistics; a
// compaction starts in the background, a second call meanwhile is told it
// is still in progress, writes go on, and the result is logged and shown by
// backup-status.
func TestBackupCompact(t *testing.T) {
	t.Parallel()
	dir, url := newLightningDir(t, "default", "")
	entries := readTrace(t, "trace1.jsonl")
	var compacted bool
	runs := playTrace(t, dir, entries, playOpts{
		initOptions: map[string]any{optCompactChanges: 0, optCompactBytes: 0, optCompactEvery: "0"},
		beforeHook: func(r *pipeRun, hook int) {
			switch hook {
			case 12: // after init, before any compaction
				var stats LegacyStats
				r.call("backup-compact", []any{}) // the first real compaction
				r.waitLog("Compaction done")
				m := r.call("backup-compact", map[string]any{})
				if err := json.Unmarshal(m.Result, &stats); err != nil || stats.BackupSize <= 0 || stats.VersionCount != 2 {
					t.Fatalf("nothing to compact: got %s, want backupsize > 0 and version_count 2 (the newest change and the snapshot)", m.raw)
				}
			case 200:
				a, b := r.expect(`"c1"`), r.expect(`"c2"`)
				r.write(encodeRequest(`"c1"`, "backup-compact", []any{}) + encodeRequest(`"c2"`, "backup-compact", []any{}))
				if m := r.wait(a, "backup-compact"); string(m.Result) != `{"result":"compaction started"}` {
					t.Fatalf("first backup-compact: %s", m.raw)
				}
				if m := r.wait(b, "backup-compact"); string(m.Result) != `{"result":"compaction still in progress"}` {
					t.Fatalf("second backup-compact: %s", m.raw)
				}
				compacted = true
			case 240:
				r.waitLog("Compaction done: manifest 5")
				checkStatus(t, r, url)
			}
		},
	})
	if !compacted {
		t.Fatal("trace too short")
	}
	if l := runs[0].logsWith("Compaction started (requested with backup-compact; "); len(l) != 2 {
		t.Errorf("want 2 compactions started; logs:\n%s", runs[0].allLogs())
	}
	// The first compaction kept its snapshot in the lightning directory's
	// compaction cache; the second read no page from the store.
	if l := runs[0].logsWith("Compaction done: manifest 5"); len(l) != 1 || !strings.Contains(l[0].Message, " 0 bytes of pages read") {
		t.Errorf("second compaction with a warm cache: want 0 bytes of pages read; logs:\n%s", runs[0].allLogs())
	}
	if fi, err := os.Stat(filepath.Join(dir, CacheDirName)); err != nil {
		t.Errorf("compaction cache directory: %v", err)
	} else if fi.Mode().Perm() != 0o700 {
		t.Errorf("compaction cache directory has mode %v, want 0700", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dir, CacheDirName, "default.snapshot")); err != nil {
		t.Errorf("compaction cache: %v", err)
	}
	restoreNewest(t, url, "default", testdata("trace1-final.sqlite3"))
	checkEveryManifest(t, url, "default", entries)
}

// checkStatus checks backup-status after the second compaction (manifests
// 1: init, 2-3: first compaction, 4-5: second).
func checkStatus(t *testing.T, r *pipeRun, url string) {
	t.Helper()
	m := r.call("backup-status", []any{})
	var s struct {
		State          string `json:"state"`
		Node           string `json:"node"`
		Store          string `json:"store"`
		DataVersion    uint32 `json:"data_version"`
		Manifests      int    `json:"manifests"`
		NewestManifest *struct {
			Seq             uint64    `json:"seq"`
			DataVersion     uint32    `json:"data_version"`
			SnapshotVersion uint32    `json:"snapshot_data_version"`
			Created         time.Time `json:"created"`
			AgeSeconds      *int64    `json:"age_seconds"`
		} `json:"newest_manifest"`
		Journal struct {
			Records *int   `json:"records"`
			Bytes   *int64 `json:"bytes"`
		} `json:"journal"`
		Compaction struct {
			State string `json:"state"`
			Last  *struct {
				Manifest        uint64   `json:"manifest"`
				DataVersion     uint32   `json:"data_version"`
				AddedBytes      *int64   `json:"added_bytes"`
				DurationSeconds *float64 `json:"duration_seconds"`
				SealedChanges   int      `json:"sealed_changes"`
				Reason          string   `json:"reason"`
			} `json:"last"`
			Automatic struct {
				Changes  *int64 `json:"changes"`
				Interval string `json:"interval"`
			} `json:"automatic"`
			SinceSnapshot *struct {
				Changes int64 `json:"changes"`
			} `json:"since_snapshot"`
		} `json:"compaction"`
		StoredBytes  int64   `json:"stored_bytes"`
		LogicalBytes int64   `json:"logical_bytes"`
		FreeBytes    *uint64 `json:"free_bytes"`
		// The low-space watch's state (its first check is at init).
		FreeThreshold *uint64 `json:"free_threshold_bytes"`
		LowSpace      *bool   `json:"low_space"`
	}
	if err := json.Unmarshal(m.Result, &s); err != nil {
		t.Fatalf("backup-status %s: %v", m.raw, err)
	}
	if s.FreeBytes == nil || *s.FreeBytes == 0 {
		t.Errorf("free space of the file:// store: %s", m.Result)
	}
	if s.FreeThreshold == nil || *s.FreeThreshold < DefaultFreeSpaceFloor || s.LowSpace == nil {
		t.Errorf("low-space watch state: %s", m.Result)
	}
	nm := s.NewestManifest
	if s.State != "backing up" || s.Node != "default" || s.Store != url {
		t.Errorf("state/node/store: %s", m.Result)
	}
	if s.DataVersion != 238 { // hooks 0..239 sent: two PRAGMA hooks repeat a version
		t.Errorf("data_version %d, want 238", s.DataVersion)
	}
	if nm == nil || nm.Seq != 5 || nm.DataVersion == 0 || nm.DataVersion != nm.SnapshotVersion || nm.AgeSeconds == nil || *nm.AgeSeconds < 0 {
		t.Errorf("newest_manifest: %s", m.Result)
	}
	if s.Manifests != 5 {
		t.Errorf("manifests %d, want 5", s.Manifests)
	}
	if nm != nil && (s.DataVersion <= nm.DataVersion || s.Journal.Records == nil || *s.Journal.Records < int(s.DataVersion-nm.DataVersion) ||
		s.Journal.Bytes == nil || *s.Journal.Bytes <= 0) {
		t.Errorf("data_version %d and journal after manifest at %d: %s", s.DataVersion, nm.DataVersion, m.Result)
	}
	c := s.Compaction
	if c.State != "idle" || c.Last == nil || c.Last.Manifest != 5 || c.Last.AddedBytes == nil || c.Last.DurationSeconds == nil ||
		c.Last.SealedChanges <= 0 || !strings.Contains(c.Last.Reason, "backup-compact") {
		t.Errorf("compaction: %s", m.Result)
	}
	if c.Automatic.Changes == nil || *c.Automatic.Changes != 0 || c.Automatic.Interval != "0 (disabled)" || c.SinceSnapshot == nil {
		t.Errorf("automatic compaction settings: %s", m.Result)
	}
	if s.StoredBytes <= 0 || s.LogicalBytes <= 0 {
		t.Errorf("stored/logical bytes: %s", m.Result)
	}
}

// TestNothingToCompact: a fresh node's backup-compact answers the
// statistics at once, and backup-status shows an idle, empty history.
func TestNothingToCompact(t *testing.T) {
	t.Parallel()
	dir, _ := newLightningDir(t, "default", "")
	r := startRun(t, dir, Config{})
	r.init(nil)
	m := r.call("backup-compact", []any{})
	var stats map[string]int64
	if err := json.Unmarshal(m.Result, &stats); err != nil || len(stats) != 2 || stats["backupsize"] <= 0 || stats["version_count"] != 1 {
		t.Fatalf("backup-compact: %s", m.raw)
	}
	m = r.call("backup-status", []any{})
	if !strings.Contains(string(m.Result), `"state":"idle"`) || !strings.Contains(string(m.Result), `"data_version":0`) {
		t.Errorf("backup-status: %s", m.raw)
	}
	if st := r.stop(); st != 0 {
		t.Fatalf("exit status %d", st)
	}
}
