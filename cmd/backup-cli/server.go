package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/monitor"
	"github.com/clnbackup/backup/store/remote"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// shutdownGrace bounds a graceful shutdown: requests in progress get this
// long to finish before connections are closed.
const shutdownGrace = 30 * time.Second

// serverOpts are server's flags.
type serverOpts struct {
	authFile  string
	logFormat string
	maxConns  int
	// TLS: a key pair kept (and made the first time) in a directory, or
	// given as files.
	tlsSelfSigned, tlsCert, tlsKey string
	// s3Creds is the global --s3-credentials.
	s3Creds string
	// journalDir keeps an s3:// store's journals on this disk.
	journalDir string
	// groupCommit makes the nodes' journal appends durable together.
	groupCommit bool
	// The limits on what clients may make the server hold
	// (remote.ServerOptions); 0 takes the default.
	maxConnsPerToken     int
	maxHandshakes        int
	maxHandshakesPerAddr int
	maxConnsPerAddr      int
	handshakeTimeout     time.Duration
	maxMemoryMiB         int
	// The status page and metrics (--http).
	httpAddr, httpAuth string
	httpStale          time.Duration
}

// newServerCmd declares server's flags and help; runServer does the work.
// serverLong is server's help: what it serves, to whom, and the limits,
// TLS and monitoring an operator sets up.
const serverLong = `server serves the store at URL (file:// or s3://, created when missing or
empty, as init does) on LISTEN_ADDR (HOST:PORT) to many clients at once: backup plugins
and backup-cli commands given socket:HOST:PORT[?proxy=socks5:PHOST:PPORT]
[&tls=FINGERPRINT|system].

Clients send only the chunks the server lacks; a journal append is answered
only once it is durable on the server. With --auth FILE each client must
present a token from the file: a line "TOKEN NODE[,NODE...]" lets a client
write and read those nodes only (never delete anything but its lease), a line
"TOKEN *" is an admin token (gc, forget, verify over the wire); # starts a
comment. A node token's line may end in "quota=SIZE" (10GiB, 500MiB, 1TB,
bytes): the server then refuses the uploads that would take the stored bytes
its nodes reference (counted from the store at start and on SIGHUP) plus what
it stored since over SIZE; backup-cli list shows the count. Make tokens with
"backup-cli server add-token --out FILE". Without --auth every client is
admin: use that only on a trusted network. The auth file must be readable by
its owner only (chmod 600). SIGHUP reloads the auth file and counts the
quotas again.

Node tokens reach only the objects the store layout defines under their
nodes, and what they put is checked by kind (a manifest must decode, be of its
node and name stored chunks): one node's client cannot stop gc or list for
the others.

With --tls-self-signed DIR the server speaks TLS 1.3 with a key pair kept in
DIR (made the first time: key.pem, mode 0600, and cert.pem) and logs its
fingerprint, the SHA-256 of the key's SubjectPublicKeyInfo in hex: clients pin
it with socket:HOST:PORT?tls=FINGERPRINT (a renewed certificate for the same
key keeps the pin). With --tls-cert and --tls-key it uses a certificate of
your own: clients pin its fingerprint too, or, for a certificate from a
public CA, verify it with tls=system. Without TLS the protocol is plaintext:
tokens and node data cross the network in clear, so the server warns when it
listens on an address that is not loopback; over the internet use TLS, or
reach the server through Tor (a .onion address and the proxy= parameter),
WireGuard or an SSH tunnel.

SIGTERM or SIGINT stops accepting, lets requests in progress finish and be
answered, and closes the journals. SIGHUP reloads the auth file: connections
of a token removed from it (or whose nodes shrank) are closed at once.

Limits keep one client, or anyone who can reach the port, from exhausting the
server: connections still logging in (--max-handshakes, at most
--max-handshakes-per-addr from one address, each for --handshake-timeout) do
not count against --max-conns; one token holds at most --max-conns-per-token
connections; request frames over 64 KiB wait for a share of --max-memory MiB
before they are read (refused as busy after 2 minutes of waiting; clients
retry). Refused connections are logged once a minute per address, with a
count.

With --http HOST:PORT the server also serves, read-only, a status page (/)
listing the nodes, those without a live writer for longer than --http-stale
marked stale, and Prometheus metrics (/metrics: every node's status, taken at
most every 5 seconds, and the server's counters; docs/metrics.md lists them).
A request needs "Authorization: Bearer TOKEN" with a token of --http-auth
FILE (one a line, chmod 600) or, without it, an admin token of --auth; on a
loopback-only address without --http-auth no token is needed, and on any
other address the server refuses to start without a token to check. SIGHUP
reloads the --http-auth file too. Under TLS the page speaks HTTPS with the
same key pair.`

func newServerCmd(g *globals) *cobra.Command {
	o := &serverOpts{}
	cmd := &cobra.Command{
		Use:   "server [--auth FILE] [--tls-self-signed DIR | --tls-cert FILE --tls-key FILE] [--log-format plain|systemd] [--max-conns N] [limits] [--http ADDR [--http-auth FILE]] URL LISTEN_ADDR",
		Short: "Serve a store to backup plugins and backup-cli over TCP (socket: URLs)",
		Long:  serverLong,
		Example: `  backup-cli server --auth /etc/clnbackup/auth --tls-self-signed /etc/clnbackup/tls file:///srv/backup/store 0.0.0.0:7000
  backup-cli server add-token --auth /etc/clnbackup/auth --node alice --out alice.token
  backup-cli server tls-fingerprint --tls-self-signed /etc/clnbackup/tls
  backup-cli server --auth /etc/clnbackup/auth --http 127.0.0.1:9738 file:///srv/backup/store 0.0.0.0:7000
  backup-cli init --token-file alice.token --lightning-dir ~/.lightning/bitcoin --node alice 'socket:backup.example:7000?tls=FINGERPRINT'`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.s3Creds = g.s3Creds
			return runServer(cmd, o, args[0], args[1])
		},
	}
	o.addFlags(cmd.Flags())
	cmd.AddCommand(newAddTokenCmd(g), newTLSFingerprintCmd())
	return cmd
}

// addFlags declares server's flags into o.
func (o *serverOpts) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.authFile, "auth", "", "auth file: lines \"TOKEN NODE[,NODE...] [quota=SIZE]\" or \"TOKEN *\" (admin)")
	fs.StringVar(&o.logFormat, "log-format", "plain", "log lines as plain (with time stamps) or systemd (with <N> priority prefixes)")
	fs.IntVar(&o.maxConns, "max-conns", 256, "most authenticated client connections served at once")
	fs.IntVar(&o.maxConnsPerToken, "max-conns-per-token", 32, "most connections of one token at once (a node's plugin uses a few)")
	fs.IntVar(&o.maxHandshakes, "max-handshakes", 64, "most connections logging in (not yet authenticated) at once")
	fs.IntVar(&o.maxHandshakesPerAddr, "max-handshakes-per-addr", 8, "most connections logging in at once from one address")
	fs.IntVar(&o.maxConnsPerAddr, "max-conns-per-addr", 0, "most connections at once from one address (0: no limit; behind Tor or a tunnel every client has the same address)")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", 5*time.Second, "time a new connection has to log in")
	fs.IntVar(&o.maxMemoryMiB, "max-memory", remote.DefaultMaxMemory>>20, "MiB of request frames held at once across all connections (at least 200 for the largest requests to run)")
	fs.StringVar(&o.journalDir, "journal-dir", "", "with an s3:// store: keep the nodes' journals in this local directory instead of the bucket (an acknowledgement costs an fsync, not a PUT; see docs/object-storage.md for what each choice survives)")
	fs.BoolVar(&o.groupCommit, "group-commit", true, "make journal appends of nodes arriving together durable with one fdatasync of a write-ahead log (.journals.wal in the journal directory), each still acknowledged only once durable")
	fs.StringVar(&o.tlsSelfSigned, "tls-self-signed", "", "speak TLS with the key pair kept in this directory (made the first time); clients pin the fingerprint the server logs")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "speak TLS with this PEM certificate (chain); needs --tls-key")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert (mode 0600)")
	fs.StringVar(&o.httpAddr, "http", "", "serve a status page (/) and Prometheus metrics (/metrics) on this HOST:PORT, read-only")
	fs.StringVar(&o.httpAuth, "http-auth", "", "file of tokens (one a line, mode 0600) that may read --http; without it, admin tokens of --auth may (required unless --http is loopback-only)")
	fs.DurationVar(&o.httpStale, "http-stale", monitor.DefaultStale, "--http marks a node stale when it has had no live writer for longer (as status --max-stale)")
}

// runServer checks the flags and the store, opens it (creating it as init
// does) and listens before serving, so that a bad setup fails at once
// instead of at the first client.
func runServer(cmd *cobra.Command, o *serverOpts, url, addr string) error {
	infof, errorf, err := serverLoggers(cmd.ErrOrStderr(), o.logFormat)
	if err != nil {
		return err
	}
	if err := o.check(url); err != nil {
		return err
	}
	var auth *remote.Auth
	if o.authFile != "" {
		if auth, err = remote.LoadAuth(o.authFile); err != nil {
			return err
		}
	}
	tlsCfg, fingerprint, err := serverTLS(o, infof)
	if err != nil {
		return err
	}
	web, err := listenStatusHTTP(o, auth, tlsCfg, errorf)
	if err != nil {
		return err
	}
	if web != nil {
		defer web.l.Close()
	}
	ctx := cmd.Context()
	// Keyless: an encrypted store is served without its key (clients
	// hold it); the server moves and checks ciphertext only.
	st, created, err := store.Create(ctx, url, store.Options{CredentialsFile: o.s3Creds, JournalDir: o.journalDir, Keyless: true, GroupCommit: o.groupCommit})
	if err != nil {
		return err
	}
	defer st.Close()
	if created {
		infof("created store %s", st.Location())
	}
	// SIGHUP is caught before clients can connect: one sent as soon as
	// the port answers must reload the auth file, not kill the server.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	if tlsCfg != nil {
		shown := addr
		if ta, ok := l.Addr().(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
			shown = net.JoinHostPort("HOST", strconv.Itoa(ta.Port)) // any of this machine's names
		}
		infof("TLS: clients connect with socket:%s?tls=%s (the SHA-256 of this server key's SubjectPublicKeyInfo)", shown, fingerprint)
	} else if !loopbackOnly(l.Addr()) {
		errorf("warning: serving without TLS on %s, which is not a loopback address: tokens and node data cross the network in clear; restart with --tls-self-signed DIR (clients add ?tls=FINGERPRINT to the URL), or reach the server through Tor, WireGuard or an SSH tunnel and listen on 127.0.0.1", l.Addr())
	}
	l = remote.NewListener(l, tlsCfg)
	if os.Getenv("GOMEMLIMIT") == "" {
		// backup-cli's own soft limit (32 MiB) would make the collector
		// run without pause under the requests --max-memory allows.
		debug.SetMemoryLimit(serverMemoryLimit(o.maxMemoryMiB))
	}
	srv := remote.NewServer(st, auth, remote.ServerOptions{Infof: infof, Errorf: errorf, MaxConns: o.maxConns,
		MaxConnsPerToken: o.maxConnsPerToken, MaxHandshakes: o.maxHandshakes, MaxHandshakesPerAddr: o.maxHandshakesPerAddr,
		MaxConnsPerAddr: o.maxConnsPerAddr, HandshakeTimeout: o.handshakeTimeout, MaxMemory: int64(o.maxMemoryMiB) << 20})
	if web != nil {
		web.serve(st, srv, o.httpStale, infof, errorf)
		defer web.shutdown(context.Background())
	}
	return serve(ctx, srv, l, hup, addr, o.authFile, func() { web.reload(infof, errorf) }, infof, errorf)
}

// serverTLS loads or makes the server's key pair as its flags ask; it
// returns a nil configuration for a plaintext server.
func serverTLS(o *serverOpts, infof func(string, ...any)) (*tls.Config, string, error) {
	var (
		c   tls.Certificate
		err error
	)
	switch {
	case o.tlsSelfSigned != "" && (o.tlsCert != "" || o.tlsKey != ""):
		return nil, "", errors.New("give --tls-self-signed DIR or --tls-cert FILE --tls-key FILE, not both")
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return nil, "", errors.New("--tls-cert and --tls-key go together: give both (or --tls-self-signed DIR)")
	case o.tlsSelfSigned != "":
		var made bool
		if c, made, err = remote.LoadOrCreateSelfSigned(o.tlsSelfSigned); err != nil {
			return nil, "", fmt.Errorf("--tls-self-signed: %w", err)
		}
		if made {
			infof("made a TLS key pair in %s (%s, %s): back it up with the store; a new key means a new fingerprint for every client", o.tlsSelfSigned, remote.SelfSignedKey, remote.SelfSignedCert)
		}
	case o.tlsCert != "":
		if c, err = remote.LoadKeyPair(o.tlsCert, o.tlsKey); err != nil {
			return nil, "", fmt.Errorf("--tls-cert, --tls-key: %w", err)
		}
	default:
		return nil, "", nil
	}
	fp, err := remote.CertFingerprint(c)
	if err != nil {
		return nil, "", fmt.Errorf("TLS certificate: %w", err)
	}
	return remote.ServerTLSConfig(c), fp, nil
}

// loopbackOnly reports whether a listener's address is reachable only from
// this machine.
func loopbackOnly(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// writeTokenFile writes the token to its new file durably.
func writeTokenFile(f *os.File, tok string) error {
	if _, err := fmt.Fprintln(f, tok); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// newTLSFingerprintCmd prints a server's pin without starting it, for
// setting up clients after the server's first log lines are gone.
func newTLSFingerprintCmd() *cobra.Command {
	o := &serverOpts{}
	cmd := &cobra.Command{
		Use:   "tls-fingerprint (--tls-self-signed DIR | --tls-cert FILE --tls-key FILE)",
		Short: "Print the TLS fingerprint clients pin with ?tls= (making the key pair of --tls-self-signed if needed)",
		Long: `tls-fingerprint prints the SHA-256 of the server key's SubjectPublicKeyInfo, in
hex: the value clients put after tls= in socket:HOST:PORT?tls=FINGERPRINT.
With --tls-self-signed DIR it makes the key pair first when DIR has none, as
the server would.`,
		Example: `  backup-cli server tls-fingerprint --tls-self-signed /etc/clnbackup/tls`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.tlsSelfSigned == "" && o.tlsCert == "" {
				return errors.New("give --tls-self-signed DIR or --tls-cert FILE --tls-key FILE")
			}
			infof := func(f string, args ...any) { fmt.Fprintf(cmd.ErrOrStderr(), f+"\n", args...) }
			_, fp, err := serverTLS(o, infof)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), fp)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.tlsSelfSigned, "tls-self-signed", "", "directory of the server's key pair")
	cmd.Flags().StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate")
	cmd.Flags().StringVar(&o.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	return cmd
}

// check refuses flags out of range and a URL the server cannot serve,
// before anything is opened.
func (o *serverOpts) check(url string) error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"max-conns", int64(o.maxConns)}, {"max-conns-per-token", int64(o.maxConnsPerToken)}, {"max-handshakes", int64(o.maxHandshakes)},
		{"max-handshakes-per-addr", int64(o.maxHandshakesPerAddr)}, {"max-conns-per-addr", int64(o.maxConnsPerAddr)},
		{"handshake-timeout", int64(o.handshakeTimeout)}, {"max-memory", int64(o.maxMemoryMiB)}} {
		if f.v < 0 {
			return fmt.Errorf("server: --%s is negative: give a positive limit (or 0 for its default)", f.name)
		}
	}
	u, err := store.ParseURL(url)
	if err != nil {
		return err
	}
	if u.Scheme != "file" && u.Scheme != "s3" {
		return fmt.Errorf("server serves a local store (file:///path) or a bucket (s3://BUCKET/PREFIX), not %s", url)
	}
	if o.journalDir != "" && u.Scheme != "s3" {
		return fmt.Errorf("server: --journal-dir is for s3:// stores (a file:// store keeps its journals in its directory)")
	}
	return nil
}

// serverMemoryLimit is the server's soft memory limit: the request budget
// (--max-memory MiB, 0 for the default) and room for the rest (the index,
// connection buffers, decompression), so the heap stays near what is live
// without the collector running all the time.
func serverMemoryLimit(maxMemoryMiB int) int64 {
	budget := int64(maxMemoryMiB) << 20
	if budget <= 0 {
		budget = remote.DefaultMaxMemory
	}
	return budget + 128<<20
}

// serve serves on l until ctx ends (SIGTERM, SIGINT), then shuts down
// gracefully; SIGHUP (on hup) reloads the auth file meanwhile, and calls onHUP (the
// status page's tokens). A failure of Serve itself ends it with an error,
// the connections closed at once.
func serve(ctx context.Context, srv *remote.Server, l net.Listener, hup <-chan os.Signal, addr, authFile string, onHUP func(), infof, errorf func(string, ...any)) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
serving:
	for {
		select {
		case err := <-served:
			srv.Shutdown(context.Background())
			return fmt.Errorf("serve on %s: %w", addr, err)
		case <-hup:
			reloadAuth(srv, authFile, infof, errorf)
			onHUP()
		case <-ctx.Done():
			break serving
		}
	}
	infof("shutting down: finishing requests in progress (at most %s)", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-served
	if err != nil {
		errorf("shutdown: %v: connections closed with requests in progress", err)
	}
	infof("stopped")
	return nil
}

// reloadAuth reads the auth file again (SIGHUP), so tokens added with
// add-token work without a restart; a file that fails to load leaves the
// tokens in use unchanged.
func reloadAuth(srv *remote.Server, authFile string, infof, errorf func(string, ...any)) {
	if authFile == "" {
		errorf("SIGHUP: no --auth file to reload (every client is admin): restart with --auth to require tokens")
		return
	}
	auth, err := remote.LoadAuth(authFile)
	if err != nil {
		errorf("SIGHUP: reload %s: %v; keeping the tokens in use", authFile, err)
		return
	}
	if err := srv.SetAuth(auth); err != nil {
		errorf("SIGHUP: %v", err)
		return
	}
	infof("reloaded %s: new connections use its tokens; connections of tokens it no longer has (or that lost nodes) were closed", authFile)
}

// serverLoggers returns the server's info and error loggers, writing to
// stderr (the command's error output: a service manager's journal).
func serverLoggers(stderr io.Writer, format string) (infof, errorf func(string, ...any), err error) {
	switch format {
	case "plain":
		logf := func(level string) func(string, ...any) {
			return func(f string, args ...any) {
				fmt.Fprintf(stderr, "%s %s%s\n", time.Now().UTC().Format(time.RFC3339), level, fmt.Sprintf(f, args...))
			}
		}
		return logf(""), logf("error: "), nil
	case "systemd":
		logf := func(prio int) func(string, ...any) {
			return func(f string, args ...any) {
				msg := strings.ReplaceAll(fmt.Sprintf(f, args...), "\n", " | ")
				fmt.Fprintf(stderr, "<%d>%s\n", prio, msg)
			}
		}
		return logf(6), logf(3), nil
	}
	return nil, nil, fmt.Errorf("--log-format %q: use plain or systemd", format)
}

type addTokenResult struct {
	// Token is left out when it went to a file (--out).
	Token     string   `json:"token,omitempty"`
	TokenFile string   `json:"token_file,omitempty"`
	AuthFile  string   `json:"auth_file"`
	Admin     bool     `json:"admin"`
	Nodes     []string `json:"nodes,omitempty"`
}

// addTokenOpts are add-token's flags.
type addTokenOpts struct {
	authFile, nodes, out string
	admin                bool
}

// newAddTokenCmd declares add-token's flags and help; runAddToken does the
// work.
func newAddTokenCmd(g *globals) *cobra.Command {
	o := &addTokenOpts{}
	cmd := &cobra.Command{
		Use:   "add-token --auth FILE (--node NAME[,NAME...] | --admin) [--out FILE]",
		Short: "Make a new client token and add it to the server's auth file",
		Long: `add-token makes a random token (32 bytes, hex), appends it to the auth file
(created with mode 0600) and prints it, or with --out FILE writes it to FILE,
made with mode 0600 (an existing FILE is refused): give that file to the
client's --token-file (a shell redirection would make it readable by every
user, and the client refuses such a token file). A node token may write and
read only the nodes given; an admin token may do everything (gc, forget,
verify). A running server uses the new token once sent SIGHUP.`,
		Example: `  backup-cli server add-token --auth /etc/clnbackup/auth --node alice --out alice.token
  backup-cli server add-token --auth /etc/clnbackup/auth --admin --out admin.token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAddToken(cmd, g, o)
		},
	}
	cmd.Flags().StringVar(&o.authFile, "auth", "", "auth file to add the token to")
	cmd.Flags().StringVar(&o.nodes, "node", "", "node(s) the token may use, comma-separated")
	cmd.Flags().BoolVar(&o.admin, "admin", false, "make an admin token")
	cmd.Flags().StringVar(&o.out, "out", "", "write the token to this new file (mode 0600) instead of printing it")
	return cmd
}

// runAddToken checks the flags, adds a new token to the auth file (and
// writes it to --out) and says what it did.
func runAddToken(cmd *cobra.Command, g *globals, o *addTokenOpts) error {
	if o.authFile == "" {
		return errors.New("give the auth file with --auth FILE")
	}
	if o.admin == (o.nodes != "") {
		return errors.New("give either --node NAME[,NAME...] or --admin")
	}
	var list []string
	if o.nodes != "" {
		list = strings.Split(o.nodes, ",")
	}
	tok, err := addToken(o, list)
	if err != nil {
		return err
	}
	res := addTokenResult{Token: tok, TokenFile: o.out, AuthFile: o.authFile, Admin: o.admin, Nodes: list}
	if o.out != "" {
		res.Token = ""
	}
	return printAddToken(cmd, g, res, tok)
}

// addToken makes a token, appends it to the auth file and writes it to
// --out, if given.
func addToken(o *addTokenOpts, nodes []string) (string, error) {
	tok, err := remote.NewToken()
	if err != nil {
		return "", err
	}
	var f *os.File
	if o.out != "" {
		// Made before the auth file is touched, so a token is never added
		// that nobody can read back.
		if f, err = os.OpenFile(o.out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return "", fmt.Errorf("--out: %w (add-token does not overwrite a token file: give a new name)", err)
		}
		defer f.Close()
	}
	if err := remote.AddToken(o.authFile, tok, nodes, o.admin); err != nil {
		if f != nil {
			os.Remove(o.out)
		}
		return "", err
	}
	if f != nil {
		if err := writeTokenFile(f, tok); err != nil {
			return "", fmt.Errorf("the token was added to %s, but writing it to %s failed: %w; remove its line from the auth file and run add-token again", o.authFile, o.out, err)
		}
	}
	return tok, nil
}

// printAddToken says which token was added where; the token itself goes
// to stdout only when it went to no file.
func printAddToken(cmd *cobra.Command, g *globals, res addTokenResult, tok string) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	if g.json {
		return printJSON(stdout, res)
	}
	what := "admin token"
	if !res.Admin {
		what = "token for nodes " + strings.Join(res.Nodes, ",")
	}
	if res.TokenFile != "" {
		fmt.Fprintf(stdout, "Added a %s to %s and wrote it to %s (mode 0600; send the running server SIGHUP to use it: kill -HUP PID)\n", what, res.AuthFile, res.TokenFile)
		return nil
	}
	fmt.Fprintf(stderr, "Added a %s to %s (send the running server SIGHUP to use it: kill -HUP PID):\n", what, res.AuthFile)
	fmt.Fprintln(stdout, tok)
	return nil
}
