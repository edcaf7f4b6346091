package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/replay"
)

// TestParseRestoreTime: --time takes RFC 3339 times and durations ago,
// with d for days, and refuses anything else saying what it accepts.
func TestParseRestoreTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 15, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		arg  string
		want time.Time // zero: refused
	}{
		{"2026-12-01T14:00:00Z", time.Date(2026, 12, 1, 14, 0, 0, 0, time.UTC)},
		{"2026-12-01T14:00:00.5+01:00", time.Date(2026, 12, 1, 13, 0, 0, 5e8, time.UTC)},
		{"90m", now.Add(-90 * time.Minute)},
		{"2h", now.Add(-2 * time.Hour)},
		{"3d", now.Add(-72 * time.Hour)},
		{"1d12h", now.Add(-36 * time.Hour)},
		{"1.5d", now.Add(-36 * time.Hour)},
		{"0s", now},
		{"yesterday", time.Time{}},
		{"-2h", time.Time{}},
		{"-1d", time.Time{}},
		{"1d-2h", time.Time{}},
		{"3x", time.Time{}},
		{"d", time.Time{}},
		{"2026-12-01", time.Time{}},
	} {
		t.Run(tc.arg, func(t *testing.T) {
			t.Parallel()
			got, err := parseRestoreTime(tc.arg, now)
			if tc.want.IsZero() {
				if err == nil || !strings.Contains(err.Error(), "neither an RFC 3339 time") {
					t.Fatalf("parseRestoreTime(%q) = %v, %v; want a refusal", tc.arg, got, err)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("parseRestoreTime(%q) = %v, %v; want %v", tc.arg, got, err, tc.want)
			}
		})
	}
}

// TestRestoreTime records trace1 with compactions, then restores by time:
// at each compaction's restore point the state equals restore --version of
// that point's data_version, table by table; into a lightning directory
// the old state is refused as for --version; now (0s) is the newest state
// with no warning; a time before the init, or an hour ago, is refused
// naming the oldest state; --time with --version is refused.
func TestRestoreTime(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	url := "file://" + filepath.Join(tmp, "store")
	ldir := filepath.Join(tmp, "lightning")
	os.Mkdir(ldir, 0o755)
	mustRun(t, "init", "--lightning-dir", ldir, url)
	applyTrace(t, url, testdata+"trace1.jsonl")
	var l struct {
		Nodes []struct {
			Manifests []struct {
				Seq     uint64    `json:"seq"`
				Created time.Time `json:"created"`
				Version uint32    `json:"data_version"`
				Records int       `json:"change_records"`
			} `json:"manifests"`
			NewestVersion uint32 `json:"newest_data_version"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "list", "--json", url)), &l); err != nil || len(l.Nodes) != 1 || len(l.Nodes[0].Manifests) < 4 {
		t.Fatalf("list --json: %+v (%v)", l, err)
	}
	ms := l.Nodes[0].Manifests
	for _, m := range ms[1 : len(ms)-1] {
		t.Run(fmt.Sprintf("manifest %d", m.Seq), func(t *testing.T) {
			dir := t.TempDir()
			at := m.Created.Format(time.RFC3339Nano)
			byTime, byVersion := filepath.Join(dir, "time.sqlite3"), filepath.Join(dir, "version.sqlite3")
			var res restoreJSON
			if err := json.Unmarshal([]byte(mustRun(t, "restore", "--json", "--time", at, url, byTime)), &res); err != nil {
				t.Fatal(err)
			}
			// The restore point's state, or a newer change it left in the
			// journal (lightningd could still replace it) received before it
			// was written; never one received after.
			if res.Version < m.Version || res.Version >= l.Nodes[0].NewestVersion || res.Received.After(m.Created) || !res.Time.Equal(m.Created) || res.From == "" {
				t.Fatalf("restore --time %s (manifest %d, data_version %d): %+v", at, m.Seq, m.Version, res)
			}
			mustRun(t, "restore", "--version", strconv.FormatUint(uint64(res.Version), 10), url, byVersion)
			sameDB(t, byTime, byVersion)
			if v, _, _ := replay.DataVersionOf(byTime); v != res.Version {
				t.Fatalf("restored data_version %d, want %d", v, res.Version)
			}
			mustFail(t, "refusing to restore the old state", "restore", "--time", at, url, ldir)
		})
	}
	newest := filepath.Join(tmp, "newest.sqlite3")
	out, errOut, ok := run(t, "restore", "--time", "0s", url, newest)
	if !ok || errOut != "" || !strings.Contains(out, "This is the newest state received at or before") {
		t.Fatalf("restore --time 0s: ok=%v\n%s%s", ok, out, errOut)
	}
	sameDB(t, newest, testdata+"trace1-final.sqlite3")
	for _, at := range []string{"2000-01-01T00:00:00Z", "1h"} {
		mustFail(t, "the oldest state the store holds is data_version 0, received at "+ms[0].Created.Format(time.RFC3339Nano), "restore", "--time", at, url, filepath.Join(tmp, "none"))
	}
	mustFail(t, "exclusive", "restore", "--time", "1h", "--version", "3", url, filepath.Join(tmp, "none"))
	mustFail(t, "neither an RFC 3339 time", "restore", "--time", "yesterday", url, filepath.Join(tmp, "none"))
}
