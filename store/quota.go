package store

import (
	"context"
	"fmt"
	"time"
)

// Quota is what a store server counts against a node token's quota (the
// quota= field of its auth file line), as `backup-cli list` reports it.
// Used = Referenced + Added: the stored bytes of the chunks the token's
// nodes' manifests name, counted at the server's start (or SIGHUP), plus
// every byte of chunk bodies and objects the token stored since the count
// began. The server refuses chunk uploads and object puts that would take
// Used over Limit.
type Quota struct {
	// Limit is the quota in bytes; 0 means the token has none.
	Limit int64 `json:"limit_bytes"`
	// Used is what counts against it.
	Used int64 `json:"used_bytes"`
	// Referenced is the stored bytes of the chunks the token's nodes'
	// manifests name, and of those nodes' objects (journals aside).
	Referenced int64 `json:"referenced_bytes"`
	// Added is what the token stored since the count began.
	Added int64 `json:"added_bytes"`
	// Counted is false while the server's count is running (Referenced
	// is then 0).
	Counted bool `json:"counted"`
	// CountedAt is when the count began.
	CountedAt time.Time `json:"counted_at"`
}

// QuotaReporter is the optional part of a Remote whose server counts
// quotas (a socket: store server).
type QuotaReporter interface {
	Quota(ctx context.Context) (Quota, error)
}

// Quota returns what the store server counts against this client's token;
// ok is false for a local store or a server that reports no quotas.
func (s *Store) Quota(ctx context.Context) (q Quota, ok bool, err error) {
	r, ok := s.closer.(QuotaReporter)
	if !ok {
		return Quota{}, false, nil
	}
	q, err = r.Quota(ctx)
	if err != nil {
		return Quota{}, false, fmt.Errorf("quota on store %s: %w", s.Location(), err)
	}
	return q, true, nil
}
