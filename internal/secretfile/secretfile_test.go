package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o700, true},
		{0o640, false},
		{0o644, false},
		{0o604, false},
		{0o660, false},
	}
	for _, tc := range tests {
		path := filepath.Join(dir, tc.mode.String())
		if err := os.WriteFile(path, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.mode); err != nil {
			t.Fatal(err)
		}
		err := Check(path, "a token")
		if tc.ok != (err == nil) {
			t.Errorf("mode %o: %v, want ok %v", tc.mode, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %o: %v does not say how to fix it", tc.mode, err)
		}
	}
	if err := Check(filepath.Join(dir, "missing"), "a token"); err != nil {
		t.Errorf("missing file: %v, want nil (the read reports it)", err)
	}
}
