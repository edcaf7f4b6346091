package chunk

import (
	"math/rand/v2"
	"testing"

	"github.com/clnbackup/backup/store/crypt"
)

// BenchmarkDecodePage decodes and verifies a 4 KiB page (half random,
// half zeros: it compresses about 2x) from a plain and from an encrypted
// store's body: the CPU cost encryption adds to every chunk a restore
// reads (open, keyed hash instead of plain), in the same run.
func BenchmarkDecodePage(b *testing.B) {
	page := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range page[:2048] {
		page[i] = byte(r.Uint32())
	}
	for _, enc := range []bool{false, true} {
		name := "plain"
		if enc {
			name = "encrypted"
		}
		b.Run(name, func(b *testing.B) {
			c, err := NewCodec()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if enc {
				c.WithKeys(crypt.NewMasterKey().Keys())
			}
			e, _ := c.Encoder()
			id := c.ID(page)
			body := Body{ID: id, Kind: KindPage, Raw: uint32(len(page)), Body: c.SealBody(nil, e.EncodeAll(page, nil), id)}
			b.SetBytes(int64(len(page)))
			var buf []byte
			for b.Loop() {
				if buf, err = c.Decode(buf[:0], body, "bench"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
