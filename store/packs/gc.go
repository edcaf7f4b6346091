package packs

import (
	"context"
	"time"
)

// Garbage collection while writers keep writing (see docs/design.md, "gc").
// The chunk layer sweeps; what is live is handed in from above (a Marker:
// history reads the manifests), so the sweep knows nothing of manifests.
//
// The danger every deduplicating store meets: a writer finds a chunk already
// stored and skips writing it; gc, not yet seeing a manifest that names the
// chunk, deletes it; the writer then commits a manifest naming a chunk that
// is gone. We prevent it in two phases:
//
//  1. A gc run condemns every chunk copy that no manifest names, in packs
//     older than the grace period, by writing a condemned record; it
//     deletes nothing it has not condemned at least a grace period before.
//  2. Writers load the newest condemned record when they start and never
//     reuse a condemned copy: they store the chunk again. A writer that
//     started before the record existed may reuse a condemned copy, but it
//     must commit within MaxWriterAge (Writer.CheckAge), which is shorter
//     than the grace period; so its manifest exists when the deleting run
//     marks, and the copy is rescued.
//
// A run also re-reads the manifests just before deleting. A pack that no
// index names is condemned the same way (a copy with a zero chunk id) and
// deleted only if it still has no index a grace period later: its mtime is
// the backend's clock, not the store's, and cannot prove that no writer is
// between writing the pack and writing its index.

// GCOptions tune a gc run.
type GCOptions struct {
	// Grace is how long an unreferenced chunk stays condemned before it is
	// deleted, and how old a pack must be before gc touches it. It must be
	// at least twice the store's MaxWriterAge (default 24h).
	Grace time.Duration
	// RepackBelow: a pack whose live share of bytes is below it, and whose
	// other chunks may all be deleted, is rewritten (default 0.5).
	RepackBelow float64
	// ConsolidateBelow: packs smaller than this many bytes (0: the store's
	// pack size; negative: none) that gc may rewrite (old enough, and every
	// dead chunk in them deletable) are consolidated when there are at least
	// two: their live chunks are rewritten together into full packs, the
	// same way a repack rewrites one pack, and the old packs deleted. Each
	// compaction leaves one partial pack (and its index); consolidation
	// keeps the store's object count proportional to its size.
	ConsolidateBelow int64
	// Exclusive deletes every unreferenced chunk copy at once, with no
	// grace period and whatever its pack's age: the caller guarantees that
	// no writer commits a manifest from before the run's final mark until
	// it ends (history.GCExclusive holds every node's lease, and checks in
	// BeforeDelete that no node appeared without one). Then nothing can
	// come to name a chunk the run found unreferenced, and the two phases
	// below are not needed. Packs without an index still wait a grace
	// period: a writer that died may not be the only one that leaves them,
	// and deleting a pack whose index is about to be written would leave an
	// index naming a missing pack.
	Exclusive bool
	// BeforeDelete, if set, is called by Execute after the condemned
	// record is written and before anything is rewritten or deleted; an
	// error stops the run with nothing deleted. An exclusive run checks
	// there that it still holds what makes it exclusive.
	BeforeDelete func(ctx context.Context) error
	// DryRun reports what would be done and changes nothing.
	DryRun bool
	// Progress, if set, is told about packs examined.
	Progress func(done, total int64)
}
