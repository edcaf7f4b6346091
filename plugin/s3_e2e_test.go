package plugin_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/internal/s3test"
	ld "github.com/clnbackup/backup/plugin/lightningdtest"
)

// s3Node sets up a node in a new bucket of srv, its keys in a 0600 file
// that backup.lock names (the plugin takes no keys from the environment).
func s3Node(t testing.TB, srv *s3test.Server, url, creds, name string) *ld.Node {
	t.Helper()
	n, err := ld.SetupNodeS3(ctx, filepath.Join(t.TempDir(), "lightning"), url, creds, name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestS3Trace1 plays trace1 through the plugin into an s3:// store on a real
// S3 server, with compactions, and restores it equal table by table.
func TestS3Trace1(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	n := s3Node(t, srv, srv.URL("store"), srv.CredentialsFile(t), "default")
	res, err := ld.Play(ctx, pluginBin, n.Dir, readTrace(t, "trace1.jsonl"), ld.PlayOptions{
		Start: ld.Options{Logf: t.Logf}, Seed: seed(t), CompactEvery: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d hooks into s3://: p50 %v p99 %v max %v", res.Hooks, res.P50, res.P99, res.Max)
	restoredEquals(t, n, "../testdata/trace1-final.sqlite3")
}

// TestS3ServerFourNodes has four nodes replay at once through one store
// server whose store is in a bucket: with the journals in the bucket, and
// with --journal-dir on the server's disk.
func TestS3ServerFourNodes(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	creds := srv.CredentialsFile(t)
	for _, journalDir := range []bool{false, true} {
		t.Run(fmt.Sprintf("journal-dir=%v", journalDir), func(t *testing.T) {
			args := []string{"--s3-credentials", creds}
			if journalDir {
				args = append(args, "--journal-dir", t.TempDir())
			}
			names := []string{"n1", "n2", "n3", "n4"}
			ss, tokens := startStoreServerAt(t, srv.URL("srv"), args, names...)
			trace := readTrace(t, "trace1.jsonl")
			var wg sync.WaitGroup
			errs := make([]error, len(names))
			nodes := make([]*ld.Node, len(names))
			for i, name := range names {
				nodes[i] = remoteNode(t, ss, name, tokens[name])
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					_, errs[i] = ld.Play(ctx, pluginBin, nodes[i].Dir, trace, ld.PlayOptions{Seed: uint64(i), CompactEvery: 60})
				}(i)
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("node %s: %v\nserver log:\n%s", names[i], err, ss.log())
				}
			}
			for _, n := range nodes {
				restoredEquals(t, n, "../testdata/trace1-final.sqlite3")
			}
			ss.stop()
		})
	}
}

// TestS3ServerKilled SIGKILLs the S3 server at random moments of a replay of
// real changes, with compactions, and restarts it: hooks wait for it (a
// record's PUT is retried, and stored exactly once by name), and at the end
// the restore holds exactly what lightningd committed: no acknowledged
// change lost, none applied twice.
// Serial, as TestRemoteServerKilled.
func TestS3ServerKilled(t *testing.T) {
	srv := s3test.Start(t)
	n := s3Node(t, srv, srv.URL("store"), srv.CredentialsFile(t), "alice")
	s := seed(t)
	t.Logf("seed %d (E2E_SEED=%d repeats the kill times)", s, s)
	rng := rand.New(rand.NewPCG(s, 2))
	hooks := ld.Hooks(readTrace(t, "long-3000.jsonl"))[:600]
	m := newModel(t)
	l := start(t, n.Dir)
	done := make(chan struct{})
	kills := 0
	var killer sync.WaitGroup
	killer.Add(1)
	go func() {
		defer killer.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Duration(150+rng.IntN(400)) * time.Millisecond):
			}
			srv.Kill()
			kills++
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			if err := srv.RestartErr(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	stopKiller := sync.OnceFunc(func() { close(done); killer.Wait() })
	defer stopKiller()
	writeHooks(t, l, m, hooks, func(i int) {
		if i%200 == 199 {
			compact(t, l)
		}
	})
	stopKiller()
	compactionIdle(t, l)
	t.Logf("%d hooks, %d S3 server kills", len(hooks), kills)
	if kills < 3 {
		t.Errorf("only %d S3 server kills during the replay", kills)
	}
	mustRestoreMatch(t, n, m, fmt.Sprintf("after %d S3 server kills", kills))
	compact(t, l)
	compactionIdle(t, l)
	mustRestoreMatch(t, n, m, "after a final compaction")
}

// TestS3ServerDown: an S3 server that stays down longer than server_retry
// makes the db_write be refused (lightningd stops) rather than answered.
func TestS3ServerDown(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	n := s3Node(t, srv, srv.URL("store"), srv.CredentialsFile(t), "alice")
	lock := fmt.Sprintf(`{"backend_url": %q, "node": "alice", "s3_credentials": %q, "server_retry": "1s"}`, n.URL, n.S3Credentials)
	if err := os.WriteFile(filepath.Join(n.Dir, "backup.lock"), []byte(lock), 0o600); err != nil {
		t.Fatal(err)
	}
	m := newModel(t)
	l := startInit(t, n.Dir)
	for v := uint32(1); v <= 5; v++ {
		write(t, l, m, ld.Change(v, 100))
	}
	srv.Kill()
	began := time.Now()
	refused(t, l, ld.Change(6, 100), srv.Addr)
	if waited := time.Since(began); waited < time.Second {
		t.Errorf("refused after %v, before server_retry (1s) ran out", waited)
	}
	srv.Restart()
	mustRestoreMatch(t, n, m, "after the refused write")
}

// TestS3TwoServers: two store servers front one bucket (journals in the
// bucket): a node backed up through one restores through the other, with
// the changes after its last compaction, since servers hold no state.
func TestS3TwoServers(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	args := []string{"--s3-credentials", srv.CredentialsFile(t)}
	url := srv.URL("shared")
	a, tokA := startStoreServerAt(t, url, args, "alice")
	b, tokB := startStoreServerAt(t, url, args, "alice")
	n := remoteNode(t, a, "alice", tokA["alice"])
	// No compaction at the end: the newest changes are journal records.
	if _, err := ld.Play(ctx, pluginBin, n.Dir, readTrace(t, "trace1.jsonl"), ld.PlayOptions{Seed: seed(t), CompactEvery: 150}); err != nil {
		t.Fatalf("%v\nserver log:\n%s", err, a.log())
	}
	viaB := &ld.Node{Dir: n.Dir, URL: b.url(), Token: tokB["alice"], Name: "alice"}
	restoredEquals(t, viaB, "../testdata/trace1-final.sqlite3")
}
