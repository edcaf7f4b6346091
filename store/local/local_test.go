package local_test

import (
	"testing"

	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/backend/backendtest"
	"github.com/clnbackup/backup/store/local"
)

func newLocal(t testing.TB) backend.Backend {
	b, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) { backendtest.Run(t, newLocal) }

func BenchmarkLocal(b *testing.B) { backendtest.Bench(b, newLocal) }
