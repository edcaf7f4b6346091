package history_test

import (
	"testing"

	"github.com/clnbackup/backup/internal/s3test"
	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
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

// BenchmarkS3Costs measures what an s3:// store costs in requests, for the
// cost table in docs/object-storage.md: the recorded routing node's trace
// (testdata/long-3000.jsonl) is fed through a node's journal in a bucket
// (requests per change), then sealed and compacted with a warm cache and
// trimmed (requests and added bytes per compaction of those changes), and
// the lease is refreshed (requests per refresh; holders refresh every
// third of store.DefaultLeaseTTL). Run it with -benchtime 1x.
func BenchmarkS3Costs(b *testing.B) {
	entries, err := replay.ReadTrace("../../testdata/long-3000.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	var hooks []journal.Record
	for _, e := range entries {
		if e.IsHook() {
			hooks = append(hooks, journal.Record{Version: e.Version, Statements: e.Writes})
		}
	}
	for b.Loop() {
		st, be := s3Store(b)
		if _, err := history.Init(ctx, st, "n1", "", nil); err != nil {
			b.Fatal(err)
		}
		n, err := history.OpenNode(ctx, st, "n1")
		if err != nil {
			b.Fatal(err)
		}
		n.CacheDir = b.TempDir()
		half := len(hooks) / 2
		// The first half and a compaction warm the cache, as a running node's is.
		for _, r := range hooks[:half] {
			feed(b, n, r)
		}
		if _, err := n.Compact(ctx, nil); err != nil {
			b.Fatal(err)
		}
		s0 := be.Stats()
		for _, r := range hooks[half:] {
			feed(b, n, r)
		}
		s1 := be.Stats()
		res, err := n.Compact(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		s2 := be.Stats()
		changes := len(hooks) - half
		reportRequests(b, s1.Sub(s0), changes)
		c := s2.Sub(s1)
		b.ReportMetric(float64(changes), "changes-per-compaction")
		b.ReportMetric(float64(c.Put), "compaction-PUT")
		b.ReportMetric(float64(c.Get), "compaction-GET")
		b.ReportMetric(float64(c.Head), "compaction-HEAD")
		b.ReportMetric(float64(c.List), "compaction-LIST")
		b.ReportMetric(float64(c.Delete), "compaction-DELETE")
		b.ReportMetric(float64(res.Added)/1024, "compaction-added-KiB")
		h, err := st.AcquireLease(ctx, "lease-probe", store.DefaultLeaseTTL)
		if err != nil {
			b.Fatal(err)
		}
		s3 := be.Stats()
		const refreshes = 10
		for range refreshes {
			if err := h.Refresh(ctx); err != nil {
				b.Fatal(err)
			}
		}
		l := be.Stats().Sub(s3)
		b.ReportMetric(float64(l.Requests())/refreshes, "requests-per-lease-refresh")
		b.Logf("per lease refresh: %.1f PUT %.1f GET %.1f LIST %.1f DELETE", float64(l.Put)/refreshes, float64(l.Get)/refreshes, float64(l.List)/refreshes, float64(l.Delete)/refreshes)
		n.Close()
	}
}
