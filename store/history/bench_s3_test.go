package history_test

import (
	"testing"

	"github.com/clnbackup/backup/internal/s3test"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/s3"
)

// s3Store is a new s3:// store in a versitygw started for the benchmark,
// and its backend (for the request counts).
func s3Store(b *testing.B) (*store.Store, *s3.Backend) {
	b.Helper()
	srv := s3test.Start(b)
	srv.Env(b)
	st, _, err := store.Create(ctx, srv.URL("bench"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	be, ok := st.Objects().(*s3.Backend)
	if !ok {
		b.Fatalf("s3:// store on a %T", st.Objects())
	}
	return st, be
}

// reportRequests reports requests and bytes per op.
func reportRequests(b *testing.B, s s3.Stats, ops int) {
	n := float64(max(ops, 1))
	b.ReportMetric(float64(s.Put)/n, "PUT/op")
	b.ReportMetric(float64(s.Get)/n, "GET/op")
	b.ReportMetric(float64(s.Head)/n, "HEAD/op")
	b.ReportMetric(float64(s.List)/n, "LIST/op")
	b.ReportMetric(float64(s.Delete)/n, "DELETE/op")
	b.ReportMetric(float64(s.BytesUp)/n/(1<<20), "up-MB/op")
	b.ReportMetric(float64(s.BytesDown)/n/(1<<20), "down-MB/op")
}
