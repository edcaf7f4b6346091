package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/clnbackup/backup/store"
	_ "github.com/clnbackup/backup/store/remote" // socket: URLs
	"github.com/spf13/cobra"
)

// tokenEnv is the environment variable holding the token for socket: URLs
// when neither --token nor --token-file is given.
const tokenEnv = "CLNBACKUP_TOKEN"

// addTokenFlags adds --token and --token-file, which every command passes
// to a store server (socket: URLs).
func addTokenFlags(root *cobra.Command, g *globals) {
	root.PersistentFlags().StringVar(&g.token, "token", "", "token for a store server (socket: URLs); also --token-file or $"+tokenEnv)
	root.PersistentFlags().StringVar(&g.tokenFile, "token-file", "", "file holding the token for a store server (socket: URLs)")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		return g.resolveToken()
	}
}

// resolveToken settles the token: --token, else --token-file, else the
// environment.
func (g *globals) resolveToken() error {
	switch {
	case g.token != "" && g.tokenFile != "":
		return fmt.Errorf("give --token or --token-file, not both")
	case g.token != "":
	case g.tokenFile != "":
		data, err := os.ReadFile(g.tokenFile)
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
	return store.Options{Token: g.token}
}
