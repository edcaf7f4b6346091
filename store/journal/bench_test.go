package journal

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkAppend measures the hot path: one durable append (write and
// fdatasync) of a typical 1.5 KB lightningd change, with default segments,
// and reports the median and 99th-percentile latency.
func BenchmarkAppend(b *testing.B) {
	j := mustOpen(b, b.TempDir(), Options{})
	defer mustClose(b, j)
	rec := Record{Statements: []string{
		"INSERT INTO datastore (key, data, generation) VALUES (x'" + strings.Repeat("6b", 24) + "', x'" + strings.Repeat("a5", 600) + "', 0);",
		"UPDATE invoices SET state = 1, msatoshi_received = 100000, paid_timestamp = 1700000000 WHERE id = 42;",
		"UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = 12345",
	}}
	n, _ := payloadSize(&rec)
	b.SetBytes(int64(n))
	q := timeAppends(b, j, rec)
	if testing.Verbose() {
		b.Logf("%d-byte payloads: p50 %.0f µs, p99 %.0f µs, max %.0f µs", n, q(0.5), q(0.99), q(1))
	}
}

// BenchmarkAppendSegments compares, in one run, the hot path with the
// adaptive segments (the default, from MinSegmentSize), adaptive segments
// from the former 256 KiB minimum, and fixed DefaultSegmentSize ones.
func BenchmarkAppendSegments(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts Options
	}{
		{"adaptive", Options{}},
		{"adaptive-min-256KiB", Options{minSegment: 256 << 10}},
		{"fixed-8MiB", Options{SegmentSize: DefaultSegmentSize}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			j := mustOpen(b, b.TempDir(), bc.opts)
			defer mustClose(b, j)
			timeAppends(b, j, Record{Statements: []string{
				"INSERT INTO datastore (key, data, generation) VALUES (x'" + strings.Repeat("6b", 24) + "', x'" + strings.Repeat("a5", 600) + "', 0);",
				"UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = 12345",
			}})
		})
	}
}

// timeAppends appends rec (with a rising version) once per benchmark
// iteration, reports the p50, p99 and max latency in µs, and returns the
// quantile function.
func timeAppends(b *testing.B, j *Journal, rec Record) func(p float64) float64 {
	durs := make([]time.Duration, 0, 1<<16)
	var v uint32
	for b.Loop() {
		v++
		rec.Version = v
		start := time.Now()
		if _, err := j.Append(rec); err != nil {
			b.Fatal(err)
		}
		durs = append(durs, time.Since(start))
	}
	slices.Sort(durs)
	q := func(p float64) float64 { return float64(durs[int(p*float64(len(durs)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(q(1), "max-µs")
	return q
}
