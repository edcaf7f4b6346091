package store

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/clnbackup/backup/internal/memlimit"
)

// TestWriterReservesItsPack: an open writer raises the soft memory limit by
// its pack buffer, and Close gives it back (twice counts once). Without
// it, a compaction whose page tables filled the limit ran the collector
// without pause once the pack buffer grew.
func TestWriterReservesItsPack(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	const base = 48 << 20
	memlimit.SetBase(base)
	defer memlimit.SetBase(-1) // no limit set through memlimit for later tests
	st, _ := newTestStore(t)
	w, err := st.NewWriter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(base + st.Config().Params.PackSize + writerSlack)
	if got := debug.SetMemoryLimit(-1); got != want {
		t.Errorf("limit with a writer open %d, want %d", got, want)
	}
	w.Close()
	w.Close()
	if got := debug.SetMemoryLimit(-1); got != base {
		t.Errorf("limit after Close %d, want the base %d", got, base)
	}
}
