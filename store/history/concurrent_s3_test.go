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
	srv := s3test.Start(t)
	srv.Env(t)
	rounds := 14
	if testing.Short() {
		rounds = 10
	}
	url := srv.URL("conc")
	st, created, err := store.Create(ctx, url, store.Options{})
	if err != nil || !created {
		t.Fatalf("create store: %v (created %v)", err, created)
	}
	st.Close()
	runConcurrentNodesForgetGC(t, url, 3, rounds)
}
