package history

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/clnbackup/backup/store"
)

// keptLease is a node's lease kept refreshed by a goroutine, every third of
// its lifetime, until stop: what a writer (a Node, Init) holds while it may
// commit manifests, and what gc --exclusive holds of every node.
type keptLease struct {
	h *store.LeaseHolder
	// owner is the holder's owner id (it never changes; read here so
	// that nobody reads h.Lease() while the refresher writes it).
	owner   string
	lost    atomic.Pointer[error]
	stop    chan struct{}
	stopped chan struct{}
}

// keepLease takes node's lease (store.ErrLeaseHeld, naming the holder, if a
// live writer has it) and starts refreshing it.
func keepLease(ctx context.Context, st *store.Store, node string) (*keptLease, error) {
	h, err := st.AcquireLease(ctx, node, store.DefaultLeaseTTL)
	if err != nil {
		return nil, err
	}
	k := &keptLease{h: h, owner: h.Lease().Owner, stop: make(chan struct{}), stopped: make(chan struct{})}
	go k.refresh()
	return k, nil
}

// refresh keeps the lease alive. If the lease is lost (another writer took
// it after it expired, say while the store was unreachable), err reports it
// and its holder must stop writing.
func (k *keptLease) refresh() {
	defer close(k.stopped)
	t := time.NewTicker(k.h.TTL() / 3)
	defer t.Stop()
	for {
		select {
		case <-k.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), k.h.TTL()/3)
			err := k.h.Refresh(ctx)
			cancel()
			if errors.Is(err, store.ErrLeaseLost) {
				k.lost.Store(&err)
				return
			}
			// Other errors (store unreachable): try again next tick;
			// the lease stays ours until it expires (check says when).
		}
	}
}

// err is non-nil once the lease was lost. It is cheap (an atomic load).
func (k *keptLease) err() error {
	if p := k.lost.Load(); p != nil {
		return *p
	}
	return nil
}

// check is the fence of a commit (store.Writer.Fence): the lease is neither
// lost nor expired.
func (k *keptLease) check() error {
	if err := k.err(); err != nil {
		return err
	}
	return k.h.Check()
}

// release stops refreshing and gives the lease up.
func (k *keptLease) release(ctx context.Context) error {
	close(k.stop)
	<-k.stopped
	return k.h.Release(ctx)
}
