package replay

import (
	"path/filepath"
	"testing"
)

// BenchmarkApplyTrace replays the 3,000 real changes of long-3000.jsonl
// into a new database per op: the cost of restore and compaction per
// journal record (the sandbox's checks included), without the store.
func BenchmarkApplyTrace(b *testing.B) {
	tr, err := ReadTrace("../testdata/long-3000.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	recs := Records(tr)
	stmts := 0
	for _, r := range recs {
		stmts += len(r.Statements)
	}
	i := 0
	for b.Loop() {
		d, err := Open(filepath.Join(b.TempDir(), "lightningd.sqlite3"))
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range recs {
			if err := d.Apply(r); err != nil {
				b.Fatal(err)
			}
		}
		d.Close()
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*stmts), "ns/statement")
}
