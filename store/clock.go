package store

import "time"

// Now is the store's clock: time.Now, or the clock injected through
// Options.Now. Every decision that compares times across runs (gc's grace
// period, lease expiry, forget's report) takes its time from here, so that
// tests can move time forward without sleeping.
func (s *Store) Now() time.Time { return s.now() }
