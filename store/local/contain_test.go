package local_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/local"
)

// TestContainment: no object name, list prefix or symbolic link inside the
// store makes the backend read, list, write or delete a file outside its
// directory; each attempt fails with an error, the outside file unchanged.
func TestContainment(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("host file"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutIfAbsent(ctx, "nodes/alice/node.json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// Links an operator (or another tenant of the machine) left in the
	// store: a directory and a file pointing out of it.
	if err := os.Symlink(outside, filepath.Join(dir, "nodes", "evil")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "nodes", "alice", "link")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		op   func() error
	}{
		{"get through a linked directory", func() error { _, err := b.Get(ctx, "nodes/evil/secret", 0, -1); return err }},
		{"get a linked file", func() error { _, err := b.Get(ctx, "nodes/alice/link", 0, -1); return err }},
		{"stat through a linked directory", func() error { _, err := b.Stat(ctx, "nodes/evil/secret"); return err }},
		{"put through a linked directory", func() error { return b.PutIfAbsent(ctx, "nodes/evil/planted", []byte("x")) }},
		{"delete through a linked directory", func() error { return b.Delete(ctx, "nodes/evil/secret") }},
		{"list a linked directory", func() error {
			return b.List(ctx, "nodes/evil/", func(in backend.Info) error { return errors.New("listed " + in.Name) })
		}},
		{"list a dot-dot prefix", func() error {
			return b.List(ctx, "nodes/alice/../../../../", func(in backend.Info) error { return errors.New("listed " + in.Name) })
		}},
		{"get a dot-dot name", func() error { _, err := b.Get(ctx, "nodes/../../secret", 0, -1); return err }},
		{"journal path through a linked directory", func() error { _, err := b.Path("nodes/evil/journal"); return err }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if err == nil {
				t.Fatal("reached outside the store: no error")
			}
			t.Logf("refused: %v", err)
		})
	}
	if got, _ := os.ReadFile(secret); !bytes.Equal(got, []byte("host file")) {
		t.Fatalf("outside file changed: %q", got)
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Fatal("a put wrote outside the store")
	}
	// The whole store lists without following the links out.
	err = b.List(ctx, "", func(in backend.Info) error {
		if strings.Contains(in.Name, "evil") {
			t.Errorf("listed %s from outside the store", in.Name)
		}
		return nil
	})
	if err != nil {
		t.Logf("list of the whole store: %v", err)
	}
	// Objects inside still work.
	if _, err := b.Get(ctx, "nodes/alice/node.json", 0, -1); err != nil {
		t.Fatal(err)
	}
}
