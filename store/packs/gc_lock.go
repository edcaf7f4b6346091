package packs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/clnbackup/backup/store/backend"
)

// gcLockName is the object that says a gc is running.
const gcLockName = "gc/running"

// gcLock makes sure one gc runs at a time; a lock older than the grace
// period is stale (its gc died) and is taken over.
func (g *GCPlan) gcLock(ctx context.Context, grace time.Duration) (func(), error) {
	p := g.p
	host, _ := os.Hostname()
	data, _ := json.Marshal(map[string]any{"host": host, "pid": os.Getpid(), "started": p.now().UTC()})
	for try := 0; try < 2; try++ {
		err := p.be.PutIfAbsent(ctx, gcLockName, data)
		if err == nil {
			return func() { p.be.Delete(context.Background(), gcLockName) }, nil
		}
		if !errors.Is(err, backend.ErrExists) {
			return nil, fmt.Errorf("gc: take the gc lock: %w", err)
		}
		in, serr := p.be.Stat(ctx, gcLockName)
		if serr != nil {
			continue
		}
		if p.now().Sub(in.ModTime) < grace {
			held, _ := backend.ReadWhole(ctx, p.be, gcLockName, 4<<10)
			return nil, fmt.Errorf("another gc is running on store %s (%s, since %s); if it died, remove the object %s", p.be.Location(), strings.TrimSpace(string(held)), in.ModTime.UTC().Format(time.RFC3339), gcLockName)
		}
		if err := p.be.Delete(ctx, gcLockName); err != nil {
			return nil, fmt.Errorf("gc: remove stale gc lock: %w", err)
		}
	}
	return nil, fmt.Errorf("gc: could not take the gc lock of store %s", p.be.Location())
}
