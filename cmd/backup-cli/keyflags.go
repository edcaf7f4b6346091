package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/clnbackup/backup/internal/secretfile"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/crypt"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// passphraseEnv names a passphrase file when neither --passphrase-file nor
// --key-file is given.
const passphraseEnv = "CLNBACKUP_PASSPHRASE_FILE"

// maxPassphraseFile bounds what a passphrase file may hold: its first line
// is the passphrase, and a large file given by mistake is refused unread.
const maxPassphraseFile = 64 << 10

// keyFlags are the global flags that open an encrypted store, and what
// they resolve to.
type keyFlags struct {
	passphraseFile, keyFile string
	// unlock is built from the flags by resolveUnlock.
	unlock store.Unlock
	// tty is the command's input when it is a terminal (nil otherwise):
	// passphrases are asked there, without echo.
	tty *os.File
	// stderr is where questions are asked.
	stderr io.Writer
}

// addKeyFlags adds --passphrase-file and --key-file, which every command
// that opens a store passes to an encrypted one.
func addKeyFlags(root *cobra.Command, g *globals) {
	root.PersistentFlags().StringVar(&g.keys.passphraseFile, "passphrase-file", "", "file (mode 0600) whose first line is the passphrase of an encrypted store (or $"+passphraseEnv+"; else it is asked on a terminal)")
	root.PersistentFlags().StringVar(&g.keys.keyFile, "key-file", "", "key file (mode 0600) opening an encrypted store: one made by key add --new-key-file, the plugin's, or the master key of key export")
}

// resolveUnlock reads the key flags into g.keys.unlock. An explicit flag
// is read at once (its errors come before any work); $CLNBACKUP_PASSPHRASE_FILE
// and the terminal are asked only when a store turns out to be encrypted,
// so that commands on plain stores never need them.
func (k *keyFlags) resolveUnlock(cmd *cobra.Command) error {
	k.stderr = cmd.ErrOrStderr()
	if f, ok := cmd.InOrStdin().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		k.tty = f
	}
	switch {
	case k.passphraseFile != "" && k.keyFile != "":
		return errors.New("give --passphrase-file or --key-file, not both")
	case k.passphraseFile != "":
		p, err := readPassphraseFile(k.passphraseFile)
		if err != nil {
			return fmt.Errorf("--passphrase-file: %w", err)
		}
		k.unlock.Passphrase = p
	case k.keyFile != "":
		kf, err := readKeyFile(k.keyFile)
		if err != nil {
			return fmt.Errorf("--key-file: %w", err)
		}
		k.unlock.KeyFile = kf
	default:
		k.unlock.Prompt = k.prompt
	}
	return nil
}

// prompt is Unlock.Prompt: the passphrase from $CLNBACKUP_PASSPHRASE_FILE,
// else asked once on the terminal, else a refusal naming what to give.
func (k *keyFlags) prompt(location string) ([]byte, error) {
	if path := os.Getenv(passphraseEnv); path != "" {
		p, err := readPassphraseFile(path)
		if err != nil {
			return nil, fmt.Errorf("$%s: %w", passphraseEnv, err)
		}
		return p, nil
	}
	if k.tty == nil {
		return nil, fmt.Errorf("%w: give --passphrase-file FILE, --key-file FILE or $%s (there is no terminal to ask on)", store.ErrLocked, passphraseEnv)
	}
	return k.ask(fmt.Sprintf("Passphrase of store %s: ", location))
}

// newPassphrase is the passphrase a new key object is made with (init
// --encrypt, key add, key passwd): read from file (or, when file is "",
// $CLNBACKUP_PASSPHRASE_FILE if env), else asked twice on the terminal,
// else refused naming flag.
func (k *keyFlags) newPassphrase(file string, env bool, flag, what string) ([]byte, error) {
	if file == "" && env {
		file = os.Getenv(passphraseEnv)
	}
	if file != "" {
		p, err := readPassphraseFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
		return p, nil
	}
	if k.tty == nil {
		return nil, fmt.Errorf("%s needs a new passphrase: give %s FILE (its first line), or run on a terminal to type it", what, flag)
	}
	p, err := k.ask(fmt.Sprintf("New passphrase for %s: ", what))
	if err != nil {
		return nil, err
	}
	again, err := k.ask("Type it again: ")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(p, again) {
		return nil, errors.New("the two passphrases differ: nothing was changed; run the command again")
	}
	return p, nil
}

// ask reads one line from the terminal without echo.
func (k *keyFlags) ask(question string) ([]byte, error) {
	fmt.Fprint(k.stderr, question)
	p, err := term.ReadPassword(int(k.tty.Fd()))
	fmt.Fprintln(k.stderr)
	if err != nil {
		return nil, fmt.Errorf("read the passphrase from the terminal: %w", err)
	}
	if len(p) == 0 {
		return nil, errors.New("the passphrase is empty: nothing was changed")
	}
	return p, nil
}

// openSecret opens a file that holds a secret, refusing it when other
// users may read it (the check and the read are of the same file), and
// reads at most limit bytes (more is refused).
func openSecret(path, what string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := secretfile.CheckMode(path, what, fi.Mode()); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: it is not %s", path, limit, what)
	}
	return data, nil
}

// readPassphraseFile reads a passphrase file: its first line, without the
// line end, must not be empty.
func readPassphraseFile(path string) ([]byte, error) {
	data, err := openSecret(path, "a passphrase", maxPassphraseFile)
	if err != nil {
		return nil, err
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		return nil, fmt.Errorf("%s: its first line, the passphrase, is empty", path)
	}
	return line, nil
}

// readKeyFile reads and parses a key file (crypt.ParseKeyFile).
func readKeyFile(path string) (*crypt.KeyFile, error) {
	data, err := openSecret(path, "a key of an encrypted store", 4096)
	if err != nil {
		return nil, err
	}
	kf, err := crypt.ParseKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &kf, nil
}
