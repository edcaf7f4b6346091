package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
	"github.com/clnbackup/backup/store/remote"
)

// openWriter opens node for writing as the plugin does (history.OpenNode
// takes the lease and refreshes it), on a store whose clock is skew off the
// real one, and appends records changes; the node closes when the test ends.
func openWriter(t testing.TB, url, node string, skew time.Duration, records int) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, url, store.Options{Now: func() time.Time { return time.Now().Add(skew) }})
	if err != nil {
		t.Fatal(err)
	}
	n, err := history.OpenNode(ctx, st, node)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		st.Close()
	})
	for v := 1; v <= records; v++ {
		r := journal.Record{Version: uint32(v), Time: time.Now().UTC(), Statements: []string{fmt.Sprintf("UPDATE vars SET intval=%d WHERE name='data_version';", v)}}
		if _, err := n.Journal().Append(r); err != nil {
			t.Fatal(err)
		}
	}
}

// serveAdmin serves the store at url on loopback and returns its socket:
// URL and an admin token.
func serveAdmin(t *testing.T, url string) (string, string) {
	t.Helper()
	return serveToken(t, url, "*")
}

// serveToken serves the store at url on loopback and returns its socket:
// URL and a token with the given rights ("*", or node names).
func serveToken(t *testing.T, url, rights string) (string, string) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	token, err := remote.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	auth, err := remote.ParseAuth(strings.NewReader(token + " " + rights + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := remote.NewServer(st, auth, remote.ServerOptions{})
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Shutdown(ctx)
		st.Close()
	})
	return "socket:" + l.Addr().String(), token
}

// TestStatusCLI: a node whose writer holds its lease shows live, with its
// journal records as backlog; a node whose writer's lease expired (its
// clock ten minutes behind: it stopped refreshing, as far as the store can
// tell) shows expired, and --max-stale exits non-zero naming it and the
// node that never had a writer; --json parses, with times and ages; the
// same through a store server with an admin token, where the free space is
// unknown.
func TestStatusCLI(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	url := "file://" + filepath.Join(tmp, "store")
	for _, n := range []string{"alice", "bob", "carol"} {
		mustRun(t, "init", "--node", n, url)
	}
	openWriter(t, url, "alice", 0, 3)
	openWriter(t, url, "bob", -10*time.Minute, 1)
	socket, admin := serveAdmin(t, url)

	for _, tc := range []struct {
		name      string
		args      []string
		freeKnown bool
	}{
		{"file", []string{url}, true},
		{"socket admin", []string{"--token", admin, socket}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := mustRun(t, append([]string{"status"}, tc.args...)...)
			for _, want := range []string{"NODE", "WRITER", "BACKLOG", "alice  live, refreshed", "3 changes", "EXPIRED 9m", "carol  none"} {
				if !strings.Contains(out, want) {
					t.Errorf("status lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "free space unknown") == tc.freeKnown {
				t.Errorf("free space known %v, got:\n%s", tc.freeKnown, out)
			}

			var res struct {
				At        time.Time `json:"at"`
				FreeBytes uint64    `json:"free_bytes"`
				FreeKnown bool      `json:"free_known"`
				Nodes     []struct {
					Name   string `json:"name"`
					Writer struct {
						State       string    `json:"state"`
						LastRefresh time.Time `json:"last_refresh"`
						StaleSince  time.Time `json:"stale_since"`
					} `json:"writer"`
					Backlog struct {
						Records int   `json:"records"`
						Bytes   int64 `json:"bytes"`
					} `json:"backlog"`
					LastChangeFrom       string `json:"last_change_from"`
					StaleSeconds         *int64 `json:"stale_seconds"`
					LastChangeAgeSeconds *int64 `json:"last_change_age_seconds"`
					SnapshotAgeSeconds   *int64 `json:"snapshot_age_seconds"`
				} `json:"nodes"`
				StaleNodes []string `json:"stale_nodes"`
			}
			out = mustRun(t, append([]string{"status", "--json"}, tc.args...)...)
			if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Nodes) != 3 || res.At.IsZero() {
				t.Fatalf("status --json: %v\n%s", err, out)
			}
			if res.FreeKnown != tc.freeKnown || (tc.freeKnown && res.FreeBytes == 0) {
				t.Errorf("free space: %d known %v", res.FreeBytes, res.FreeKnown)
			}
			for i, want := range []struct {
				state   string
				backlog int
				from    string
			}{{"live", 3, "journal"}, {"expired", 1, "journal"}, {"none", 0, "snapshot"}} {
				n := res.Nodes[i]
				if n.Writer.State != want.state || n.Backlog.Records != want.backlog || n.LastChangeFrom != want.from ||
					n.LastChangeAgeSeconds == nil || n.SnapshotAgeSeconds == nil || (want.backlog > 0 && n.Backlog.Bytes == 0) {
					t.Errorf("node %s: %+v, want %+v", n.Name, n, want)
				}
			}
			if s := res.Nodes[1].StaleSeconds; s == nil || *s < 8*60 || *s > 10*60 {
				t.Errorf("bob's lease expired %v seconds ago, want about 9 minutes", s)
			}

			// bob's lease expired 9 minutes ago: stale for 5 minutes,
			// not for an hour; carol never had a writer: always.
			for _, c := range []struct {
				maxStale string
				stale    []string
			}{{"5m", []string{"bob", "carol"}}, {"1h", []string{"carol"}}} {
				args := append([]string{"status", "--max-stale", c.maxStale}, tc.args...)
				_, errOut, ok := run(t, args...)
				if ok || !strings.Contains(errOut, "not backed up") || !strings.Contains(errOut, "carol (no writer lease") ||
					strings.Contains(errOut, "alice") || strings.Contains(errOut, "bob (writer lease expired") != slices.Contains(c.stale, "bob") {
					t.Errorf("status --max-stale %s: ok=%v\n%s", c.maxStale, ok, errOut)
				}
				out, _, _ := run(t, append([]string{"status", "--json", "--max-stale", c.maxStale}, tc.args...)...)
				if err := json.Unmarshal([]byte(out), &res); err != nil || !slices.Equal(res.StaleNodes, c.stale) {
					t.Errorf("status --json --max-stale %s: stale %v, want %v (%v)", c.maxStale, res.StaleNodes, c.stale, err)
				}
			}
		})
	}
	mustFail(t, "no such node", "status", "--node", "dave", url)
	// Only live writers: --max-stale passes.
	mustRun(t, "status", "--node", "alice", "--max-stale", "1m", url)
}

// BenchmarkStatus100Nodes: backup-cli status --json over a file:// store of
// 100 nodes, each initialised from a real 356 KiB database with three
// journal records after it and a live writer.
func BenchmarkStatus100Nodes(b *testing.B) {
	ctx := context.Background()
	url := "file://" + filepath.Join(b.TempDir(), "store")
	st, _, err := store.Create(ctx, url, store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for i := range 100 {
		node := fmt.Sprintf("node%03d", i)
		if _, err := history.Init(ctx, st, node, testdata+"crash3-final.sqlite3", nil); err != nil {
			b.Fatal(err)
		}
		openWriter(b, url, node, 0, 3)
	}
	b.ResetTimer()
	for b.Loop() {
		root := newRootCmd()
		root.SetArgs([]string{"status", "--json", url})
		var out strings.Builder
		root.SetOut(&out)
		if err := root.ExecuteContext(ctx); err != nil {
			b.Fatal(err)
		}
		if !strings.Contains(out.String(), `"node099"`) {
			b.Fatalf("status lacks node099:\n%s", out.String())
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
}
