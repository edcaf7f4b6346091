package main

import (
	"fmt"

	"github.com/clnbackup/backup/internal/version"
	"github.com/spf13/cobra"
)

// newVersionCmd is `backup-cli version`: the build's identity, as
// --version prints it or, with --json, as fields a script can compare (an
// operator checks that the CLI and the plugin are the same build).
func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print which build of backup-cli this is",
		Long: `version prints the module version of this build and the VCS revision,
commit time and modified flag it was built from (a "(devel)" build is told
apart by its revision). backup-cli --version prints the same line;
backup-plugin --version prints the plugin's, and the plugin logs it at start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			if g.json {
				return printJSON(cmd.OutOrStdout(), info)
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "backup-cli %s\n", info)
			return err
		},
	}
}
