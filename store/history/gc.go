package history

import (
	"context"
	"errors"
	"fmt"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/packs"
)

// GC reclaims the chunks no restore point of any node needs, safely while
// writers keep writing: the store's packs sweep (packs.Packs.GC), with the
// live chunks found here, from every node's manifests.
func GC(ctx context.Context, st *store.Store, opts packs.GCOptions) (packs.GCReport, error) {
	p, err := st.Packs("gc")
	if err != nil {
		return packs.GCReport{}, err
	}
	return p.GC(ctx, opts, LiveChunks(st))
}

// PlanGC is GC's plan, for those who show it before (or instead of)
// executing it; the caller closes it.
func PlanGC(ctx context.Context, st *store.Store, opts packs.GCOptions) (*packs.GCPlan, error) {
	p, err := st.Packs("gc")
	if err != nil {
		return nil, err
	}
	return p.PlanGC(ctx, opts, LiveChunks(st))
}

// LiveChunks is the Marker of a store's restore points: every chunk named
// by a manifest of any node (changes, list and patch chunks, the pages
// they list). It remembers the manifests and list chunks it has read, so a
// second call reads only manifests committed since.
func LiveChunks(st *store.Store) packs.Marker {
	seen := map[string]bool{}     // manifests marked
	read := map[chunker.ID]bool{} // list and patch chunks marked
	var count packs.MarkCount
	return func(ctx context.Context, get func(context.Context, chunker.ID) ([]byte, error), use func(chunker.ID)) (packs.MarkCount, error) {
		nodes, err := st.Nodes(ctx)
		if err != nil {
			return count, err
		}
		count.Nodes = len(nodes)
		for _, node := range nodes {
			seqs, err := st.ManifestSeqs(ctx, node)
			if err != nil {
				return count, err
			}
			for _, seq := range seqs {
				key := store.ManifestObject(node, seq)
				if seen[key] {
					continue
				}
				m, err := st.Manifest(ctx, node, seq)
				if errors.Is(err, backend.ErrNotFound) {
					continue // forgotten meanwhile: it names nothing any more
				}
				if err != nil {
					return count, fmt.Errorf("gc: %w (gc stops rather than guess what a damaged manifest names; run backup-cli verify)", err)
				}
				seen[key] = true
				count.Manifests++
				if err := markManifest(ctx, get, use, read, m); err != nil {
					return count, fmt.Errorf("gc: manifest %d of node %q: %w", seq, node, err)
				}
			}
		}
		return count, nil
	}
}

// markManifest uses every chunk m names; list and patch chunks already in
// read (shared by manifests) are not read again.
func markManifest(ctx context.Context, get func(context.Context, chunker.ID) ([]byte, error), use func(chunker.ID), read map[chunker.ID]bool, m *manifest.Manifest) error {
	for _, c := range m.Changes {
		use(c.ID)
	}
	for _, id := range m.Snapshot.Lists {
		if read[id] {
			continue
		}
		data, err := get(ctx, id)
		if err != nil {
			return err
		}
		ids, err := manifest.DecodeList(data)
		if err != nil {
			return fmt.Errorf("list chunk %s: %w", id, err)
		}
		for _, p := range ids {
			use(p)
		}
		use(id)
		read[id] = true
	}
	for _, id := range m.Snapshot.Patches {
		if read[id] {
			continue
		}
		data, err := get(ctx, id)
		if err != nil {
			return err
		}
		p, err := manifest.DecodePatch(data)
		if err != nil {
			return fmt.Errorf("patch chunk %s: %w", id, err)
		}
		for _, e := range p.Entries {
			use(e.ID)
		}
		use(id)
		read[id] = true
	}
	return nil
}
