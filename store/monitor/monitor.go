// Package monitor serves a store server's state over HTTP, read-only, for
// operators watching many nodes: Prometheus metrics (/metrics) and a small
// status page (/). It is what `backup-cli server --http ADDR` runs beside
// the store protocol, so that an alert fires when a node's writer stops
// instead of someone having to run `backup-cli status`.
package monitor

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/clnbackup/backup/internal/secretfile"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/remote"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultCacheFor is how long a status of the store is reused: taking it
// reads every node's manifests and lease, so scrapes from several
// Prometheus servers (or a reloaded page) within this time share one.
const DefaultCacheFor = 5 * time.Second

// DefaultStale is Options.Stale's default, as `backup-cli server
// --http-stale` has it.
const DefaultStale = 15 * time.Minute

// Options say what a Handler serves and to whom.
type Options struct {
	// Store is the store whose nodes are shown.
	Store *store.Store
	// Stats returns the store server's counters (remote.Server.Stats);
	// nil leaves the server metrics out.
	Stats func() remote.ServerStats
	// Stale marks a node whose writer has not been live for longer (the
	// rule of `status --max-stale`, history.StoreStatus.Stale); 0 takes
	// DefaultStale.
	Stale time.Duration
	// CacheFor is how long a status is reused (0: DefaultCacheFor).
	CacheFor time.Duration
	// Authorize reports whether a bearer token may read; nil lets every
	// request in (for a loopback-only address).
	Authorize func(token string) bool
	// Errorf logs a status that could not be taken; nil discards.
	Errorf func(format string, args ...any)
}

// Handler serves /metrics and / for GET and HEAD requests.
type Handler struct {
	opt     Options
	mux     *http.ServeMux
	mu      sync.Mutex
	cached  history.StoreStatus
	cacheOK bool
	taken   time.Time
	err     error
}

// New returns the handler of opt's store.
func New(opt Options) *Handler {
	if opt.Stale <= 0 {
		opt.Stale = DefaultStale
	}
	if opt.CacheFor <= 0 {
		opt.CacheFor = DefaultCacheFor
	}
	if opt.Errorf == nil {
		opt.Errorf = func(string, ...any) {}
	}
	h := &Handler{opt: opt, mux: http.NewServeMux()}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{h: h})
	h.mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	h.mux.HandleFunc("/{$}", h.page)
	return h
}

// ServeHTTP checks the method and the bearer token, then serves.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only: only GET and HEAD are served", http.StatusMethodNotAllowed)
		return
	}
	if h.opt.Authorize != nil {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !h.opt.Authorize(strings.TrimSpace(tok)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="backup-cli server"`)
			http.Error(w, "unauthorized: send Authorization: Bearer TOKEN with an admin token of the server's --auth file or a token of its --http-auth file", http.StatusUnauthorized)
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

// statusTimeout bounds the taking of one status: a scrape waits no longer.
const statusTimeout = time.Minute

// status returns the store's status, taken at most CacheFor ago; a failure
// is kept as long, so a broken store is not read on every request. Requests
// arriving while it is taken wait for it and share it. It is taken with a
// context of its own, so that a scraper that hangs up does not leave the
// others a cancelled status.
func (h *Handler) status() (history.StoreStatus, time.Time, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.taken.IsZero() && time.Since(h.taken) < h.opt.CacheFor {
		return h.cached, h.taken, h.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	st, err := history.Status(ctx, h.opt.Store, "")
	h.cached, h.taken, h.err = st, time.Now(), err
	if err != nil {
		h.err = fmt.Errorf("status of store %s: %w", h.opt.Store.Location(), err)
		h.opt.Errorf("http: %v", h.err)
	}
	return h.cached, h.taken, h.err
}

// TokenFile is the tokens of an --http-auth file, kept as hashes.
type TokenFile struct {
	hashes [][sha256.Size]byte
}

// LoadTokens reads an --http-auth file: one token per line (at least
// remote.MinTokenLength characters), blank lines and # comments ignored.
// Like the auth file, it must be readable by its owner only.
func LoadTokens(path string) (*TokenFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--http-auth: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("--http-auth: %w", err)
	}
	if err := secretfile.CheckMode(path, "the status page's tokens", fi.Mode()); err != nil {
		return nil, fmt.Errorf("--http-auth: %w", err)
	}
	tf := &TokenFile{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		tok := strings.TrimSpace(sc.Text())
		if tok == "" || strings.HasPrefix(tok, "#") {
			continue
		}
		if strings.ContainsAny(tok, " \t") || len(tok) < remote.MinTokenLength {
			return nil, fmt.Errorf("--http-auth %s: line %d: want one token of at least %d characters and no spaces (make one with backup-cli server add-token --out, or openssl rand -hex 32)", path, line, remote.MinTokenLength)
		}
		tf.hashes = append(tf.hashes, sha256.Sum256([]byte(tok)))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--http-auth %s: %w", path, err)
	}
	if len(tf.hashes) == 0 {
		return nil, fmt.Errorf("--http-auth %s: no tokens: add a line with one (openssl rand -hex 32)", path)
	}
	return tf, nil
}

// Allows reports whether token is one of the file's, comparing every hash
// in constant time.
func (tf *TokenFile) Allows(token string) bool {
	h := sha256.Sum256([]byte(token))
	found := 0
	for i := range tf.hashes {
		found |= subtle.ConstantTimeCompare(h[:], tf.hashes[i][:])
	}
	return found == 1
}
