package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	ld "github.com/clnbackup/backup/plugin/lightningdtest"
	"github.com/clnbackup/backup/replay"
)

// TestEncryptedPlugin sets a lightning directory up with init
// --lightning-dir on an encrypted store (the plugin's key file in
// backup.lock), replays trace1 through the real plugin, compacting along
// the way, and restores lightningd's final database with the passphrase
// and with the plugin's key file. Two setups: a file:// store, and a store
// server (backup-cli server, which opens the store without its key) in
// front of a store init --encrypt --store-only created on its machine,
// reached with a node token: the token may not add keys, so init refuses
// to make the plugin a key file (writing nothing) until given one made on
// the store's machine.
func TestEncryptedPlugin(t *testing.T) {
	t.Parallel()
	trace, err := replay.ReadTrace(testdata + "trace1.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	for _, server := range []bool{false, true} {
		name := "file"
		if server {
			name = "server"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			plugin := pluginBin.get(t)
			tmp := t.TempDir()
			ldir := filepath.Join(tmp, "lightning")
			if err := os.Mkdir(ldir, 0o700); err != nil {
				t.Fatal(err)
			}
			pass := writeSecret(t, tmp, "pass", "correct horse battery staple\n")
			storeDir := filepath.Join(tmp, "store")
			fileURL, url := "file://"+storeDir, "file://"+storeDir
			initArgs := []string{"init", "--lightning-dir", ldir, "--passphrase-file", pass, "--encrypt"}
			var token []string
			if server {
				mustRun(t, "init", "--encrypt", "--store-only", "--passphrase-file", pass, fileURL)
				auth, tok, nodeKey := filepath.Join(tmp, "auth"), filepath.Join(tmp, "node.token"), filepath.Join(tmp, "node.key")
				mustRun(t, "server", "add-token", "--auth", auth, "--node", "default", "--out", tok)
				url, token = serveStore(t, storeDir, "--auth", auth), []string{"--token-file", tok}
				mustFail(t, "--key-file NODE.key", append([]string{"init", "--lightning-dir", ldir, "--passphrase-file", pass}, append(token, url)...)...)
				mustNotExist(t, filepath.Join(ldir, "backup.key"))
				mustNotExist(t, filepath.Join(ldir, "backup.lock"))
				mustRun(t, "key", "add", "--passphrase-file", pass, "--new-key-file", nodeKey, fileURL)
				initArgs = append([]string{"init", "--lightning-dir", ldir, "--key-file", nodeKey}, token...)
			}
			out := mustRun(t, append(initArgs, url)...)
			if !strings.Contains(out, "key file") {
				t.Fatalf("init --lightning-dir on an encrypted store wrote no key file:\n%s", out)
			}
			res, err := ld.Play(t.Context(), plugin, ldir, trace, ld.PlayOptions{Start: ld.Options{Logf: t.Logf}, Seed: 13, CompactEvery: 100})
			if err != nil {
				t.Fatal(err)
			}
			if res.Hooks != 387 {
				t.Fatalf("played %+v", res)
			}
			for i, args := range [][]string{
				append(append([]string{"--key-file", filepath.Join(ldir, "backup.key")}, token...), url),
				{"--passphrase-file", pass, fileURL},
			} {
				dest := filepath.Join(tmp, "restored"+string(rune('0'+i))+".sqlite3")
				mustRun(t, append(append([]string{"restore"}, args...), dest)...)
				sameDB(t, dest, testdata+"trace1-final.sqlite3")
			}
			mustRun(t, "verify", "--passphrase-file", pass, fileURL)
		})
	}
}
