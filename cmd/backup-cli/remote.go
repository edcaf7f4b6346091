package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/clnbackup/backup/internal/secretfile"
	"github.com/clnbackup/backup/store"
	_ "github.com/clnbackup/backup/store/remote" // socket: URLs
	_ "github.com/clnbackup/backup/store/s3"     // s3:// URLs
	"github.com/spf13/cobra"
)

// tokenEnv is the environment variable holding the token for socket: URLs
// when neither --token nor --token-file is given.
const tokenEnv = "CLNBACKUP_TOKEN"

// addTokenFlags adds --token and --token-file, which every command passes
// to a store server (socket: URLs).
func addTokenFlags(root *cobra.Command, g *globals) {
	root.PersistentFlags().StringVar(&g.token, "token", "", "token for a store server (socket: URLs); visible to other users in ps: prefer --token-file or $"+tokenEnv)
	root.PersistentFlags().StringVar(&g.tokenFile, "token-file", "", "file (mode 0600) holding the token for a store server (socket: URLs)")
	root.PersistentFlags().StringVar(&g.s3Creds, "s3-credentials", "", "credentials file (AWS format, mode 0600) for s3:// URLs instead of AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials; init names it in backup.lock for the plugin")
}

// tokenFlagWarning is printed when --token is used: the command line of
// a process is world-readable (ps, /proc/PID/cmdline).
const tokenFlagWarning = "warning: --token is visible to every user of this machine (ps, /proc/PID/cmdline): use --token-file FILE (mode 0600, e.g. from add-token --out) or $" + tokenEnv + " instead"

// resolveToken settles the token: --token (with a warning on stderr),
// else --token-file (refused when other users may read it), else the
// environment.
func (g *globals) resolveToken(stderr io.Writer) error {
	switch {
	case g.token != "" && g.tokenFile != "":
		return fmt.Errorf("give --token or --token-file, not both")
	case g.token != "":
		fmt.Fprintln(stderr, tokenFlagWarning)
	case g.tokenFile != "":
		f, err := os.Open(g.tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		if err := secretfile.CheckMode(g.tokenFile, "a store server token", fi.Mode()); err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(f, 64<<10))
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		g.token = strings.TrimSpace(string(data))
		if g.token == "" {
			return fmt.Errorf("--token-file %s is empty", g.tokenFile)
		}
	default:
		g.token = os.Getenv(tokenEnv)
	}
	return nil
}

// storeOptions are the options every command opens its store with.
func (g *globals) storeOptions() store.Options {
	return store.Options{Token: g.token, CredentialsFile: g.s3Creds, Unlock: g.keys.unlock}
}
