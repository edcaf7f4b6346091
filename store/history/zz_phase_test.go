package history

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

func TestZZPhases(t *testing.T) {
	url := os.Getenv("PHASE_STORE")
	if url == "" {
		t.Skip()
	}
	ctx := context.Background()
	t0 := time.Now()
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.LatestManifest(ctx, "node1")
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	dest := t.TempDir() + "/r.db"
	f, _ := os.Create(dest)
	tab, err := loadPageTable(ctx, st, m.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	t2 := time.Now()
	sb := newSyncBehind(f)
	_, _, err = writePagesBehind(ctx, st, f, sb, m.Snapshot, tab, false, nil)
	t3 := time.Now()
	sb.wait()
	f.Close()
	t4 := time.Now()
	_, n, err := applyChanges(ctx, st, m, dest, true, func(r journal.Record) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	t5 := time.Now()
	if err := finishFile(dest, dest+".fin"); err != nil {
		t.Fatal(err)
	}
	t6 := time.Now()
	t.Logf("open %v table %v pages %v syncwait %v apply(%d) %v finish %v total %v", t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t4.Sub(t3), n, t5.Sub(t4), t6.Sub(t5), t6.Sub(t0))
}
