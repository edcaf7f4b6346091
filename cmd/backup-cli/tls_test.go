package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestTokenHygiene (finding 11): files holding secrets that other users
// may read are refused with the fix, --token warns that ps shows it, and
// add-token --out writes the token with mode 0600 and never overwrites.
func TestTokenHygiene(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	storeURL := "file://" + filepath.Join(tmp, "store")
	mustRun(t, "init", storeURL)
	auth := filepath.Join(tmp, "auth")
	tokFile := filepath.Join(tmp, "alice.token")

	out := mustRun(t, "server", "add-token", "--json", "--auth", auth, "--node", "alice", "--out", tokFile)
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["token_file"] != tokFile || res["token"] != nil {
		t.Fatalf("add-token --json --out: %s (%v): want token_file and no token", out, err)
	}
	fi, err := os.Stat(tokFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v; want mode 600", fi.Mode(), err)
	}
	tok, _ := os.ReadFile(tokFile)
	authBefore, _ := os.ReadFile(auth)
	if len(strings.TrimSpace(string(tok))) != 64 || !strings.Contains(string(authBefore), strings.TrimSpace(string(tok))+" alice") {
		t.Fatalf("token file %q is not the token added to the auth file:\n%s", tok, authBefore)
	}
	mustFail(t, "does not overwrite", "server", "add-token", "--auth", auth, "--admin", "--out", tokFile)
	if after, _ := os.ReadFile(auth); string(after) != string(authBefore) {
		t.Fatalf("a refused add-token --out changed the auth file:\n%s", after)
	}
	if out := mustRun(t, "server", "add-token", "--auth", auth, "--admin", "--out", filepath.Join(tmp, "admin.token")); !strings.Contains(out, "mode 0600") {
		t.Errorf("add-token --out output: %s", out)
	}

	loose := func(name, content string) string {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o644); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	looseAuth := loose("auth-0644", string(authBefore))
	looseTok := loose("tok-0644", string(tok))
	tlsDir := filepath.Join(tmp, "tls")
	fp := strings.TrimSpace(mustRun(t, "server", "tls-fingerprint", "--tls-self-signed", tlsDir))
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(fp) {
		t.Fatalf("tls-fingerprint printed %q", fp)
	}
	if again := strings.TrimSpace(mustRun(t, "server", "tls-fingerprint", "--tls-self-signed", tlsDir)); again != fp {
		t.Fatalf("the key pair was not kept: fingerprint %s, then %s", fp, again)
	}
	looseKeyDir := filepath.Join(tmp, "tls-loose")
	mustRun(t, "server", "tls-fingerprint", "--tls-self-signed", looseKeyDir)
	os.Chmod(filepath.Join(looseKeyDir, "key.pem"), 0o640)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"auth file 0644", []string{"server", "--auth", looseAuth, storeURL, "127.0.0.1:0"}, looseAuth + " holds the store server's client tokens but can be read by other users (mode 644): run `chmod 600 " + looseAuth + "`"},
		{"token file 0644", []string{"list", "--token-file", looseTok, "socket:127.0.0.1:9"}, looseTok + " holds a store server token but can be read by other users (mode 644): run `chmod 600 " + looseTok + "`"},
		{"TLS key 0640", []string{"server", "--tls-self-signed", looseKeyDir, storeURL, "127.0.0.1:0"}, "TLS private key but can be read by other users (mode 640)"},
		{"both TLS flags", []string{"server", "--tls-self-signed", tlsDir, "--tls-cert", "c", "--tls-key", "k", storeURL, "127.0.0.1:0"}, "not both"},
		{"cert without key", []string{"server", "--tls-cert", "c", storeURL, "127.0.0.1:0"}, "give both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mustFail(t, tc.want, tc.args...)
		})
	}

	// --token warns; --token-file and the environment do not.
	_, errOut, ok := run(t, "list", "--token", strings.TrimSpace(string(tok)), storeURL)
	if !ok || !strings.Contains(errOut, "warning: --token is visible to every user of this machine") || !strings.Contains(errOut, "--token-file") {
		t.Errorf("list --token: ok %v, stderr %q: want the ps warning", ok, errOut)
	}
	if _, errOut, ok := run(t, "list", "--token-file", tokFile, storeURL); !ok || strings.Contains(errOut, "warning") {
		t.Errorf("list --token-file: ok %v, stderr %q", ok, errOut)
	}
	if _, errOut, st := runBinary(t, []string{"CLNBACKUP_TOKEN=" + strings.TrimSpace(string(tok))}, "list", storeURL); st != 0 || strings.Contains(errOut, "warning") {
		t.Errorf("list with $CLNBACKUP_TOKEN: exit %d, stderr %q", st, errOut)
	}
}

// startServerProc starts the backup-cli binary as a server on addr and
// waits for its "serving store" log line; the log is returned live.
func startServerProc(t *testing.T, addr string, args ...string) *syncBuffer {
	t.Helper()
	tmp := t.TempDir()
	full := append([]string{"server", "file://" + filepath.Join(tmp, "store"), addr}, args...)
	srv := exec.Command(cliBin.get(t), full...)
	logs := &syncBuffer{}
	srv.Stderr = logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), "serving store"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("server %v did not start:\n%s", full, logs.String())
		}
	}
	return logs
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestServerPlaintextWarning: a plaintext server on an address other
// machines reach warns and names the alternatives; on loopback, or with
// TLS, it does not.
func TestServerPlaintextWarning(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		addr string
		args []string
		warn bool
	}{
		{"loopback", "127.0.0.1:0", nil, false},
		{"all addresses", "0.0.0.0:0", nil, true},
		{"all addresses with TLS", "0.0.0.0:0", []string{"--tls-self-signed", "TMP"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := tc.args
			if len(args) == 2 {
				args = []string{args[0], filepath.Join(t.TempDir(), "tls")}
			}
			logs := startServerProc(t, tc.addr, args...)
			got := strings.Contains(logs.String(), "warning: serving without TLS")
			if got != tc.warn {
				t.Fatalf("warning logged: %v, want %v:\n%s", got, tc.warn, logs.String())
			}
			if tc.warn {
				for _, w := range []string{"--tls-self-signed", "Tor", "WireGuard", "SSH tunnel"} {
					if !strings.Contains(logs.String(), w) {
						t.Errorf("warning lacks %q:\n%s", w, logs.String())
					}
				}
			}
		})
	}
}

// TestInitRestoreTLS: init writes the URL with its tls= pin into
// backup.lock, and init and restore work through a TLS server with the
// fingerprint the server logged (the same tls-fingerprint prints).
func TestInitRestoreTLS(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	auth, tokFile, tlsDir := filepath.Join(tmp, "auth"), filepath.Join(tmp, "alice.token"), filepath.Join(tmp, "tls")
	mustRun(t, "server", "add-token", "--auth", auth, "--node", "alice", "--out", tokFile)
	addr := freeAddr(t)
	logs := startServerProc(t, addr, "--auth", auth, "--tls-self-signed", tlsDir)
	m := regexp.MustCompile(`socket:` + regexp.QuoteMeta(addr) + `\?tls=([0-9a-f]{64})`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no fingerprint logged:\n%s", logs.String())
	}
	fp := m[1]
	if printed := strings.TrimSpace(mustRun(t, "server", "tls-fingerprint", "--tls-self-signed", tlsDir)); printed != fp {
		t.Fatalf("logged fingerprint %s, tls-fingerprint %s", fp, printed)
	}
	url := "socket:" + addr + "?tls=" + fp

	ldir := filepath.Join(tmp, "lightning")
	os.Mkdir(ldir, 0o755)
	copyFile(t, testdata+"trace1-final.sqlite3", filepath.Join(ldir, "lightningd.sqlite3"))
	mustRun(t, "init", "--token-file", tokFile, "--lightning-dir", ldir, "--node", "alice", url)
	raw, err := os.ReadFile(filepath.Join(ldir, "backup.lock"))
	if err != nil {
		t.Fatal(err)
	}
	var lock map[string]string
	if err := json.Unmarshal(raw, &lock); err != nil || lock["backend_url"] != url {
		t.Fatalf("backup.lock = %s (%v), want backend_url %s", raw, err, url)
	}
	dest := filepath.Join(tmp, "restored.sqlite3")
	mustRun(t, "restore", "--token-file", tokFile, url, dest)
	sameDB(t, dest, filepath.Join(ldir, "lightningd.sqlite3"))
	mustFail(t, "does not verify against this system's roots", "list", "--token-file", tokFile, "socket:"+addr+"?tls=system")
}
