package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/remote"
	"github.com/spf13/cobra"
)

// shutdownGrace bounds a graceful shutdown: requests in progress get this
// long to finish before connections are closed.
const shutdownGrace = 30 * time.Second

// serverOpts are server's flags.
type serverOpts struct {
	authFile  string
	logFormat string
	maxConns  int
}

// newServerCmd declares server's flags and help; runServer does the work.
func newServerCmd(g *globals) *cobra.Command {
	o := &serverOpts{}
	cmd := &cobra.Command{
		Use:   "server [--auth FILE] [--log-format plain|systemd] [--max-conns N] URL LISTEN_ADDR",
		Short: "Serve a store to backup plugins and backup-cli over TCP (socket: URLs)",
		Long: `server serves the store at URL (file://, created when missing or empty, as
init does) on LISTEN_ADDR (HOST:PORT) to many clients at once: backup plugins
and backup-cli commands given socket:HOST:PORT[?proxy=socks5:PHOST:PPORT].

Clients send only the chunks the server lacks; a journal append is answered
only once it is durable on the server. With --auth FILE each client must
present a token from the file: a line "TOKEN NODE[,NODE...]" lets a client
write and read those nodes only (never delete anything but its lease), a line
"TOKEN *" is an admin token (gc, forget, verify over the wire); # starts a
comment. A node token's line may end in "quota=SIZE" (10GiB, 500MiB, 1TB,
bytes): the server then refuses the uploads that would take the stored bytes
its nodes reference (counted from the store at start and on SIGHUP) plus what
it stored since over SIZE; backup-cli list shows the count. Make tokens with
"backup-cli server add-token". Without --auth every client is admin: use
that only on a trusted network. SIGHUP reloads the auth file and counts the
quotas again.

Node tokens reach only the objects the store layout defines under their
nodes, and what they put is checked by kind (a manifest must decode, be of its
node and name stored chunks): one node's client cannot stop gc or list for
the others.

The protocol is not encrypted: over the internet, reach the server through Tor
(a .onion address and the proxy= parameter), WireGuard or an SSH tunnel.
SIGTERM or SIGINT stops accepting, lets requests in progress finish and be
answered, and closes the journals.`,
		Example: `  backup-cli server --auth /etc/clnbackup/auth file:///srv/backup/store 0.0.0.0:7000
  backup-cli server add-token --auth /etc/clnbackup/auth --node alice
  backup-cli init --token-file alice.token --lightning-dir ~/.lightning/bitcoin --node alice socket:backup.example:7000`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServer(cmd, o, args[0], args[1])
		},
	}
	cmd.Flags().StringVar(&o.authFile, "auth", "", "auth file: lines \"TOKEN NODE[,NODE...] [quota=SIZE]\" or \"TOKEN *\" (admin)")
	cmd.Flags().StringVar(&o.logFormat, "log-format", "plain", "log lines as plain (with time stamps) or systemd (with <N> priority prefixes)")
	cmd.Flags().IntVar(&o.maxConns, "max-conns", 256, "most client connections served at once")
	cmd.AddCommand(newAddTokenCmd(g))
	return cmd
}

// runServer checks the flags and the store, opens it (creating it as init
// does) and listens before serving, so that a bad setup fails at once
// instead of at the first client.
func runServer(cmd *cobra.Command, o *serverOpts, url, addr string) error {
	infof, errorf, err := serverLoggers(cmd.ErrOrStderr(), o.logFormat)
	if err != nil {
		return err
	}
	u, err := store.ParseURL(url)
	if err != nil {
		return err
	}
	if u.Scheme != "file" {
		return fmt.Errorf("server serves a local store (file:///path), not %s", url)
	}
	var auth *remote.Auth
	if o.authFile != "" {
		if auth, err = remote.LoadAuth(o.authFile); err != nil {
			return err
		}
	}
	ctx := cmd.Context()
	st, created, err := store.Create(ctx, url, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	if created {
		infof("created store %s", st.Location())
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := remote.NewServer(st, auth, remote.ServerOptions{Infof: infof, Errorf: errorf, MaxConns: o.maxConns})
	return serve(ctx, srv, l, addr, o.authFile, infof, errorf)
}

// serve serves on l until ctx ends (SIGTERM, SIGINT), then shuts down
// gracefully; SIGHUP reloads the auth file meanwhile. A failure of Serve
// itself ends it with an error, the connections closed at once.
func serve(ctx context.Context, srv *remote.Server, l net.Listener, addr, authFile string, infof, errorf func(string, ...any)) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
serving:
	for {
		select {
		case err := <-served:
			srv.Shutdown(context.Background())
			return fmt.Errorf("serve on %s: %w", addr, err)
		case <-hup:
			reloadAuth(srv, authFile, infof, errorf)
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
	infof("reloaded %s: new connections use its tokens", authFile)
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
	Token    string   `json:"token"`
	AuthFile string   `json:"auth_file"`
	Admin    bool     `json:"admin"`
	Nodes    []string `json:"nodes,omitempty"`
}

func newAddTokenCmd(g *globals) *cobra.Command {
	var (
		authFile string
		nodes    string
		admin    bool
	)
	cmd := &cobra.Command{
		Use:   "add-token --auth FILE (--node NAME[,NAME...] | --admin)",
		Short: "Make a new client token and add it to the server's auth file",
		Long: `add-token makes a random token (32 bytes, hex), appends it to the auth file
(created with mode 0600) and prints it. A node token may write and read only
the nodes given; an admin token may do everything (gc, forget, verify).
A running server reads the auth file when it starts: restart it.`,
		Example: `  backup-cli server add-token --auth /etc/clnbackup/auth --node alice > alice.token
  backup-cli server add-token --auth /etc/clnbackup/auth --admin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if authFile == "" {
				return errors.New("give the auth file with --auth FILE")
			}
			if admin == (nodes != "") {
				return errors.New("give either --node NAME[,NAME...] or --admin")
			}
			var list []string
			if nodes != "" {
				list = strings.Split(nodes, ",")
			}
			tok, err := remote.NewToken()
			if err != nil {
				return err
			}
			if err := remote.AddToken(authFile, tok, list, admin); err != nil {
				return err
			}
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if g.json {
				return printJSON(stdout, addTokenResult{Token: tok, AuthFile: authFile, Admin: admin, Nodes: list})
			}
			what := "admin token"
			if !admin {
				what = "token for nodes " + strings.Join(list, ",")
			}
			fmt.Fprintf(stderr, "Added a %s to %s (send the running server SIGHUP to use it: kill -HUP PID):\n", what, authFile)
			fmt.Fprintln(stdout, tok)
			return nil
		},
	}
	cmd.Flags().StringVar(&authFile, "auth", "", "auth file to add the token to")
	cmd.Flags().StringVar(&nodes, "node", "", "node(s) the token may use, comma-separated")
	cmd.Flags().BoolVar(&admin, "admin", false, "make an admin token")
	return cmd
}
