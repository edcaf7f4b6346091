package remote

import (
	"testing"
	"time"
)

// TestAttackHarness: with no attack, the well-behaved client's appends to a
// server process all succeed; the process's usage is readable.
func TestAttackHarness(t *testing.T) {
	t.Parallel()
	ps := startProcServer(t)
	b := startBystander(t, ps, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	p50, p99 := b.check(2 * time.Second)
	t.Logf("appends p50 %v p99 %v; server %v", p50, p99, ps.usage())
}
