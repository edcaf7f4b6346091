package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/backend"
)

// DeleteManifest removes one restore point of a node (backup-cli forget).
// Only the manifest object goes: the chunks it named stay until gc finds
// that no other manifest names them, so a restore point can be forgotten
// while writers and gc run. Deleting a manifest that is already gone is not
// an error. The caller decides what may be deleted: history.Forget never
// deletes a node's newest manifest, which the journal builds on.
func (s *Store) DeleteManifest(ctx context.Context, node string, seq uint64) error {
	if err := manifest.ValidNodeName(node); err != nil {
		return err
	}
	if seq == 0 {
		return fmt.Errorf("delete manifest of node %q: sequence number 0", node)
	}
	if err := s.be.Delete(ctx, manifestName(node, seq)); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return fmt.Errorf("delete manifest %d of node %q from store %s: %w", seq, node, s.Location(), err)
	}
	return nil
}

// ManifestObject is the name of the object that holds a node's manifest
// seq, for messages and reports that point at a damaged object.
func ManifestObject(node string, seq uint64) string { return manifestName(node, seq) }

// JournalObject is the name under which a node's journal segments live.
func JournalObject(node string) string { return nodePrefix(node) + "journal" }
