package history_test

import (
	"testing"

	"github.com/clnbackup/backup/internal/s3test"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	_ "github.com/clnbackup/backup/store/s3"
)

// TestCopyS3RoundTrip: a live node's history copied file → s3:// → file
// restores equal at every manifest and at the newest state on both hops,
// and a second copy into the bucket copies nothing.
func TestCopyS3RoundTrip(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	creds := srv.CredentialsFile(t)
	src := newCopySource(t, "trace1.jsonl")
	src.feedUpTo(t, 300, map[int]bool{1: true, 100: true, 250: true})

	mid := createS3Store(t, srv.URL("copy-mid"), creds)
	res := copyNodes(t, src.st, mid)
	if res.Manifests == 0 || res.Chunks == 0 || res.ReadBack == 0 {
		t.Fatalf("copy into s3://: %+v", res)
	}
	assertCopied(t, src.st, mid, true)
	if again := copyNodes(t, src.st, mid); again.Manifests != 0 || again.Chunks != 0 || again.Bytes != 0 {
		t.Fatalf("second copy into s3:// copied something: %+v", again)
	}

	dst, _ := newStore(t)
	copyNodes(t, mid, dst)
	assertCopied(t, src.st, dst, true)
	got, _ := restore(t, dst, history.RestoreOptions{})
	want, _ := restore(t, src.st, history.RestoreOptions{})
	assertSame(t, "file → s3:// → file", got, want)
}

// TestCopyInterruptedS3 is TestCopyInterrupted into a bucket: a copy
// stopped at points spread over it leaves a destination that restores
// equal to the source at its version, and resumes to the newest state.
// Not parallel: it sets the package's copy hooks.
func TestCopyInterruptedS3(t *testing.T) {
	srv := s3test.Start(t)
	creds := srv.CredentialsFile(t)
	n := 0
	runCopyInterrupted(t, func(t *testing.T) *store.Store {
		n++
		return createS3Store(t, srv.URL("copy-int-"+string(rune('a'+n))), creds)
	}, 3)
}

// createS3Store creates a store at url and closes it with the test.
func createS3Store(t *testing.T, url, creds string) *store.Store {
	t.Helper()
	st, created, err := store.Create(ctx, url, store.Options{CredentialsFile: creds})
	if err != nil || !created {
		t.Fatalf("create store %s: %v (created %v)", url, err, created)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
