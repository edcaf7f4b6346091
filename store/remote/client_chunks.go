package remote

import (
	"context"
	"errors"
	"fmt"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store"
)

// chunks is the ChunkService of a node token.
type chunks struct{ cl *Client }

// missingBatch is the number of ids per Missing request.
const missingBatch = 16 << 10

func (ch chunks) Missing(ctx context.Context, ids []chunker.ID) ([]bool, error) {
	out := make([]bool, 0, len(ids))
	for start := 0; start < len(ids); start += missingBatch {
		batch := ids[start:min(len(ids), start+missingBatch)]
		err := ch.cl.do(ctx, ch.cl.general, func(c *conn, _ int) error {
			var e enc
			e.u32(uint32(len(batch)))
			for _, id := range batch {
				e.id(id)
			}
			p, err := c.call(msgMissing, e.b, nil)
			if err != nil {
				return err
			}
			d := dec{b: p}
			n := d.u32()
			if d.err == nil && int(n) != len(batch) {
				return protoErr(fmt.Errorf("missing: %d answers for %d ids", n, len(batch)))
			}
			for range batch {
				out = append(out, d.bool())
			}
			if err := d.done(); err != nil {
				out = out[:start]
				return protoErr(err)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("store server %s: %w", ch.cl.u.Addr, err)
		}
	}
	return out, nil
}

// putBatch bounds the payload of one PutBodies request: a whole pack of
// the writer (which flushes at the store's pack size, 8 MiB by default, plus
// one chunk), so the server writes it as one pack; a single larger body
// travels alone.
const putBatch = 24 << 20

func (ch chunks) PutBodies(ctx context.Context, bodies []store.ChunkBody) (int64, error) {
	var added int64
	for len(bodies) > 0 {
		n, size := 0, 4
		for n < len(bodies) && (n == 0 || size+45+len(bodies[n].Body) <= putBatch) {
			size += 45 + len(bodies[n].Body)
			n++
		}
		batch := bodies[:n]
		bodies = bodies[n:]
		err := ch.cl.do(ctx, ch.cl.general, func(c *conn, _ int) error {
			e := enc{b: make([]byte, 0, size)}
			e.u32(uint32(len(batch)))
			for _, b := range batch {
				e.body(b)
			}
			p, err := c.call(msgPutBodies, e.b, nil)
			if err != nil {
				return err
			}
			d := dec{b: p}
			a := d.i64()
			if err := d.done(); err != nil {
				return protoErr(err)
			}
			added += a
			return nil
		})
		if err != nil {
			return added, fmt.Errorf("store server %s: %w", ch.cl.u.Addr, err)
		}
	}
	return added, nil
}

// readBatch is the number of ids per ReadBodies request.
const readBatch = 32 << 10

// ReadBodies streams the bodies; after a lost connection it asks again for
// the ones not delivered yet.
func (ch chunks) ReadBodies(ctx context.Context, ids []chunker.ID, fn func(store.ChunkBody) error) error {
	seen := make(map[chunker.ID]bool, len(ids))
	distinct := make([]chunker.ID, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			distinct = append(distinct, id)
		}
	}
	clear(seen)
	delivered := seen
	for start := 0; start < len(distinct); start += readBatch {
		batch := distinct[start:min(len(distinct), start+readBatch)]
		err := ch.cl.do(ctx, ch.cl.general, func(c *conn, _ int) error {
			var e enc
			want := batch[:0:0]
			for _, id := range batch {
				if !delivered[id] {
					want = append(want, id)
				}
			}
			if len(want) == 0 {
				return nil
			}
			e.u32(uint32(len(want)))
			for _, id := range want {
				e.id(id)
			}
			_, err := c.call(msgReadBodies, e.b, func(typ byte, p []byte) error {
				if typ != msgBody {
					return protoErr(fmt.Errorf("%s frame in a read-bodies answer", msgName(typ)))
				}
				d := dec{b: p}
				b := d.body()
				if err := d.done(); err != nil {
					return protoErr(err)
				}
				if delivered[b.ID] {
					return nil
				}
				delivered[b.ID] = true
				return fn(b)
			})
			return err
		})
		if err != nil {
			var re *Error
			if errors.As(err, &re) {
				return fmt.Errorf("store server %s: %w", ch.cl.u.Addr, err)
			}
			return err
		}
	}
	return nil
}
