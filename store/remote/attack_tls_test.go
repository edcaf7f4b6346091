package remote

// Security issue #12 (plaintext finding): a real `backup-cli server`
// process with TLS. A node is initialised from a database, written to and
// restored through a pinned TLS connection (direct and through a SOCKS5
// proxy); a wrong pin, tls=system against a self-signed key, and a client
// speaking TLS to a plaintext port or plaintext to a TLS port all fail at
// once (no retry, no hang) with a message that says what to do, and the
// server's log says what happened.

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/bench/workload"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
)

// fingerprintLog finds the pin in the server's log line "TLS: clients
// connect with socket:ADDR?tls=FP".
var fingerprintLog = regexp.MustCompile(`\?tls=([0-9a-f]{64})`)

// startTLSProcServer starts a server process with --tls-self-signed and
// returns it with the fingerprint from its log, checked against the one
// computed from the certificate it wrote (and the key's mode, 0600).
func startTLSProcServer(t *testing.T) (*procServer, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	ps := startProcServer(t, "--tls-self-signed", dir)
	var fp string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m := fingerprintLog.FindStringSubmatch(ps.log()); m != nil {
			fp = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fingerprint in the server's log:\n%s", ps.log())
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, SelfSignedCert))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		t.Fatalf("%s is not PEM", SelfSignedCert)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := Fingerprint(cert); got != fp {
		t.Fatalf("logged fingerprint %s, certificate's %s", fp, got)
	}
	if fi, err := os.Stat(filepath.Join(dir, SelfSignedKey)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi.Mode(), err)
	}
	return ps, fp
}

// TestTLSPinnedRestore: init from a database, journal appends and a
// restore through TLS with the pinned fingerprint give the database back;
// through a SOCKS5 proxy too (TLS inside the tunnel).
func TestTLSPinnedRestore(t *testing.T) {
	t.Parallel()
	ps, fp := startTLSProcServer(t)
	hs := hooks(t)
	half := len(hs) / 2
	tmp := t.TempDir()
	initial, expected := filepath.Join(tmp, "initial.sqlite3"), filepath.Join(tmp, "expected.sqlite3")
	if err := workload.Build(initial, workload.Hooks(hs[:half]...)); err != nil {
		t.Fatal(err)
	}
	if err := workload.Build(expected, workload.Hooks(hs...)); err != nil {
		t.Fatal(err)
	}
	proxy := startSOCKS(t)
	for _, tc := range []struct {
		name, node, token, query string
	}{
		{"direct", "alice", atkAlice, "?tls=" + fp},
		{"socks5", "bob", atkBob, "?proxy=socks5:" + proxy.l.Addr().String() + "&tls=" + strings.ToUpper(fp)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := ps.url() + tc.query
			st, err := store.Open(ctx, url, store.Options{Token: tc.token, RetryFor: 10 * time.Second})
			if err != nil {
				t.Fatalf("open %s: %v\nserver log:\n%s", url, err, ps.log())
			}
			defer st.Close()
			if _, err := history.Init(ctx, st, tc.node, initial, nil); err != nil {
				t.Fatalf("init: %v", err)
			}
			n, err := history.OpenNode(ctx, st, tc.node)
			if err != nil {
				t.Fatal(err)
			}
			for i, h := range hs[half:] {
				if _, err := n.Journal().Append(h.Record()); err != nil {
					t.Fatalf("append %d: %v", i, err)
				}
			}
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(t.TempDir(), "restored.sqlite3")
			if _, err := history.Restore(ctx, st, history.RestoreOptions{Node: tc.node, Dest: dest}); err != nil {
				t.Fatalf("restore: %v", err)
			}
			diff, err := replay.Diff(dest, expected)
			if err != nil || len(diff) > 0 {
				t.Fatalf("restored database differs: %v %v", err, diff[:min(5, len(diff))])
			}
		})
	}
	if !strings.Contains(strings.Join(proxy.targets, " "), ps.addr) {
		t.Errorf("the SOCKS5 proxy was not used: targets %v", proxy.targets)
	}
}

// TestTLSRefusals: what cannot work fails at once (well within the retry
// period) with a message naming the cause and the fix; the server logs
// the protocol mismatches.
func TestTLSRefusals(t *testing.T) {
	t.Parallel()
	tlsSrv, fp := startTLSProcServer(t)
	plainSrv := startProcServer(t)
	wrong := strings.Repeat("0f", 32)
	for _, tc := range []struct {
		name string
		ps   *procServer
		url  string
		want []string // in the client's error
		log  string   // in the server's log
	}{
		{"wrong pin", tlsSrv, tlsSrv.url() + "?tls=" + wrong,
			[]string{"fingerprint " + fp, "pins tls=" + wrong, "put its new fingerprint", "do not use it"}, "bad certificate"},
		{"system roots against a self-signed key", tlsSrv, tlsSrv.url() + "?tls=system",
			[]string{"does not verify", "tls=FINGERPRINT"}, ""},
		{"plaintext client, TLS server", tlsSrv, tlsSrv.url(),
			[]string{"requires TLS", "tls=FINGERPRINT"}, "plaintext store client connected to this TLS port"},
		{"TLS client, plaintext server", plainSrv, plainSrv.url() + "?tls=" + fp,
			[]string{"answered without TLS", "does not use TLS", "remove tls="}, "TLS client (its first bytes are a TLS ClientHello) connected to this plaintext port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			st, err := store.Open(ctx, tc.url, store.Options{Token: atkAlice, RetryFor: 20 * time.Second})
			took := time.Since(began)
			if err == nil {
				st.Close()
				t.Fatalf("open %s succeeded", tc.url)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if took > 5*time.Second {
				t.Errorf("refused after %v: retried or hung instead of failing at once", took)
			}
			if tc.log == "" {
				return
			}
			for deadline := time.Now().Add(5 * time.Second); !strings.Contains(tc.ps.log(), tc.log); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("server log lacks %q:\n%s", tc.log, tc.ps.log())
				}
			}
		})
	}
}
