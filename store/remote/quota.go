package remote

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clnbackup/backup/internal/units"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/history"
)

// Quotas. A node token's auth line may end in quota=SIZE (10GiB, 500MiB,
// 1TB, plain bytes): the server then refuses the chunk uploads and object
// puts that would take what the token uses over SIZE, so one node's client
// cannot fill the store's disk for the others.
//
// What a token uses (store.Quota) is the stored bytes of every chunk its
// nodes' manifests name (list and patch chunks, the pages they list,
// change chunks: each distinct chunk once, however many manifests share
// it) and of its nodes' objects (journals aside), counted when the server
// starts and again on SIGHUP, plus every byte of chunk bodies and objects
// the token stored since that count began. Nothing is persisted: the
// count is recomputed from the store, which stays the one truth. Chunks a
// token uploaded and no manifest names drop out of its count at the next
// count, though they stay on disk until gc reclaims them (two runs a
// grace period apart): between counts, a token leaves at most its quota
// of such garbage.

// parseSize parses a quota size: digits with an optional unit, binary
// (KiB, MiB, GiB, TiB) or decimal (B, KB, MB, GB, TB), case-insensitive.
func parseSize(s string) (int64, error) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit (e.g. 10GiB, 500MB)", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	units := map[string]int64{"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
	mul, ok := units[strings.ToLower(s[i:])]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", s, s[i:])
	}
	if n > (1<<63-1)/mul {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n * mul, nil
}

// quotaBook is the server's count of what each quota token uses, by token
// hash (Identity.key): connections of one token share it.
type quotaBook struct {
	countMu sync.Mutex // one count at a time (start, SIGHUPs)
	mu      sync.Mutex
	tokens  map[string]*tokenUsage
}

type tokenUsage struct {
	referenced int64
	added      int64
	counted    bool
	countedAt  time.Time
}

func newQuotaBook() *quotaBook { return &quotaBook{tokens: map[string]*tokenUsage{}} }

func (b *quotaBook) usage(key string) *tokenUsage {
	u := b.tokens[key]
	if u == nil {
		u = &tokenUsage{}
		b.tokens[key] = u
	}
	return u
}

// reserve counts n bytes the token is about to store, refusing them when
// they would take it over its quota; settle replaces the reservation with
// what was really stored (0 when the request failed). Tokens without a
// quota are not counted.
func (b *quotaBook) reserve(id Identity, op string, n int64) (settle func(stored int64), err error) {
	if id.Admin || id.Quota <= 0 {
		return func(int64) {}, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.usage(id.key)
	if used := u.referenced + u.added; used+n > id.Quota {
		counted := ""
		if !u.counted {
			counted = " (the server is still counting what its nodes reference)"
		}
		return nil, denied("%s: refused to %s: its quota of %s would be exceeded: it uses %s%s and the request adds %s; "+
			"forget restore points and run gc (then send the server SIGHUP to count again), or raise quota= on its line of the auth file and send SIGHUP",
			op, id, units.Bytes(id.Quota), units.Bytes(used), counted, units.Bytes(n))
	}
	u.added += n
	return func(stored int64) {
		b.mu.Lock()
		u.added += stored - n
		b.mu.Unlock()
	}, nil
}

// report is what id uses, for its client.
func (b *quotaBook) report(id Identity) store.Quota {
	if id.Admin || id.Quota <= 0 {
		return store.Quota{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.usage(id.key)
	return store.Quota{Limit: id.Quota, Used: u.referenced + u.added, Referenced: u.referenced, Added: u.added, Counted: u.counted, CountedAt: u.countedAt}
}

// count recounts what every quota token of a uses (at start and after
// SIGHUP): bytes stored during the count stay in added; the referenced
// bytes replace the old ones when the count is done.
func (b *quotaBook) count(ctx context.Context, st *store.Store, a *Auth, errorf func(string, ...any)) {
	if a == nil {
		return
	}
	b.countMu.Lock()
	defer b.countMu.Unlock()
	for _, e := range a.entries {
		if e.id.Admin || e.id.Quota <= 0 {
			continue
		}
		b.mu.Lock()
		u := b.usage(e.id.key)
		before, began := u.added, time.Now()
		b.mu.Unlock()
		ref, err := referencedBytes(ctx, st, e.id.Nodes, errorf)
		if err != nil {
			if ctx.Err() == nil {
				errorf("quota of %s: count what its nodes reference: %v; its quota counts only what it stores from now on", e.id, err)
			}
			continue
		}
		b.mu.Lock()
		u.referenced, u.added, u.counted, u.countedAt = ref, u.added-before, true, began
		b.mu.Unlock()
	}
}

// referencedBytes is the stored bytes of every distinct chunk the nodes'
// manifests name and of the nodes' objects (journals aside). A manifest
// that cannot be read is logged and skipped (gc and list report it too).
func referencedBytes(ctx context.Context, st *store.Store, nodes []string, errorf func(string, ...any)) (int64, error) {
	p, err := st.Packs("count quotas")
	if err != nil {
		return 0, err
	}
	var total int64
	for _, node := range nodes {
		err := st.Objects().List(ctx, store.NodesPrefix+node+"/", func(in backend.Info) error {
			if !store.IsJournalObject(in.Name) {
				total += in.Size
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	ids, err := history.ReferencedChunks(ctx, st, nodes, func(err error) { errorf("quota count: %v (skipped)", err) })
	if err != nil {
		return 0, err
	}
	l, err := p.Lookup(ctx, ids)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		if in, ok := l.Locate(id); ok {
			total += int64(in.Length)
		}
	}
	return total, nil
}

// quota answers what the server counts against the session's token.
func (ss *session) quota(p []byte) error {
	if len(p) != 0 {
		return badRequest("quota request: %d unexpected payload bytes", len(p))
	}
	q := ss.srv.quotas.report(ss.id)
	return ss.ok(encode(quotaReply{Limit: q.Limit, Referenced: q.Referenced, Added: q.Added, Counted: q.Counted, CountedAt: q.CountedAt}))
}

// Quota asks the server what it counts against this client's token
// (store.QuotaReporter): Limit 0 when the token has no quota.
func (cl *Client) Quota(ctx context.Context) (store.Quota, error) {
	var r quotaReply
	err := cl.do(ctx, cl.general, func(c *conn, _ int) error {
		p, err := c.call(msgQuota, nil, nil)
		if err != nil {
			return err
		}
		r, err = decodeQuotaReply(p)
		if err != nil {
			return protoErr(err)
		}
		return nil
	})
	if err != nil {
		return store.Quota{}, fmt.Errorf("quota on store server %s: %w", cl.u.Addr, err)
	}
	if r.Limit == 0 {
		return store.Quota{}, nil
	}
	return store.Quota{Limit: r.Limit, Used: r.Referenced + r.Added, Referenced: r.Referenced, Added: r.Added, Counted: r.Counted, CountedAt: r.CountedAt}, nil
}

var _ store.QuotaReporter = (*Client)(nil)
