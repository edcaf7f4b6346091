package remote

import (
	"context"
	"errors"
	"fmt"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/chunk"
)

// chunks is the ChunkService of a node token.
type chunks struct{ cl *Client }

// missingBatch is the number of ids per Missing request.
const missingBatch = 16 << 10

// Missing asks in batches of missingBatch ids (a request holds at most
// maxIDsPerRequest); a batch is idempotent, so a lost connection retries
// it.
func (ch chunks) Missing(ctx context.Context, ids []chunker.ID) ([]bool, error) {
	out := make([]bool, 0, len(ids))
	for start := 0; start < len(ids); start += missingBatch {
		batch := ids[start:min(len(ids), start+missingBatch)]
		req := encode(idsRequest{IDs: batch})
		err := ch.cl.do(ctx, ch.cl.general, func(c *conn, _ int) error {
			p, err := c.call(msgMissing, req, nil)
			if err != nil {
				return err
			}
			r, err := decodeMissingReply(p)
			if err != nil {
				return protoErr(err)
			}
			if len(r.Missing) != len(batch) {
				return protoErr(fmt.Errorf("missing: %d answers for %d ids", len(r.Missing), len(batch)))
			}
			out = append(out, r.Missing...)
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

// PutBodies sends the bodies in batches of about a pack (putBatch), and of
// at most chunk.MaxBatchRaw bytes uncompressed (the server refuses more in
// one request); a batch retried after a lost connection stores nothing
// twice: the store writes only the bodies it lacks.
func (ch chunks) PutBodies(ctx context.Context, bodies []chunk.Body) (int64, error) {
	var added int64
	for len(bodies) > 0 {
		n, size, raw := 0, 4, int64(0)
		for n < len(bodies) && (n == 0 || size+45+len(bodies[n].Body) <= putBatch && raw+int64(bodies[n].Raw) <= chunk.MaxBatchRaw) {
			size += 45 + len(bodies[n].Body)
			raw += int64(bodies[n].Raw)
			n++
		}
		req := encode(putBodiesRequest{Bodies: bodies[:n]})
		bodies = bodies[n:]
		err := ch.cl.do(ctx, ch.cl.general, func(c *conn, _ int) error {
			p, err := c.call(msgPutBodies, req, nil)
			if err != nil {
				return err
			}
			r, err := decodePutBodiesReply(p)
			if err != nil {
				return protoErr(err)
			}
			added += r.Added
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
func (ch chunks) ReadBodies(ctx context.Context, ids []chunker.ID, fn func(chunk.Body) error) error {
	distinct := distinctIDs(ids)
	delivered := make(map[chunker.ID]bool, len(distinct))
	for start := 0; start < len(distinct); start += readBatch {
		batch := distinct[start:min(len(distinct), start+readBatch)]
		err := ch.cl.do(ctx, ch.cl.general, func(c *conn, _ int) error {
			want := batch[:0:0]
			for _, id := range batch {
				if !delivered[id] {
					want = append(want, id)
				}
			}
			if len(want) == 0 {
				return nil
			}
			_, err := c.call(msgReadBodies, encode(idsRequest{IDs: want}), func(typ byte, p []byte) error {
				if typ != msgBody {
					return protoErr(fmt.Errorf("%s frame in a read-bodies answer", msgName(typ)))
				}
				r, err := decodeBodyReply(p)
				if err != nil {
					return protoErr(err)
				}
				b := r.Body
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

// distinctIDs returns ids without repeats, in their first order: the
// server answers each id once.
func distinctIDs(ids []chunker.ID) []chunker.ID {
	seen := make(map[chunker.ID]bool, len(ids))
	out := make([]chunker.ID, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
