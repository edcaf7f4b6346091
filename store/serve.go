package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/clnbackup/backup/chunker"
)

// The operations a store server performs for its clients' ChunkService.

// Missing reports, for each id, whether the store lacks the chunk or holds
// it only in a copy gc has condemned (a writer must then store it anew). It
// loads index objects other writers added first.
func (s *Store) Missing(ctx context.Context, ids []chunker.ID) ([]bool, error) {
	if s.remoteChunks != nil {
		return s.remoteChunks.Missing(ctx, ids)
	}
	if err := s.Refresh(ctx); err != nil {
		return nil, err
	}
	out := make([]bool, len(ids))
	for i, id := range ids {
		out[i] = !s.Has(id)
	}
	return out, nil
}

// ErrBadChunk is returned (wrapped) by PutBodies for a body that does not
// decompress to the bytes its ID names.
var ErrBadChunk = errors.New("chunk body does not match its id")

// PutBodies stores compressed chunk bodies a client sent: each is first
// decompressed and checked against its ID (a store never holds data under
// a name it does not hash to), then the ones the store lacks are written as
// one pack and its index, durably, before it returns the bytes added.
func (s *Store) PutBodies(ctx context.Context, bodies []ChunkBody) (int64, error) {
	if s.remoteChunks != nil {
		return s.remoteChunks.PutBodies(ctx, bodies)
	}
	var buf []byte
	for i, b := range bodies {
		if !b.Kind.valid() {
			return 0, fmt.Errorf("chunk %d (%s): %w: unknown kind %d", i, b.ID.Short(), ErrBadChunk, b.Kind)
		}
		if b.Base != (chunker.ID{}) {
			return 0, fmt.Errorf("chunk %d (%s): %w: a delta body (against %s); a store server takes full chunk bodies only", i, b.ID.Short(), ErrBadChunk, b.Base.Short())
		}
		data, err := s.decodeBody(buf[:0], b, "client")
		if err != nil {
			return 0, fmt.Errorf("chunk %d: %w: %v", i, ErrBadChunk, err)
		}
		buf = data
	}
	if err := s.Refresh(ctx); err != nil {
		return 0, err
	}
	w, err := s.newWriter(s.now())
	if err != nil {
		return 0, err
	}
	defer w.Close()
	for _, b := range bodies {
		if w.pending[b.ID] || s.Has(b.ID) {
			continue
		}
		start := len(w.bodies)
		w.bodies = append(w.bodies, b.Body...)
		w.entries = append(w.entries, indexEntry{ID: b.ID, Kind: b.Kind, Offset: uint32(start), Length: uint32(len(b.Body)), Raw: b.Raw})
		w.pending[b.ID] = true
	}
	if err := w.Flush(ctx); err != nil {
		return 0, err
	}
	return w.Stats().Added(), nil
}

func (k Kind) valid() bool { return k >= KindPage && k <= KindChange }

// NodeOfObject returns the node an object name belongs to ("nodes/N/..."),
// so a store server can allow a client its own nodes' objects and nothing
// else without knowing the layout.
func NodeOfObject(name string) (node string, ok bool) {
	rest, ok := strings.CutPrefix(name, "nodes/")
	if !ok {
		return "", false
	}
	node, _, ok = strings.Cut(rest, "/")
	return node, ok && node != ""
}

// IsLeaseObject reports whether name is one of a node's lease generations,
// the only objects a node's writer deletes.
func IsLeaseObject(name string) bool {
	node, ok := NodeOfObject(name)
	return ok && strings.HasPrefix(name, leasePrefix(node)) && len(name) > len(leasePrefix(node))
}

// IsJournalObject reports whether name is a file of a node's journal, which
// only the server's journal code touches.
func IsJournalObject(name string) bool {
	node, ok := NodeOfObject(name)
	return ok && strings.HasPrefix(name, nodePrefix(node)+"journal/")
}

// NodesPrefix is the prefix under which node objects are listed.
const NodesPrefix = "nodes/"

// ConfigObject is the name of the store's config object, which every
// client reads on open.
const ConfigObject = configName
