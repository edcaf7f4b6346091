package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// freePort returns a loopback port nobody listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// TestServerHTTPRefused: --http on an address other machines reach is
// refused at start unless a token would be asked for; so are a readable
// --http-auth file and --http-auth without --http.
func TestServerHTTPRefused(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	nodeAuth := filepath.Join(tmp, "node-auth")
	mustRun(t, "server", "add-token", "--auth", nodeAuth, "--node", "alice")
	loose := filepath.Join(tmp, "loose")
	os.WriteFile(loose, []byte(strings.Repeat("x", 40)+"\n"), 0o644)
	os.Chmod(loose, 0o644)
	url := "file://" + filepath.Join(tmp, "store")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no auth", []string{"--http", "0.0.0.0:0"}, "reachable from other machines and no token would be asked for"},
		{"node tokens only", []string{"--auth", nodeAuth, "--http", "0.0.0.0:0"}, "--http-auth FILE"},
		{"readable http-auth", []string{"--http", "127.0.0.1:0", "--http-auth", loose}, "chmod 600 " + loose},
		{"http-auth alone", []string{"--http-auth", loose}, "give --http ADDR too"},
		{"bad stale", []string{"--http", "127.0.0.1:0", "--http-stale", "0s"}, "positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustFail(t, tc.want, append(append([]string{"server"}, tc.args...), url, "127.0.0.1:0")...)
		})
	}
	if _, err := os.Stat(filepath.Join(tmp, "store")); err == nil {
		t.Error("a refused server created its store")
	}
}

// TestServerHTTP runs the real server with --http on all addresses and an
// auth file: a wrong or missing bearer token gets 401, the admin token
// reads metrics that parse (alice's writer alive with its backlog, bob
// stale, the logins counted) and a page naming both with bob stale.
func TestServerHTTP(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	auth := filepath.Join(tmp, "auth")
	admin := strings.TrimSpace(mustRun(t, "server", "add-token", "--auth", auth, "--admin"))
	url := "file://" + filepath.Join(tmp, "store")
	for _, n := range []string{"alice", "bob"} {
		mustRun(t, "init", "--node", n, url)
	}
	openWriter(t, url, "alice", 0, 2)

	addr, web := "127.0.0.1:"+freePort(t), freePort(t)
	srv := exec.Command(cliBin.get(t), "server", "--auth", auth, "--http", "0.0.0.0:"+web, "--http-stale", "1m", url, addr)
	logs := &syncBuffer{}
	srv.Stderr = logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	base := "http://127.0.0.1:" + web
	get := func(path, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i := 0; ; i++ {
		if code, _ := get("/metrics", ""); code != 0 {
			break
		}
		if i > 300 {
			t.Fatalf("server did not start: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustRun(t, "list", "--token", admin, "socket:"+addr)

	for _, tc := range []struct {
		token string
		want  int
	}{{"", 401}, {strings.Repeat("0", 64), 401}, {admin, 200}} {
		if code, body := get("/metrics", tc.token); code != tc.want {
			t.Errorf("token %.6q: status %d, want %d: %s", tc.token, code, tc.want, body)
		}
	}
	_, body := get("/metrics", admin)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	values := map[string]float64{}
	for name, fam := range fams {
		for _, m := range fam.Metric {
			key := name
			for _, l := range m.Label {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			values[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for key, want := range map[string]float64{
		"clnbackup_node_writer_alive node=alice":            1,
		"clnbackup_node_writer_alive node=bob":              0,
		"clnbackup_node_stale node=bob":                     1,
		"clnbackup_node_stale node=alice":                   0,
		"clnbackup_node_journal_backlog_records node=alice": 2,
		"clnbackup_server_connections_accepted_total":       1,
	} {
		if got, ok := values[key]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v\n%s", key, got, ok, want, body)
		}
	}
	code, page := get("/", admin)
	if code != 200 || !strings.Contains(page, `id="node-alice"`) || !strings.Contains(page, `<tr class="stale" id="node-bob">`) {
		t.Errorf("page: %d\n%s", code, page)
	}

	srv.Process.Signal(syscall.SIGTERM)
	if err := srv.Wait(); err != nil {
		t.Fatalf("server exit: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "status page on http://") || !strings.Contains(logs.String(), "admin tokens of the auth file") {
		t.Errorf("log lacks the status page line:\n%s", logs.String())
	}
}

// TestServerHTTPS: under --tls-self-signed the page speaks HTTPS with the
// server's key pair, and a client that trusts cert.pem and names this
// machine's host name (the README's scrape job: ca_file, server_name)
// verifies it; plain HTTP is not answered with the page. The --http-auth
// file's tokens are asked for even on loopback, and SIGHUP reloads it.
func TestServerHTTPS(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	if err != nil || host == "" {
		t.Skip("no host name: the self-signed certificate names none")
	}
	tmp := t.TempDir()
	tlsDir := filepath.Join(tmp, "tls")
	addr, web := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	httpAuth := filepath.Join(tmp, "http-auth")
	first, second := strings.Repeat("f", 40), strings.Repeat("s", 40)
	if err := os.WriteFile(httpAuth, []byte(first+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := exec.Command(cliBin.get(t), "server", "--tls-self-signed", tlsDir, "--http", web, "--http-auth", httpAuth, "file://"+filepath.Join(tmp, "store"), addr)
	logs := &syncBuffer{}
	srv.Stderr = logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	for i := 0; !strings.Contains(logs.String(), "status page on"); i++ {
		if i > 300 {
			t.Fatalf("server did not start: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	pemBytes, err := os.ReadFile(filepath.Join(tlsDir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("cert.pem holds no certificate")
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host}}}
	scrape := func(token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://"+web+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("HTTPS with cert.pem as CA and server name %q: %v", host, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := scrape(first); code != 200 || !strings.Contains(body, "clnbackup_status_up 1") {
		t.Errorf("HTTPS /metrics: %d\n%s", code, body)
	}
	if code, _ := scrape(second); code != 401 {
		t.Errorf("a token not in --http-auth: status %d, want 401", code)
	}
	if err := os.WriteFile(httpAuth, []byte(second+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.Process.Signal(syscall.SIGHUP)
	for i := 0; !strings.Contains(logs.String(), "reloaded "+httpAuth); i++ {
		if i > 300 {
			t.Fatalf("no reload of %s logged after SIGHUP:\n%s", httpAuth, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := scrape(second); code != 200 {
		t.Errorf("the token added by the reload: status %d, want 200", code)
	}
	if code, _ := scrape(first); code != 401 {
		t.Errorf("the token removed by the reload: status %d, want 401", code)
	}
	if resp, err := http.Get("http://" + web + "/metrics"); err == nil {
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served the metrics of a TLS server")
		}
		resp.Body.Close()
	}
}
