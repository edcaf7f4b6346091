package history_test

import (
	"testing"

	"github.com/clnbackup/backup/internal/s3test"
	"github.com/clnbackup/backup/store"
	_ "github.com/clnbackup/backup/store/s3"
)

// TestConcurrentNodesForgetGCS3 is TestConcurrentNodesForgetGC on an s3://
// store in a real S3 server (versitygw): writers, forget and gc at once,
// whose safety rests on the bucket's conditional writes. Fewer nodes and
// rounds than on a directory: each request is a round trip.
func TestConcurrentNodesForgetGCS3(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	creds := srv.CredentialsFile(t)
	rounds := 24
	if testing.Short() {
		rounds = 12
	}
	url := srv.URL("conc")
	st, created, err := store.Create(ctx, url, store.Options{CredentialsFile: creds})
	if err != nil || !created {
		t.Fatalf("create store: %v (created %v)", err, created)
	}
	st.Close()
	runConcurrentNodesForgetGC(t, url, 3, rounds, func(t *testing.T, url string, c *testClock) *store.Store {
		t.Helper()
		st, err := store.Open(ctx, url, store.Options{Now: c.Now, MaxWriterAge: testWriterAge, CredentialsFile: creds})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}
