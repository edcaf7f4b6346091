package packs

import (
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/local"
)

// FuzzDecodeCondemned: a condemned record comes from the store; whatever
// its bytes, decoding never panics, and a record it accepts is sorted by
// chunk id and answers lookups of its own entries.
func FuzzDecodeCondemned(f *testing.F) {
	r := newCondemnedRecord(2)
	r.add(chunkCopy{chunker.Sum([]byte("a")), chunker.Sum([]byte("p"))}, 5)
	r.add(chunkCopy{chunker.Sum([]byte("b")), chunker.Sum([]byte("p"))}, 0)
	be, err := local.New(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	name, err := writeCondemned(ctx, be, time.Unix(100, 0), r)
	if err != nil {
		f.Fatal(err)
	}
	rec, err := be.Get(ctx, name, 0, -1)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rec)
	f.Add([]byte(condemnedMagic + "\x00\x00\x00\x00"))
	f.Add([]byte(condemnedMagic + "\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		set, err := decodeCondemned(b)
		if err != nil {
			return
		}
		for i := range set.len() {
			cc, _ := set.at(i)
			if _, ok := set.lookup(cc); !ok {
				t.Fatalf("entry %d (%s in %s) not found by lookup", i, cc.id.Short(), cc.pack.Short())
			}
			if !set.hasID(cc.id) {
				t.Fatalf("entry %d: hasID false", i)
			}
		}
	})
}
