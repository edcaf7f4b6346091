package plugin

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/remote"
)

// TestLockTLS: a backup.lock whose backend_url pins a TLS server (as
// backup-cli init writes it) reaches the store through TLS; a wrong pin is
// refused at once, not retried for server_retry, naming both fingerprints.
func TestLockTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tmp := t.TempDir()
	srvStore, _, err := store.Create(ctx, "file://"+filepath.Join(tmp, "store"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srvStore.Close() })
	cert, _, err := remote.LoadOrCreateSelfSigned(filepath.Join(tmp, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	fp, err := remote.CertFingerprint(cert)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := remote.NewServer(srvStore, nil, remote.ServerOptions{})
	go srv.Serve(remote.NewListener(l, remote.ServerTLSConfig(cert)))
	t.Cleanup(func() { srv.Shutdown(ctx) }) // after the parallel subtests
	wrong := strings.Repeat("0", 64)
	for _, tc := range []struct {
		name, pin, err string
	}{
		{"pinned", fp, ""},
		{"wrong pin", wrong, "presented a TLS key with fingerprint " + fp + ", but the URL pins tls=" + wrong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			url := "socket:" + l.Addr().String() + "?tls=" + tc.pin
			writeLock(t, dir, map[string]string{"backend_url": url, "node": "alice", "token": strings.Repeat("ab", 32), "server_retry": "20s"})
			lock, err := readLock(dir)
			if err != nil {
				t.Fatal(err)
			}
			if u, err := store.ParseURL(lock.URL); err != nil || u.TLS != tc.pin {
				t.Fatalf("backup.lock's URL %q parses to TLS %q (%v), want %q", lock.URL, u.TLS, err, tc.pin)
			}
			began := time.Now()
			st, err := openStore(ctx, lock)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("open through TLS: %v", err)
				}
				defer st.Close()
				if st.Config().ID != srvStore.Config().ID {
					t.Fatal("opened another store")
				}
				return
			}
			if err == nil {
				st.Close()
				t.Fatal("a wrong pin was accepted")
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %q lacks %q", err, tc.err)
			}
			if took := time.Since(began); took > 5*time.Second {
				t.Fatalf("refused after %v: retried for server_retry", took)
			}
		})
	}
}
