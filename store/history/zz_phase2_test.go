package history

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
)

func TestZZPages(t *testing.T) {
	url := os.Getenv("PHASE_STORE")
	if url == "" {
		t.Skip()
	}
	ctx := context.Background()
	st, err := store.Open(ctx, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.LatestManifest(ctx, "node1")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < iters(); i++ {
		dest := t.TempDir() + "/r.db"
		f, _ := os.Create(dest)
		t0 := time.Now()
		tab, err := loadPageTable(ctx, st, m.Snapshot)
		if err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		_, _, err = writePagesBehind(ctx, st, f, nil, m.Snapshot, tab, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("table %v pages %v", t1.Sub(t0), time.Since(t1))
		f.Close()
	}
}

func iters() int {
	if os.Getenv("ITERS") == "1" {
		return 1
	}
	return 8
}
