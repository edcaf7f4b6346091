package main

import (
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
)

// serveStore runs backup-cli server (no auth file: every client is admin,
// unless args add one) on the store at dir and returns its socket: URL.
func serveStore(t *testing.T, dir string, args ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := exec.Command(cliBin.get(t), append([]string{"server", "file://" + dir, addr}, args...)...)
	logs := &syncBuffer{}
	srv.Stderr = logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "socket:" + addr
		}
		if i > 200 {
			t.Fatalf("server did not start: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGCExclusiveCLI: gc --exclusive, over file:// and over socket: with
// an admin token, refuses while bob's writer is live (naming bob, in text
// and in JSON), and once it closes reclaims the forgotten restore points
// in one run; every node still restores, the store verifies with its data,
// and the leases are given back.
func TestGCExclusiveCLI(t *testing.T) {
	t.Parallel()
	for _, transport := range []string{"file", "socket"} {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			dir, fileURL := historyStore(t)
			url := fileURL
			if transport == "socket" {
				url = serveStore(t, dir)
			}
			st, err := store.Open(t.Context(), fileURL, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			n, err := history.OpenNode(t.Context(), st, "bob")
			if err != nil {
				t.Fatal(err)
			}
			mustFail(t, `node "bob" held by`, "gc", "--exclusive", url)
			out, _, err := runCLI(t, "gc", "--exclusive", "--json", url)
			var refusal struct {
				Refused bool          `json:"refused"`
				Held    []store.Lease `json:"held"`
			}
			if err == nil || json.Unmarshal([]byte(out), &refusal) != nil || !refusal.Refused || len(refusal.Held) != 1 || refusal.Held[0].Node != "bob" {
				t.Fatalf("gc --exclusive --json with bob open: %v\n%s", err, out)
			}
			n.Close()

			mustRun(t, "forget", "--node", "default", "--keep-last", "1", url)
			before := restoreNewest(t, url, "bob")
			out = mustRun(t, "gc", "--exclusive", "--dry-run", url)
			if !strings.Contains(out, "Dry run of gc --exclusive") || !strings.Contains(out, "kept: 0 chunks younger") {
				t.Fatalf("gc --exclusive --dry-run:\n%s", out)
			}
			out = mustRun(t, "gc", "--exclusive", "--json", url)
			var rep map[string]any
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("gc --exclusive --json: %v\n%s", err, out)
			}
			if rep["exclusive"] != true || rep["reclaimed_bytes"].(float64) == 0 || rep["kept_young_chunks"].(float64) != 0 || rep["newly_condemned_chunks"].(float64) != 0 {
				t.Fatalf("gc --exclusive --json: %s", out)
			}
			t.Logf("gc --exclusive over %s reclaimed %.0f bytes in one run (%v packs deleted, %v repacked, %v consolidated)",
				transport, rep["reclaimed_bytes"], rep["deleted_packs"], rep["repacked_packs"], rep["consolidated_packs"])
			mustRun(t, "verify", "--read-data", url)
			sameDB(t, restoreNewest(t, url, "default"), testdata+"trace1-final.sqlite3")
			sameDB(t, restoreNewest(t, url, "bob"), before)
			for _, node := range []string{"default", "bob"} {
				n, err := history.OpenNode(t.Context(), st, node)
				if err != nil {
					t.Fatalf("open %s after gc --exclusive: %v", node, err)
				}
				n.Close()
			}
		})
	}
}
