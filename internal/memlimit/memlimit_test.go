package memlimit

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestReserve: reservations add to the base while held, releasing twice
// counts once, and without a base nothing is set.
func TestReserve(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	state.base, state.reserved = -1, 0
	r := Reserve(10 << 20)
	if debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatal("a reservation without a base set a limit")
	}
	r()
	SetBase(32 << 20)
	r1 := Reserve(8 << 20)
	r2 := Reserve(4 << 20)
	if got := debug.SetMemoryLimit(-1); got != 44<<20 {
		t.Fatalf("limit %d, want %d", got, 44<<20)
	}
	r1()
	r1()
	r2()
	if got := debug.SetMemoryLimit(-1); got != 32<<20 {
		t.Fatalf("limit %d after releases, want the base %d", got, 32<<20)
	}
	state.base, state.reserved = -1, 0
}
