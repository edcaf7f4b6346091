package remote

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// BenchmarkJournalAppend is the plugin's hook round trip: one journal
// append, durable before it returns, through a server on loopback and on
// the local store in the same run, and through a TLS server (pinned key) as
// backup-cli server --tls-self-signed serves it. p50/p99 are per append.
func BenchmarkJournalAppend(b *testing.B) {
	stmt := "UPDATE channels SET state = 2, msatoshi_to_us = 123456789, last_tx = x'" + strings.Repeat("ab", 300) + "' WHERE id = 42"
	rec := func(i int) journal.Record {
		return journal.Record{Version: uint32(i + 1), Statements: []string{stmt, "UPDATE vars SET intval = intval + 1 WHERE name = 'data_version'"}}
	}
	run := func(b *testing.B, st *store.Store) {
		if _, err := history.Init(ctx, st, "alice", "", nil); err != nil {
			b.Fatal(err)
		}
		j, err := st.OpenJournal(ctx, "alice")
		if err != nil {
			b.Fatal(err)
		}
		defer j.Close()
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if _, err := j.Append(rec(i)); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("local", func(b *testing.B) {
		ts := newTestServer(b, testAuth(b))
		run(b, ts.st)
	})
	b.Run("server", func(b *testing.B) {
		ts := newTestServer(b, testAuth(b))
		ts.opt.Infof = nil
		st := ts.open(b, tokAlice)
		run(b, st)
	})
	b.Run("tls", func(b *testing.B) {
		run(b, openTLSServer(b, tokAlice))
	})
}

// openTLSServer serves a new store over TLS with a self-signed key, as
// backup-cli server --tls-self-signed does, and opens it with token
// through the pinned fingerprint.
func openTLSServer(b *testing.B, token string) *store.Store {
	b.Helper()
	srvStore, _, err := store.Create(ctx, "file://"+filepath.Join(b.TempDir(), "store"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	cert, _, err := LoadOrCreateSelfSigned(filepath.Join(b.TempDir(), "tls"))
	if err != nil {
		b.Fatal(err)
	}
	fp, err := CertFingerprint(cert)
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(srvStore, testAuth(b), ServerOptions{})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(NewListener(l, ServerTLSConfig(cert))) }()
	b.Cleanup(func() {
		srv.Shutdown(ctx)
		<-done
		srvStore.Close()
	})
	st, err := store.Open(ctx, "socket:"+l.Addr().String()+"?tls="+fp, store.Options{Token: token, RetryFor: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}
