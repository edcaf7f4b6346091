package monitor_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
	"github.com/clnbackup/backup/store/monitor"
	"github.com/clnbackup/backup/store/remote"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var (
	tokAdmin = strings.Repeat("a", 40)
	tokAlice = strings.Repeat("1", 40)
)

// fixture is a store of two nodes, alice with a live writer and three
// journal records, bob initialised but never written (stale), served by a
// real store server on loopback that a client used once with the admin
// token and once with an unknown one.
type fixture struct {
	st  *store.Store
	srv *remote.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	url := "file://" + filepath.Join(t.TempDir(), "store")
	st, _, err := store.Create(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, n := range []string{"alice", "bob"} {
		if _, err := history.Init(ctx, st, n, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	// The writer has a store handle of its own, as the plugin would.
	wst, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := history.OpenNode(ctx, wst, "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		wst.Close()
	})
	for v := 1; v <= 3; v++ {
		r := journal.Record{Version: uint32(v), Time: time.Now().UTC(), Statements: []string{fmt.Sprintf("UPDATE vars SET intval=%d WHERE name='data_version';", v)}}
		if _, err := n.Journal().Append(r); err != nil {
			t.Fatal(err)
		}
	}

	auth, err := remote.ParseAuth(strings.NewReader(tokAdmin + " *\n" + tokAlice + " alice\n"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := remote.NewServer(st, auth, remote.ServerOptions{Errorf: t.Logf})
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(ctx) })
	socket := "socket:" + l.Addr().String()
	rs, err := store.Open(ctx, socket, store.Options{Token: tokAdmin})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := history.Status(ctx, rs, ""); err != nil {
		t.Fatal(err)
	}
	rs.Close()
	if bad, err := store.Open(ctx, socket, store.Options{Token: strings.Repeat("9", 40)}); err == nil {
		bad.Close()
		t.Fatal("an unknown token was let in")
	}
	return &fixture{st: st, srv: srv}
}

// get requests path from the handler's server with a bearer token ("":
// none) and returns the status code and body.
func get(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestMetricsAndPage: the metrics parse with Prometheus's own parser and
// hold each node's gauges (alice live with a backlog of 3, bob stale) and
// the server's counters (a login accepted, an unknown token refused,
// requests, bytes both ways); the page names both nodes with bob marked
// stale.
func TestMetricsAndPage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	h := monitor.New(monitor.Options{Store: f.st, Stats: f.srv.Stats, Authorize: f.srv.IsAdminToken, Errorf: t.Logf})
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)

	code, body := get(t, "GET", hs.URL+"/metrics", tokAdmin)
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	value := func(name string, labels ...string) (float64, bool) {
		fam, ok := fams[name]
		if !ok {
			return 0, false
		}
	metrics:
		for _, m := range fam.Metric {
			for i := 0; i < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue metrics
				}
			}
			switch {
			case m.Gauge != nil:
				return m.Gauge.GetValue(), true
			case m.Counter != nil:
				return m.Counter.GetValue(), true
			}
		}
		return 0, false
	}
	type check struct {
		name   string
		labels []string
		ok     func(float64) bool
		want   string
	}
	eq := func(w float64) func(float64) bool { return func(v float64) bool { return v == w } }
	pos := func(v float64) bool { return v > 0 }
	now := float64(time.Now().Unix())
	recent := func(v float64) bool { return v > now-600 && v <= now+60 }
	for _, c := range []check{
		{"clnbackup_status_up", nil, eq(1), "1"},
		{"clnbackup_node_writer_alive", []string{"node", "alice"}, eq(1), "1"},
		{"clnbackup_node_writer_alive", []string{"node", "bob"}, eq(0), "0"},
		{"clnbackup_node_stale", []string{"node", "alice"}, eq(0), "0"},
		{"clnbackup_node_stale", []string{"node", "bob"}, eq(1), "1"},
		{"clnbackup_node_journal_backlog_records", []string{"node", "alice"}, eq(3), "3"},
		{"clnbackup_node_journal_backlog_records", []string{"node", "bob"}, eq(0), "0"},
		{"clnbackup_node_journal_backlog_bytes", []string{"node", "alice"}, pos, "> 0"},
		{"clnbackup_node_last_change_timestamp_seconds", []string{"node", "alice"}, recent, "within the last 10 minutes"},
		{"clnbackup_node_snapshot_age_seconds", []string{"node", "bob"}, func(v float64) bool { return v >= 0 && v < 600 }, "under 10 minutes"},
		{"clnbackup_node_stored_bytes", []string{"node", "alice"}, func(v float64) bool { return v >= 0 }, "present"},
		{"clnbackup_node_logical_bytes", []string{"node", "alice"}, func(v float64) bool { return v >= 0 }, "present"},
		{"clnbackup_node_restore_points", []string{"node", "bob"}, eq(1), "1"},
		{"clnbackup_store_stored_bytes", nil, pos, "> 0"},
		{"clnbackup_server_connections_accepted_total", nil, eq(1), "1"},
		{"clnbackup_server_connections_refused_total", []string{"reason", "unknown-token"}, eq(1), "1"},
		{"clnbackup_server_connections_refused_total", []string{"reason", "max-conns"}, eq(0), "0"},
		{"clnbackup_server_requests_total", []string{"type", "list"}, pos, "> 0"},
		{"clnbackup_server_errors_total", []string{"code", "denied"}, eq(1), "1"},
		{"clnbackup_server_received_bytes_total", nil, pos, "> 0"},
		{"clnbackup_server_sent_bytes_total", nil, pos, "> 0"},
		{"clnbackup_server_connections", []string{"state", "authenticated"}, eq(0), "0"},
	} {
		v, ok := value(c.name, c.labels...)
		if !ok || !c.ok(v) {
			t.Errorf("%s%v = %v (present %v), want %s", c.name, c.labels, v, ok, c.want)
		}
	}
	if fams["clnbackup_server_requests_total"].GetType() != dto.MetricType_COUNTER || fams["clnbackup_node_writer_alive"].GetType() != dto.MetricType_GAUGE {
		t.Errorf("metric types: %v %v", fams["clnbackup_server_requests_total"].GetType(), fams["clnbackup_node_writer_alive"].GetType())
	}

	code, page := get(t, "GET", hs.URL+"/", tokAdmin)
	if code != http.StatusOK {
		t.Fatalf("/: %d %s", code, page)
	}
	for _, want := range []string{`<tr class="ok" id="node-alice"><td>alice</td><td>live, refreshed`, `<tr class="stale" id="node-bob"><td>bob</td><td>none</td>`, "STALE", "3 records"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
	if strings.Count(page, "STALE") != 1 || strings.Contains(page, "<script") {
		t.Errorf("want one stale node and no script:\n%s", page)
	}
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.Label {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestAccess: only a known bearer token reads (the server's admin tokens,
// or an --http-auth file's), only with GET or HEAD; a node token is not
// enough; without Authorize (loopback) everyone reads.
func TestAccess(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tokFile := filepath.Join(t.TempDir(), "http-auth")
	httpTok := strings.Repeat("h", 40)
	if err := os.WriteFile(tokFile, []byte("# scrapers\n"+httpTok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := monitor.LoadTokens(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	servers := map[string]string{}
	for name, authz := range map[string]func(string) bool{"admin": f.srv.IsAdminToken, "file": tf.Allows, "open": nil} {
		hs := httptest.NewServer(monitor.New(monitor.Options{Store: f.st, Stats: f.srv.Stats, Authorize: authz}))
		t.Cleanup(hs.Close)
		servers[name] = hs.URL
	}
	for _, tc := range []struct {
		server, method, path, token string
		want                        int
	}{
		{"admin", "GET", "/metrics", tokAdmin, 200},
		{"admin", "HEAD", "/", tokAdmin, 200},
		{"admin", "GET", "/metrics", "", 401},
		{"admin", "GET", "/", strings.Repeat("b", 40), 401},
		{"admin", "GET", "/metrics", tokAlice, 401},
		{"admin", "GET", "/metrics", httpTok, 401},
		{"admin", "POST", "/metrics", tokAdmin, 405},
		{"admin", "GET", "/nothing", tokAdmin, 404},
		{"file", "GET", "/metrics", httpTok, 200},
		{"file", "GET", "/metrics", tokAdmin, 401},
		{"file", "GET", "/", "", 401},
		{"open", "GET", "/metrics", "", 200},
		{"open", "DELETE", "/", "", 405},
	} {
		t.Run(fmt.Sprintf("%s %s %s %.4s", tc.server, tc.method, tc.path, tc.token), func(t *testing.T) {
			code, body := get(t, tc.method, servers[tc.server]+tc.path, tc.token)
			if code != tc.want {
				t.Errorf("status %d, want %d: %s", code, tc.want, body)
			}
		})
	}

	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"readable by others", httpTok + "\n", 0o644, "chmod 600"},
		{"short token", "short\n", 0o600, "line 1"},
		{"empty", "# nothing\n", 0o600, "no tokens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens")
			if err := os.WriteFile(path, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tc.mode)
			if _, err := monitor.LoadTokens(path); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("LoadTokens: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
