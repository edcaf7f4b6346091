package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/crypt"
	"github.com/spf13/cobra"
)

// newKeyCmd declares key and its subcommands: the keys that open an
// encrypted store (issue 13).
func newKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Manage the passphrases and key files that open an encrypted store",
		Long: `An encrypted store keeps its random master key only wrapped: once per
passphrase or key file that may open it (a key object, keys/ID in the store).
key add, list, remove and passwd manage those; key export prints the master
key itself, which opens the store even when every key object is lost.

Each subcommand opens the store first, with --passphrase-file, --key-file,
$CLNBACKUP_PASSPHRASE_FILE or a passphrase asked on the terminal.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newKeyAddCmd(g), newKeyListCmd(g), newKeyRemoveCmd(g), newKeyPasswdCmd(g), newKeyExportCmd(g))
	return cmd
}

// openKeyring opens the store at url and returns it with its keyring,
// refusing a store that is not encrypted.
func (g *globals) openKeyring(ctx context.Context, url string) (*store.Store, *store.Keyring, error) {
	st, err := store.Open(ctx, url, g.storeOptions())
	if err != nil {
		return nil, nil, err
	}
	kr := st.Keyring()
	if kr == nil {
		st.Close()
		return nil, nil, fmt.Errorf("store %s is not encrypted: it has no keys (an encrypted store is made with init --encrypt; copy --dst-encrypt copies nodes into one)", url)
	}
	return st, kr, nil
}

// newKeyAddCmd declares key add.
func newKeyAddCmd(g *globals) *cobra.Command {
	var label, newPass, newKey string
	cmd := &cobra.Command{
		Use:   "add [--label L] [--new-passphrase-file F | --new-key-file F] URL",
		Short: "Add a passphrase or a new key file that opens the store",
		Long: `key add adds a key object to the store: a new passphrase (from
--new-passphrase-file, its first line, or asked twice on the terminal), or,
with --new-key-file F, a new random key file written to F (mode 0600; an
existing file is never replaced), e.g. for a plugin on another machine.
Removing the key object (key remove) revokes the passphrase or key file.`,
		Example: `  backup-cli key add --label "alice's laptop" file:///mnt/backup/store
  backup-cli key add --new-key-file /root/store.key --label "restore host" file:///mnt/backup/store`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if newPass != "" && newKey != "" {
				return fmt.Errorf("give --new-passphrase-file or --new-key-file, not both")
			}
			ctx := cmd.Context()
			st, kr, err := g.openKeyring(ctx, args[0])
			if err != nil {
				return err
			}
			defer st.Close()
			var o *crypt.KeyObject
			if newKey != "" {
				path, err := filepath.Abs(newKey)
				if err != nil {
					return err
				}
				if label == "" {
					label = keyLabel("key file " + path)
				}
				if o, err = addKeyFile(ctx, kr, path, label); err != nil {
					return fmt.Errorf("key add: %w", err)
				}
				return g.printKeyAdded(cmd, st, keyInfoOf(o, ""), path)
			}
			pass, err := g.keys.newPassphrase(newPass, false, "--new-passphrase-file", "store "+args[0])
			if err != nil {
				return err
			}
			if label == "" {
				label = keyLabel("passphrase")
			}
			if o, err = crypt.WrapWithPassphrase(kr.Master(), label, pass, crypt.DefaultKDFParams); err != nil {
				return err
			}
			if err := kr.Add(ctx, o); err != nil {
				return fmt.Errorf("key add: %w", err)
			}
			return g.printKeyAdded(cmd, st, keyInfoOf(o, ""), "")
		},
	}
	cmd.Flags().StringVar(&label, "label", "", "who or what the key is for, shown by key list (default: its kind and this host's name)")
	cmd.Flags().StringVar(&newPass, "new-passphrase-file", "", "file (mode 0600) whose first line is the new passphrase (default: asked twice on the terminal)")
	cmd.Flags().StringVar(&newKey, "new-key-file", "", "write a new random key file here (mode 0600) instead of adding a passphrase")
	return cmd
}

// printKeyAdded reports the key object just added and, for a key file,
// where it was written.
func (g *globals) printKeyAdded(cmd *cobra.Command, st *store.Store, info keyInfo, keyPath string) error {
	if g.json {
		return printJSON(cmd.OutOrStdout(), struct {
			Added   keyInfo `json:"added"`
			KeyFile string  `json:"key_file,omitempty"`
		}{info, keyPath})
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Added key %s (%s %q) to store %s\n", info.ID, info.Kind, info.Label, st.Location())
	if keyPath != "" {
		fmt.Fprintf(cmd.OutOrStdout(), "Wrote the key file %s (mode 0600): it opens the store until key remove %s\n", keyPath, info.ID)
	}
	return nil
}

// keyInfo is one key object as key list shows it.
type keyInfo struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	Label    string    `json:"label"`
	Created  time.Time `json:"created"`
	OpenedBy bool      `json:"opened_store"`
}

func keyInfoOf(o *crypt.KeyObject, openedBy string) keyInfo {
	return keyInfo{ID: o.ID, Kind: o.Kind, Label: o.Label, Created: o.Created.UTC(), OpenedBy: o.ID == openedBy}
}

// newKeyListCmd declares key list.
func newKeyListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list [--json] URL",
		Short: "List the key objects that open the store",
		Long: `key list shows every key object of the store: its id, kind (passphrase or
keyfile), label and creation time, and marks the one that opened the store
now (none when a master key file of key export did).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, kr, err := g.openKeyring(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer st.Close()
			keys, err := kr.List(cmd.Context())
			if err != nil {
				return err
			}
			infos := []keyInfo{}
			for _, o := range keys {
				infos = append(infos, keyInfoOf(o, kr.OpenedBy()))
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), struct {
					Store    string    `json:"store"`
					Keys     []keyInfo `json:"keys"`
					OpenedBy string    `json:"opened_by"`
				}{st.Location(), infos, openedByName(kr.OpenedBy())})
			}
			printKeys(cmd.OutOrStdout(), st.Location(), infos, kr.OpenedBy())
			return nil
		},
	}
}

// openedByName says what opened the store: a key object's id, or the
// master key.
func openedByName(id string) string {
	if id == "" {
		return "master key file"
	}
	return id
}

func printKeys(w io.Writer, location string, infos []keyInfo, openedBy string) {
	fmt.Fprintf(w, "Keys of store %s (opened with %s)\n", location, openedByName(openedBy))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, " \tID\tKIND\tCREATED (UTC)\tLABEL")
	for _, k := range infos {
		mark := " "
		if k.OpenedBy {
			mark = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mark, k.ID, k.Kind, k.Created.Format("2006-01-02 15:04:05"), k.Label)
	}
	tw.Flush()
}

// findKey returns key object id of keys, or an error listing the ids.
func findKey(keys []*crypt.KeyObject, id string) (*crypt.KeyObject, error) {
	var ids []string
	for _, o := range keys {
		if o.ID == id {
			return o, nil
		}
		ids = append(ids, o.ID)
	}
	return nil, fmt.Errorf("the store has no key %q (its keys: %s; see key list)", id, strings.Join(ids, ", "))
}

// newKeyRemoveCmd declares key remove.
func newKeyRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove URL ID",
		Short: "Remove a key object (never the last)",
		Long: `key remove deletes key object ID (see key list): its passphrase or key file
no longer opens the store. The last key object is never removed: add
another first (key add), or keep the master key of key export.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, kr, err := g.openKeyring(ctx, args[0])
			if err != nil {
				return err
			}
			defer st.Close()
			keys, err := kr.List(ctx)
			if err != nil {
				return err
			}
			o, err := findKey(keys, args[1])
			if err != nil {
				return err
			}
			if len(keys) == 1 {
				return fmt.Errorf("key %s is the last key of store %s: refusing to remove it (nothing but an exported master key would open the store); add another with key add first", o.ID, st.Location())
			}
			if err := kr.Remove(ctx, o.ID); err != nil {
				return fmt.Errorf("remove key %s: %w", o.ID, err)
			}
			info := keyInfoOf(o, kr.OpenedBy())
			if g.json {
				return printJSON(cmd.OutOrStdout(), struct {
					Removed keyInfo `json:"removed"`
				}{info})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed key %s (%s %q) from store %s: %d keys remain\n", o.ID, o.Kind, o.Label, st.Location(), len(keys)-1)
			return nil
		},
	}
}

// newKeyPasswdCmd declares key passwd.
func newKeyPasswdCmd(g *globals) *cobra.Command {
	var newPass string
	cmd := &cobra.Command{
		Use:   "passwd [--new-passphrase-file F] URL [ID]",
		Short: "Change a passphrase of the store",
		Long: `key passwd replaces passphrase key ID (by default the one that opened the
store) with a new passphrase, from --new-passphrase-file or asked twice on
the terminal: it adds a key object for the new passphrase, with the same
label, then removes the old one. The master key does not change.`,
		Example: `  backup-cli key passwd file:///mnt/backup/store
  backup-cli key passwd --passphrase-file old.pass --new-passphrase-file new.pass file:///mnt/backup/store`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, kr, err := g.openKeyring(ctx, args[0])
			if err != nil {
				return err
			}
			defer st.Close()
			old, err := passwdTarget(ctx, kr, args[1:])
			if err != nil {
				return err
			}
			pass, err := g.keys.newPassphrase(newPass, false, "--new-passphrase-file", "key "+old.ID+" of store "+args[0])
			if err != nil {
				return err
			}
			o, err := crypt.WrapWithPassphrase(kr.Master(), old.Label, pass, crypt.DefaultKDFParams)
			if err != nil {
				return err
			}
			if err := kr.Add(ctx, o); err != nil {
				return fmt.Errorf("key passwd: adding the new passphrase failed (the old one still opens the store): %w", err)
			}
			if err := kr.Remove(ctx, old.ID); err != nil {
				return fmt.Errorf("key passwd: the new passphrase was added as key %s, but removing the old key %s failed: %w; both open the store: remove the old one with `backup-cli key remove %s %s`", o.ID, old.ID, err, args[0], old.ID)
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), struct {
					Removed keyInfo `json:"removed"`
					Added   keyInfo `json:"added"`
				}{keyInfoOf(old, ""), keyInfoOf(o, "")})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Changed the passphrase of key %q of store %s: key %s replaces key %s\n", old.Label, st.Location(), o.ID, old.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&newPass, "new-passphrase-file", "", "file (mode 0600) whose first line is the new passphrase (default: asked twice on the terminal)")
	return cmd
}

// passwdTarget is the passphrase key object key passwd replaces: the one
// named, else the one that opened the store.
func passwdTarget(ctx context.Context, kr *store.Keyring, args []string) (*crypt.KeyObject, error) {
	id := kr.OpenedBy()
	if len(args) > 0 {
		id = args[0]
	}
	if id == "" {
		return nil, fmt.Errorf("the store was opened with a master key file, not a key object: name the key to change (key passwd URL ID; see key list)")
	}
	keys, err := kr.List(ctx)
	if err != nil {
		return nil, err
	}
	o, err := findKey(keys, id)
	if err != nil {
		return nil, err
	}
	if o.Kind != crypt.KindPassphrase {
		return nil, fmt.Errorf("key %s is a %s key, not a passphrase: replace a key file with key add --new-key-file, then key remove %s", o.ID, o.Kind, o.ID)
	}
	return o, nil
}

// keyExportWarning is printed on stderr by key export.
const keyExportWarning = `This is the store's master key: it opens the store by itself, even with every
key object removed, and cannot be revoked. Keep it OFF the node (a password
manager, paper in a safe); restore --key-file FILE accepts it.
`

// newKeyExportCmd declares key export.
func newKeyExportCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "export [--output FILE] URL",
		Short: "Print the store's master key, which restore --key-file accepts",
		Long: `key export prints the store's master key as one line of a key file
(clnbackup-key-v1:master:...), or writes it to a new file with --output
(mode 0600, never over an existing file). Any command takes that file as
--key-file, and it opens the store even when every key object is lost: keep
it off the node, where a restore on a new machine can reach it.`,
		Example: `  backup-cli key export file:///mnt/backup/store
  backup-cli key export --output /media/usb/store.master.key file:///mnt/backup/store`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, kr, err := g.openKeyring(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			defer st.Close()
			line := kr.Master().KeyFile().Format()
			stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if output != "" {
				if err := writeSecretFile(output, []byte(line), 0o600); err != nil {
					return fmt.Errorf("key export: %w", err)
				}
			}
			fmt.Fprint(stderr, keyExportWarning)
			switch {
			case g.json:
				out := struct {
					Store       string `json:"store"`
					Fingerprint string `json:"fingerprint"`
					KeyFile     string `json:"key_file,omitempty"`
					Output      string `json:"output,omitempty"`
				}{Store: st.Location(), Fingerprint: kr.Master().Fingerprint(), Output: output}
				if output == "" {
					out.KeyFile = strings.TrimSuffix(line, "\n")
				}
				return printJSON(stdout, out)
			case output != "":
				fmt.Fprintf(stdout, "Wrote the master key of store %s to %s (mode 0600)\n", st.Location(), output)
			default:
				fmt.Fprint(stdout, line)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the key to this new file (mode 0600) instead of printing it")
	return cmd
}
