package remote

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
)

func init() { store.RegisterDialer("socket", Dial) }

// generalConns is the number of connections for object and chunk
// requests; journal requests have a connection of their own, so a large
// upload never delays the plugin's hot path.
const generalConns = 4

// Client is a connection to a store server: the store.Remote of socket:
// URLs. It is safe for concurrent use.
type Client struct {
	u        store.URL
	token    string
	retryFor time.Duration
	name     string
	info     helloOK

	general *pool
	jlane   *pool

	connID atomic.Uint64
	mu     sync.Mutex
	live   map[*conn]bool
	closed bool
}

var _ store.Remote = (*Client)(nil)

// Dial connects to the store server u names (through its SOCKS5 proxy when
// u.Proxy is set) and authenticates with opts.Token. It tries once; later
// calls retry a lost connection for opts.RetryFor.
func Dial(ctx context.Context, u store.URL, opts store.Options) (store.Remote, error) {
	return DialClient(ctx, u, opts)
}

// DialClient is Dial returning the concrete type.
func DialClient(ctx context.Context, u store.URL, opts store.Options) (*Client, error) {
	if u.Scheme != "socket" || u.Addr == "" {
		return nil, fmt.Errorf("store URL %q is not a socket: URL", u.Raw)
	}
	cl := &Client{u: u, token: opts.Token, retryFor: opts.RetryFor, live: map[*conn]bool{}}
	if cl.retryFor == 0 {
		cl.retryFor = store.DefaultRetryFor
	}
	host, _ := os.Hostname()
	cl.name = fmt.Sprintf("%s pid %d on %s", filepath.Base(os.Args[0]), os.Getpid(), host)
	cl.general, cl.jlane = newPool(generalConns), newPool(1)
	c, info, err := cl.connect(ctx)
	if err != nil {
		return nil, cl.describe(err)
	}
	cl.info = info
	sl, _ := cl.general.get(context.Background())
	sl.c = c
	cl.general.put(sl)
	return cl, nil
}

// describe adds what to do to a connection failure.
func (cl *Client) describe(err error) error {
	var re *Error
	if errors.As(err, &re) || errors.Is(err, ErrTLS) {
		return fmt.Errorf("store server %s: %w", cl.u.Addr, err)
	}
	via := ""
	if cl.u.Proxy != "" {
		via = " through the SOCKS5 proxy " + cl.u.Proxy
	}
	return fmt.Errorf("connect to store server %s%s: %w (check that backup-cli server runs there and is reachable)", cl.u.Addr, via, err)
}

// Admin reports whether the client's token is an admin token.
func (cl *Client) Admin() bool { return cl.info.Admin }

// Nodes are the nodes a node token may use.
func (cl *Client) Nodes() []string { return slices.Clone(cl.info.Nodes) }

// Objects is the server's object view for this client.
func (cl *Client) Objects() backend.Backend { return objects{cl} }

// Chunks is nil for an admin token (the store then reads and writes packs
// itself, so gc, forget and verify work over the wire).
func (cl *Client) Chunks() store.ChunkService {
	if cl.info.Admin {
		return nil
	}
	return chunks{cl}
}

// Journals opens node journals on the server.
func (cl *Client) Journals() store.Journals { return journals{cl} }

// Close closes every connection. A journal opened through the client is
// released by the server.
func (cl *Client) Close() error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed {
		return nil
	}
	cl.closed = true
	for c := range cl.live {
		c.nc.Close()
	}
	return nil
}

var errClientClosed = errors.New("store server connection closed")

func (cl *Client) isClosed() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.closed
}

func (cl *Client) viaProxy() string {
	if cl.u.Proxy == "" {
		return ""
	}
	return " (and the SOCKS5 proxy " + cl.u.Proxy + ")"
}
