package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/clnbackup/backup/store/backend"
)

// TestObjectsReadWithinBounds: the objects a reader takes whole from a
// store (config, node records, manifests, leases) are refused, naming the
// object, when the store holds them larger than the program ever writes
// them: a damaged or hostile store cannot make a restore or a gc hold
// what it likes. Planted here as the files a store's host could leave.
func TestObjectsReadWithinBounds(t *testing.T) {
	for _, tc := range []struct {
		name   string
		object string
		size   int
		read   func(st *Store, dir string) error
	}{
		{"node record", "nodes/alice/node.json", maxRecordObject + 1, func(st *Store, _ string) error { _, err := st.Node(ctx, "alice"); return err }},
		{"manifest", "nodes/alice/manifests/00000000000000000001", maxNodeObject + 1, func(st *Store, _ string) error { _, err := st.Manifest(ctx, "alice", 1); return err }},
		{"lease", "nodes/alice/lease/00000000000000000001", maxRecordObject + 1, func(st *Store, _ string) error { _, err := st.Lease(ctx, "alice"); return err }},
		{"config", ConfigObject, maxRecordObject + 1, func(_ *Store, dir string) error {
			_, err := Open(ctx, "file://"+dir, Options{})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, dir := newTestStore(t)
			if err := st.CreateNode(ctx, NodeInfo{Name: "alice"}); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, filepath.FromSlash(tc.object))
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, bytes.Repeat([]byte{' '}, tc.size), 0o600); err != nil {
				t.Fatal(err)
			}
			err := tc.read(st, dir)
			if !errors.Is(err, backend.ErrTooLarge) || !bytes.Contains([]byte(err.Error()), []byte(tc.object)) {
				t.Fatalf("read an oversized %s: %v, want ErrTooLarge naming %s", tc.name, err, tc.object)
			}
			t.Log(err)
		})
	}
}
