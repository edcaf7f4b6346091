package main

// Encrypted stores from the operator's side (issue 13): init --encrypt,
// the key flags of every command, the key commands, node secrets and copy
// between stores of different keys. Every passphrase open costs the KDF
// (about 0.5 s): the tests open with key files where the passphrase is not
// what they check.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// writeSecret writes a file of mode 0600 holding content and returns its
// path.
func writeSecret(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustNotExist fails the test if path exists: a refused command wrote it.
func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); err == nil {
		t.Fatalf("%s exists after a refused command", path)
	}
}

// lightningDir makes a lightning directory holding trace1's final
// database.
func lightningDir(t *testing.T, tmp string) string {
	t.Helper()
	ldir := filepath.Join(tmp, "lightning")
	if err := os.Mkdir(ldir, 0o700); err != nil {
		t.Fatal(err)
	}
	copyFile(t, testdata+"trace1-final.sqlite3", filepath.Join(ldir, "lightningd.sqlite3"))
	return ldir
}

// TestEncryptedInit: init --encrypt with a passphrase file creates an
// encrypted store, the plugin's key file (named by backup.lock, mode 0600)
// and says once to keep the key off the node; restore opens it with the
// passphrase, the key file or $CLNBACKUP_PASSPHRASE_FILE, and restores the
// database; a wrong passphrase, no key, a key file others may read, an
// empty passphrase file are refused clearly with nothing written; a plain
// store and a store server cannot be encrypted by init.
func TestEncryptedInit(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	ldir := lightningDir(t, tmp)
	storeDir := filepath.Join(tmp, "store")
	url := "file://" + storeDir
	pass := writeSecret(t, tmp, "pass", "correct horse battery staple\n")

	mustFail(t, "--passphrase-file", "init", "--encrypt", url)
	mustNotExist(t, storeDir)

	out, errOut, ok := run(t, "init", "--encrypt", "--passphrase-file", pass, "--lightning-dir", ldir, url)
	if !ok {
		t.Fatalf("init --encrypt: %s%s", out, errOut)
	}
	for _, want := range []string{"Created encrypted store", "data_version 385", "Wrote the plugin's key file"} {
		if !strings.Contains(out, want) {
			t.Errorf("init output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(errOut, "IMPORTANT") != 1 || !strings.Contains(errOut, "key export "+url) || !strings.Contains(errOut, "OFF this node") {
		t.Errorf("init does not say once to keep the key off the node:\n%s", errOut)
	}
	keyFile := filepath.Join(ldir, "backup.key")
	var lock map[string]string
	raw, _ := os.ReadFile(filepath.Join(ldir, "backup.lock"))
	if err := json.Unmarshal(raw, &lock); err != nil || lock["key_file"] != keyFile {
		t.Fatalf("backup.lock = %s (%v), want key_file %s", raw, err, keyFile)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}

	for i, flags := range [][]string{{"--passphrase-file", pass}, {"--key-file", keyFile}} {
		dest := filepath.Join(tmp, "r"+string(rune('0'+i))+".sqlite3")
		mustRun(t, append(append([]string{"restore"}, flags...), url, dest)...)
		sameDB(t, dest, testdata+"trace1-final.sqlite3")
	}
	dest := filepath.Join(tmp, "env.sqlite3")
	if _, errOut, st := runBinary(t, []string{passphraseEnv + "=" + pass}, "restore", url, dest); st != 0 {
		t.Fatalf("restore with $%s: exit %d: %s", passphraseEnv, st, errOut)
	}
	sameDB(t, dest, testdata+"trace1-final.sqlite3")

	wrong := writeSecret(t, tmp, "wrong", "Tr0ub4dor&3\n")
	openKey := filepath.Join(tmp, "open.key")
	copyFile(t, keyFile, openKey)
	os.Chmod(openKey, 0o644)
	empty := writeSecret(t, tmp, "empty", "\nsecond line\n")
	dest = filepath.Join(tmp, "refused.sqlite3")
	for _, tc := range []struct {
		want  string
		flags []string
	}{
		{"wrong passphrase", []string{"--passphrase-file", wrong}},
		{"--passphrase-file", nil},
		{"chmod 600 " + openKey, []string{"--key-file", openKey}},
		{"the passphrase, is empty", []string{"--passphrase-file", empty}},
		{"not both", []string{"--passphrase-file", pass, "--key-file", keyFile}},
	} {
		mustFail(t, tc.want, append(append([]string{"restore"}, tc.flags...), url, dest)...)
		mustNotExist(t, dest)
	}

	if out := mustRun(t, "list", "--key-file", keyFile, url); !strings.Contains(out, "(encrypted)") {
		t.Errorf("list does not say the store is encrypted:\n%s", out)
	}
	// init --encrypt on an existing encrypted store adds a node to it.
	if out := mustRun(t, "init", "--encrypt", "--passphrase-file", pass, "--node", "bob", url); !strings.Contains(out, "Using existing encrypted store") {
		t.Errorf("init --encrypt on an encrypted store: %s", out)
	}
	mustRun(t, "compact", "--key-file", keyFile, "--node", "default", url)
	mustFail(t, "--store-only adds no node", "init", "--store-only", "--node", "carol", url)
	if out := mustRun(t, "init", "--store-only", "--key-file", keyFile, url); !strings.Contains(out, "Using existing encrypted store") {
		t.Errorf("init --store-only on the store: %s", out)
	}

	plain := "file://" + filepath.Join(tmp, "plain")
	mustRun(t, "init", plain)
	mustFail(t, "cannot be encrypted in place", "init", "--encrypt", "--passphrase-file", pass, plain)
	mustFail(t, "a store server creates and holds its own store", "init", "--encrypt", "--passphrase-file", pass, "socket:127.0.0.1:1")
}

// keyList is key list --json.
type keyList struct {
	Keys     []keyInfo `json:"keys"`
	OpenedBy string    `json:"opened_by"`
}

func listKeys(t *testing.T, url string, flags ...string) keyList {
	t.Helper()
	var l keyList
	out := mustRun(t, append(append([]string{"key", "list", "--json"}, flags...), url)...)
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("key list --json: %v\n%s", err, out)
	}
	return l
}

// TestKeyCommands: key add (a passphrase, a key file), list, passwd and
// remove round trip, each key opening the store exactly while it is
// listed; the last key is never removed; key export prints the master key,
// writes it once with mode 0600, and restore --key-file with it works with
// every key object deleted from the store.
func TestKeyCommands(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	ldir := lightningDir(t, tmp)
	storeDir := filepath.Join(tmp, "store")
	url := "file://" + storeDir
	p1 := writeSecret(t, tmp, "p1", "first passphrase\n")
	p2 := writeSecret(t, tmp, "p2", "second passphrase\r\n")
	p3 := writeSecret(t, tmp, "p3", "third passphrase")
	mustRun(t, "init", "--encrypt", "--passphrase-file", p1, "--lightning-dir", ldir, url)
	plugin := filepath.Join(ldir, "backup.key")

	l := listKeys(t, url, "--key-file", plugin)
	if len(l.Keys) != 2 || l.OpenedBy == "" || l.OpenedBy == "master key file" {
		t.Fatalf("after init: %+v, want a passphrase and the plugin's key file, opened by the latter", l)
	}
	mustRun(t, "key", "add", "--key-file", plugin, "--label", "second", "--new-passphrase-file", p2, url)
	extra := filepath.Join(tmp, "extra.key")
	mustRun(t, "key", "add", "--key-file", plugin, "--new-key-file", extra, url)
	if fi, err := os.Stat(extra); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key add --new-key-file: %v %v", fi, err)
	}
	mustFail(t, "exists", "key", "add", "--key-file", plugin, "--new-key-file", extra, url)
	l = listKeys(t, url, "--key-file", extra)
	if len(l.Keys) != 4 || !slices.ContainsFunc(l.Keys, func(k keyInfo) bool { return k.Label == "second" && k.Kind == "passphrase" }) {
		t.Fatalf("after key add: %+v", l)
	}
	extraID := l.OpenedBy
	out := mustRun(t, "key", "list", "--passphrase-file", p2, url)
	if !strings.Contains(out, "second") || !strings.Contains(out, "* ") {
		t.Errorf("key list:\n%s", out)
	}

	// passwd replaces the passphrase that opened the store.
	mustRun(t, "key", "passwd", "--passphrase-file", p1, "--new-passphrase-file", p3, url)
	mustFail(t, "wrong passphrase", "key", "list", "--passphrase-file", p1, url)
	if l = listKeys(t, url, "--passphrase-file", p3); len(l.Keys) != 4 {
		t.Fatalf("after passwd: %+v", l)
	}
	mustFail(t, "is a keyfile key", "key", "passwd", "--key-file", extra, "--new-passphrase-file", p1, url)

	// remove revokes a key; the last is kept.
	mustRun(t, "key", "remove", "--key-file", plugin, url, extraID)
	mustFail(t, "wrong passphrase or key file", "key", "list", "--key-file", extra, url)
	mustFail(t, "has no key", "key", "remove", "--key-file", plugin, url, "0123456789abcdef")
	for _, k := range listKeys(t, url, "--key-file", plugin).Keys {
		if !k.OpenedBy {
			mustRun(t, "key", "remove", "--key-file", plugin, url, k.ID)
		}
	}
	l = listKeys(t, url, "--key-file", plugin)
	if len(l.Keys) != 1 {
		t.Fatalf("after removing all but one: %+v", l)
	}
	mustFail(t, "last key", "key", "remove", "--key-file", plugin, url, l.Keys[0].ID)

	// export: printed, and to a new file of mode 0600, never over one.
	printed := mustRun(t, "key", "export", "--key-file", plugin, url)
	if !strings.HasPrefix(printed, "clnbackup-key-v1:master:") {
		t.Fatalf("key export printed %q", printed)
	}
	master := filepath.Join(tmp, "master.key")
	mustRun(t, "key", "export", "--key-file", plugin, "--output", master, url)
	if data, err := os.ReadFile(master); err != nil || string(data) != printed {
		t.Fatalf("key export --output wrote %q (%v), printed %q", data, err, printed)
	}
	if fi, _ := os.Stat(master); fi.Mode().Perm() != 0o600 {
		t.Errorf("exported key mode %v", fi.Mode())
	}
	mustFail(t, "refusing to overwrite", "key", "export", "--key-file", plugin, "--output", master, url)

	// Every key object lost: the master key still restores.
	objs, _ := filepath.Glob(filepath.Join(storeDir, "keys", "*"))
	if len(objs) == 0 {
		t.Fatalf("no key objects under %s/keys", storeDir)
	}
	for _, o := range objs {
		if err := os.Remove(o); err != nil {
			t.Fatal(err)
		}
	}
	mustFail(t, "", "restore", "--key-file", plugin, url, filepath.Join(tmp, "x.sqlite3"))
	dest := filepath.Join(tmp, "restored.sqlite3")
	mustRun(t, "restore", "--key-file", master, url, dest)
	sameDB(t, dest, testdata+"trace1-final.sqlite3")
	plain := "file://" + filepath.Join(tmp, "plain")
	mustRun(t, "init", plain)
	mustFail(t, "is not encrypted: it has no keys", "key", "list", plain)
}

// TestNodeSecrets: init --include-hsm-secret stores hsm_secret and
// emergency.recover in an encrypted store, list names them, restore
// --with-secrets writes them back (mode 0400) and refuses to overwrite an
// existing one before restoring anything; plain stores refuse both flags.
func TestNodeSecrets(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	ldir := lightningDir(t, tmp)
	hsm := []byte("\x01\x02 32 bytes of a node's secret!!")
	recov := []byte("emergency.recover of the node")
	os.WriteFile(filepath.Join(ldir, "hsm_secret"), hsm, 0o400)
	os.WriteFile(filepath.Join(ldir, "emergency.recover"), recov, 0o400)
	pass := writeSecret(t, tmp, "pass", "correct horse battery staple\n")

	// Plain stores: refused, and no store is created for it.
	missing := filepath.Join(tmp, "missing")
	mustFail(t, "add --encrypt", "init", "--include-hsm-secret", "--lightning-dir", ldir, "file://"+missing)
	mustNotExist(t, missing)
	plain := "file://" + filepath.Join(tmp, "plain")
	mustRun(t, "init", "--node", "other", plain)
	mustFail(t, "is not encrypted", "init", "--include-hsm-secret", "--lightning-dir", ldir, plain)
	mustNotExist(t, filepath.Join(ldir, "backup.lock"))
	mustFail(t, "not encrypted", "restore", "--with-secrets", plain, filepath.Join(tmp, "p.sqlite3"))
	mustNotExist(t, filepath.Join(tmp, "p.sqlite3"))

	url := "file://" + filepath.Join(tmp, "store")
	out := mustRun(t, "init", "--encrypt", "--include-hsm-secret", "--passphrase-file", pass, "--lightning-dir", ldir, url)
	if !strings.Contains(out, "hsm_secret and emergency.recover") {
		t.Errorf("init --include-hsm-secret: %s", out)
	}
	key := filepath.Join(ldir, "backup.key")
	mustRun(t, "init", "--key-file", key, "--node", "bare", url)
	if out := mustRun(t, "list", "--key-file", key, url); !strings.Contains(out, "carries secrets: emergency.recover, hsm_secret") {
		t.Errorf("list does not name the secrets:\n%s", out)
	}
	var l listResult
	if err := json.Unmarshal([]byte(mustRun(t, "list", "--json", "--key-file", key, url)), &l); err != nil || !l.Encrypted ||
		!slices.Equal(l.NodeSecrets["default"], []string{"emergency.recover", "hsm_secret"}) || len(l.NodeSecrets["bare"]) != 0 {
		t.Fatalf("list --json: %+v %v", l, err)
	}

	rdir := filepath.Join(tmp, "new-machine")
	os.Mkdir(rdir, 0o700)
	mustRun(t, "restore", "--passphrase-file", pass, "--with-secrets", "--node", "default", url, rdir)
	sameDB(t, filepath.Join(rdir, "lightningd.sqlite3"), testdata+"trace1-final.sqlite3")
	for name, want := range map[string][]byte{"hsm_secret": hsm, "emergency.recover": recov} {
		p := filepath.Join(rdir, name)
		got, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if err != nil || string(got) != string(want) || fi.Mode().Perm() != 0o400 {
			t.Errorf("%s: %q %v %v, want %q mode 0400", name, got, fi.Mode(), err, want)
		}
	}
	// A directory with an hsm_secret: refused before the database is written.
	other := filepath.Join(tmp, "other-node")
	os.Mkdir(other, 0o700)
	os.WriteFile(filepath.Join(other, "hsm_secret"), []byte("another node"), 0o400)
	mustFail(t, "refusing to overwrite", "restore", "--key-file", key, "--with-secrets", "--node", "default", url, filepath.Join(other, "lightningd.sqlite3"))
	mustNotExist(t, filepath.Join(other, "lightningd.sqlite3"))
	mustFail(t, "carries no secrets", "restore", "--key-file", key, "--with-secrets", "--node", "bare", url, filepath.Join(tmp, "bare.sqlite3"))
	mustNotExist(t, filepath.Join(tmp, "bare.sqlite3"))
}

// TestCopyEncryption: copy moves a node from a plain store into a new
// encrypted one (--dst-encrypt), between encrypted stores of different
// keys, and back into a plain store (with a warning); each restores to the
// same database. --dst-encrypt into an existing plain store is refused.
func TestCopyEncryption(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	ldir := lightningDir(t, tmp)
	pa := writeSecret(t, tmp, "pa", "passphrase of a\n")
	pb := writeSecret(t, tmp, "pb", "passphrase of b\n")
	plain := "file://" + filepath.Join(tmp, "plain")
	a, b, back := "file://"+filepath.Join(tmp, "a"), "file://"+filepath.Join(tmp, "b"), "file://"+filepath.Join(tmp, "back")
	mustRun(t, "init", "--lightning-dir", ldir, plain)

	mustRun(t, "copy", "--dst-encrypt", "--dst-passphrase-file", pa, plain, a)
	ka := filepath.Join(tmp, "a.key")
	mustRun(t, "key", "export", "--passphrase-file", pa, "--output", ka, a)
	mustRun(t, "copy", "--key-file", ka, "--dst-encrypt", "--dst-passphrase-file", pb, a, b)
	_, errOut, ok := run(t, "copy", "--key-file", ka, a, back)
	if !ok || !strings.Contains(errOut, "not encrypted") {
		t.Fatalf("copy encrypted to plain: ok %v, stderr %s", ok, errOut)
	}
	for i, tc := range [][]string{{"--key-file", ka, a}, {"--passphrase-file", pb, b}, {back}} {
		dest := filepath.Join(tmp, "r"+string(rune('0'+i))+".sqlite3")
		mustRun(t, append(append([]string{"restore"}, tc...), dest)...)
		sameDB(t, dest, testdata+"trace1-final.sqlite3")
	}
	mustFail(t, "wrong passphrase", "restore", "--passphrase-file", pa, b, filepath.Join(tmp, "x.sqlite3"))
	mustFail(t, "cannot be encrypted in place", "copy", "--key-file", ka, "--dst-encrypt", "--dst-passphrase-file", pa, a, back)
}

// TestPassphrasePrompt: on a terminal, init --encrypt asks for the new
// passphrase twice (two that differ are refused, nothing created) and a
// command opening the store asks once.
func TestPassphrasePrompt(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	ptmx, tty := openPTYPair(t)
	if tty == nil {
		t.Skip("no pseudo-terminal")
	}
	storeDir := filepath.Join(tmp, "store")
	url := "file://" + storeDir
	answer := func(lines ...string) {
		for _, l := range lines {
			if _, err := ptmx.Write([]byte(l + "\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	answer("one passphrase", "another one")
	_, errOut, err := runCLIIn(t, tty, "init", "--encrypt", url)
	if err == nil || !strings.Contains(err.Error(), "differ") || !strings.Contains(errOut, "Type it again") {
		t.Fatalf("init --encrypt with passphrases that differ: %v\n%s", err, errOut)
	}
	mustNotExist(t, storeDir)
	answer("typed passphrase", "typed passphrase")
	if _, errOut, err := runCLIIn(t, tty, "init", "--encrypt", url); err != nil {
		t.Fatalf("init --encrypt on a terminal: %v\n%s", err, errOut)
	}
	answer("typed passphrase")
	out, errOut, err := runCLIIn(t, tty, "key", "list", url)
	if err != nil || !strings.Contains(errOut, "Passphrase of store") || !strings.Contains(out, "passphrase") {
		t.Fatalf("key list on a terminal: %v\n%s%s", err, out, errOut)
	}
}

// openPTYPair opens a new pseudo-terminal: its master side (what a user
// types is written there) and its terminal side, or nils where there is
// none.
func openPTYPair(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Logf("no pseudo-terminal: %v", err)
		return nil, nil
	}
	t.Cleanup(func() { ptmx.Close() })
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Logf("unlock pseudo-terminal: %v", err)
		return nil, nil
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Logf("pseudo-terminal number: %v", err)
		return nil, nil
	}
	tty, err = os.OpenFile(filepath.Join("/dev/pts", strconv.Itoa(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Logf("open pseudo-terminal: %v", err)
		return nil, nil
	}
	t.Cleanup(func() { tty.Close() })
	return ptmx, tty
}
