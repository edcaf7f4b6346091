package history

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

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

// UnreadableError is gc's refusal to sweep: the manifests of the nodes it
// names could not be read (or named list and patch chunks that do not
// decode), so nobody can tell which chunks they need. Every node was
// marked, the others' objects are fine, and nothing was condemned or
// deleted this round.
type UnreadableError struct {
	// Nodes maps each node to what could not be read, in node order.
	Nodes map[string][]error
}

// ErrUnreadable is wrapped by UnreadableError, for errors.Is.
var ErrUnreadable = errors.New("unreadable manifests")

func (e *UnreadableError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gc: %d node(s) have manifests gc cannot read: ", len(e.Nodes))
	for i, n := range slices.Sorted(maps.Keys(e.Nodes)) {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "node %q: %v", n, errors.Join(e.Nodes[n]...))
	}
	b.WriteString(". gc deleted and condemned nothing: a chunk only those manifests name cannot be told from garbage. " +
		"Run backup-cli verify; a damaged manifest is restored from a copy, and an object the node's client should never have written " +
		"(junk) is removed from the store's directory on the server; then run gc again")
	return b.String()
}

// Unwrap lets errors.Is find ErrUnreadable.
func (e *UnreadableError) Unwrap() error { return ErrUnreadable }

// LiveChunks is the Marker of a store's restore points: every chunk named
// by a manifest of any node (changes, list and patch chunks, the pages
// they list). It remembers the manifests and list chunks it has read, so a
// second call reads only manifests committed since.
//
// The safe rule for what it cannot read: it marks every node it can, then
// fails with an UnreadableError naming each node whose manifests (or
// their list and patch chunks) it could not read, so gc sweeps nothing
// that round. A manifest that does not decode, or decodes but names a list
// chunk that does not, might name any chunk of the store; no age or
// ownership rule proves a chunk is not one of them (manifests name chunks
// years old, and chunks are shared between nodes). The node is reported,
// and repaired or cleaned by the operator, before space is reclaimed.
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
		bad := map[string][]error{}
		for _, node := range nodes {
			seqs, err := st.ManifestSeqs(ctx, node)
			if err != nil {
				if ctx.Err() != nil {
					return count, ctx.Err()
				}
				bad[node] = append(bad[node], err)
				continue
			}
			seqs = slices.DeleteFunc(seqs, func(seq uint64) bool { return seen[store.ManifestObject(node, seq)] })
			err = eachManifest(ctx, st, node, seqs, func(seq uint64, m *manifest.Manifest, err error) error {
				if errors.Is(err, backend.ErrNotFound) {
					return nil // forgotten meanwhile: it names nothing any more
				}
				if err == nil {
					if err = markManifest(ctx, get, use, read, m); err != nil {
						err = fmt.Errorf("manifest %d of node %q: %w", seq, node, err)
					}
				}
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					bad[node] = append(bad[node], err)
					return nil
				}
				seen[store.ManifestObject(node, seq)] = true
				count.Manifests++
				return nil
			})
			if err != nil {
				return count, err
			}
		}
		if len(bad) > 0 {
			return count, &UnreadableError{Nodes: bad}
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

// ReferencedChunks returns every chunk the manifests of nodes name (their
// change, list and patch chunks and the pages those lists and patches
// name), each once: what those nodes make the store keep, by the marking
// gc uses (a store server counts a token's quota with it). A manifest that
// cannot be read is handed to skip and left out.
func ReferencedChunks(ctx context.Context, st *store.Store, nodes []string, skip func(error)) ([]chunker.ID, error) {
	ids := map[chunker.ID]bool{}
	read := map[chunker.ID]bool{}
	use := func(id chunker.ID) { ids[id] = true }
	for _, node := range nodes {
		seqs, err := st.ManifestSeqs(ctx, node)
		if err != nil {
			return nil, err
		}
		err = eachManifest(ctx, st, node, seqs, func(seq uint64, m *manifest.Manifest, err error) error {
			if err == nil {
				err = markManifest(ctx, st.Get, use, read, m)
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				skip(fmt.Errorf("manifest %d of node %q: %w", seq, node, err))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	out := make([]chunker.ID, 0, len(ids))
	for id := range ids {
		out = append(out, id)
	}
	return out, nil
}
