package history_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// BenchmarkStatus100Nodes: `backup-cli status` over a store of 100 nodes
// (each with two restore points, a sealed change chunk and a journal
// backlog; half of them with a live writer), on the store's directory and
// through a store server with an admin token. The baseline, measured in
// the same run, is `list`'s summary of the same store (SummarizeStore),
// which status extends with each node's lease and times.
func BenchmarkStatus100Nodes(b *testing.B) {
	st, _ := newStore(b)
	for i := range 100 {
		name := fmt.Sprintf("node%03d", i)
		if _, err := history.Init(ctx, st, name, "", nil); err != nil {
			b.Fatal(err)
		}
		n, err := history.OpenNode(ctx, st, name)
		if err != nil {
			b.Fatal(err)
		}
		for v := uint32(1); v <= 6; v++ {
			feed(b, n, journal.Record{Version: v, Time: time.Now().UTC(),
				Statements: []string{fmt.Sprintf("UPDATE vars SET intval=%d WHERE name='data_version';", v)}})
			if v == 3 {
				if _, err := n.Seal(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
		if i%2 == 0 {
			b.Cleanup(func() { n.Close() }) // a live writer
		} else if err := n.Close(); err != nil {
			b.Fatal(err)
		}
	}
	admin, _ := remoteStore(b, st, "*")
	for _, where := range []struct {
		name string
		st   *store.Store
	}{{"file", st}, {"server", admin}} {
		b.Run(where.name+"/list-baseline", func(b *testing.B) {
			for b.Loop() {
				if s, err := history.SummarizeStore(ctx, where.st, ""); err != nil || len(s.Nodes) != 100 {
					b.Fatalf("list: %d nodes, %v", len(s.Nodes), err)
				}
			}
		})
		b.Run(where.name+"/status", func(b *testing.B) {
			for b.Loop() {
				if s, err := history.Status(ctx, where.st, ""); err != nil || len(s.Nodes) != 100 {
					b.Fatalf("status: %d nodes, %v", len(s.Nodes), err)
				}
			}
		})
	}
}
