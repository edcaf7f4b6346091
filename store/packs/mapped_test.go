package packs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/local"
)

// TestReadMappedPackShrinks: a pack file cut short while a read holds it
// mapped (a store host changing a pack under a restore) fails the read with
// an error naming the pack, instead of the fault killing the process.
func TestReadMappedPackShrinks(t *testing.T) {
	p := newTestPacks(t, nil)
	ids := putPack(t, p, 7, 64)
	info := locate(t, p, ids[0])
	path := filepath.Join(p.be.(*local.Backend).Root(), packName(info.Pack))
	var calls atomic.Int32
	var sum byte
	_, err := p.ReadBodies(ctx, nil, ids, 1, false, func() (func(chunk.Body) error, func() error) {
		return func(b chunk.Body) error {
			if calls.Add(1) == 1 {
				if err := os.Truncate(path, 0); err != nil {
					return err
				}
			}
			for _, c := range b.Body { // touches every mapped byte
				sum += c
			}
			return nil
		}, nil
	})
	if err == nil {
		t.Fatalf("read of a pack cut to nothing under it succeeded (%d bodies)", calls.Load())
	}
	if !errors.Is(err, chunk.ErrCorrupt) || !strings.Contains(err.Error(), info.Pack.String()) {
		t.Fatalf("error %q does not report a corrupt pack %s", err, info.Pack)
	}
	t.Logf("error: %v", err)
}

// TestReadMappedEqualsRead: bodies read through a mapping are the bytes
// pread gives.
func TestReadMappedEqualsRead(t *testing.T) {
	p := newTestPacks(t, nil)
	ids := putPack(t, p, 9, 250)
	got := map[chunker.ID][]byte{}
	if _, err := p.ReadBodies(ctx, nil, ids, 2, false, func() (func(chunk.Body) error, func() error) {
		var own = map[chunker.ID][]byte{}
		return func(b chunk.Body) error {
				own[b.ID] = append([]byte(nil), b.Body...)
				return nil
			}, func() error {
				for id, b := range own {
					got[id] = b
				}
				return nil
			}
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ids) {
		t.Fatalf("read %d bodies of %d", len(got), len(ids))
	}
	for _, id := range ids {
		info := locate(t, p, id)
		want, err := p.be.Get(ctx, packName(info.Pack), int64(info.Offset), int64(info.Length))
		if err != nil {
			t.Fatal(err)
		}
		if string(want) != string(got[id]) {
			t.Fatalf("chunk %s: mapped body differs from the pread one", id.Short())
		}
	}
}
