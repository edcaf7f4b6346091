package plugin

import (
	"context"
	"math/rand/v2"

	"github.com/clnbackup/backup/internal/priority"
)

// Compaction runs beside lightningd's db_write hooks, which wait for the
// plugin: it must not take the CPU or the disk from them. Its goroutine and
// every worker the store starts for it run on OS threads of their own
// under the idle CPU policy and in the idle I/O class (internal/priority);
// the SQLite replay runs on the first of them.

// runLowPriority runs fn on a new goroutine locked to its own, lowered OS
// thread, with ctx marked so that the store's workers for it are lowered
// too, and tells fn what was applied (for the log).
func runLowPriority(ctx context.Context, fn func(ctx context.Context, applied string)) {
	go func() {
		fn(priority.Background(ctx), priority.Lower())
	}()
}

// jitterFactor scales a plugin's automatic compaction triggers by a factor
// in [1, 1.2) drawn once per run, so that nodes with the same settings and
// the same load sharing a server do not all compact at the same moment.
func jitterFactor() float64 {
	return 1 + 0.2*rand.Float64()
}
