package history

import (
	"context"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
)

// manifestReaders is how many manifests forget, gc and verify read at
// once: a manifest read is a small object fetched and decoded, so at a
// year of history (hundreds per node) the reads, not the work on them,
// would set the pace if done one after the other (on an object store
// each is a round trip).
const manifestReaders = 16

// fetched is one manifest read: the manifest, or why it could not be read.
type fetched struct {
	m   *manifest.Manifest
	err error
}

// eachManifest reads the manifests seqs of node, up to manifestReaders at
// a time, and calls fn with each in the order of seqs (err is the read's
// error, e.g. wrapping backend.ErrNotFound for a manifest deleted since
// the listing). At most manifestReaders manifests are held at once. An
// error from fn stops the reading and is returned.
func eachManifest(ctx context.Context, st *store.Store, node string, seqs []uint64, fn func(seq uint64, m *manifest.Manifest, err error) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]chan fetched, len(seqs))
	for i := range results {
		results[i] = make(chan fetched, 1)
	}
	slots := make(chan struct{}, manifestReaders)
	go func() {
		for i, seq := range seqs {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func() {
				m, err := st.Manifest(ctx, node, seq)
				results[i] <- fetched{m, err}
			}()
		}
	}()
	for i, seq := range seqs {
		var f fetched
		select {
		case f = <-results[i]:
		case <-ctx.Done():
			return ctx.Err()
		}
		<-slots
		if err := fn(seq, f.m, f.err); err != nil {
			return err
		}
	}
	return nil
}
