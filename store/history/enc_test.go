package history_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/clnbackup/backup/internal/s3test"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/crypt"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/remote"
	"github.com/klauspost/compress/zstd"
)

// testKDF is the cheapest passphrase work a key object may record: tests
// open stores often.
var testKDF = crypt.KDFParams{Name: "argon2id", Time: 1, MemoryKiB: 8 << 10, Threads: 1}

const testPass = "correct horse battery staple"

// newEncStore creates an encrypted store in a temporary directory.
func newEncStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	url := "file://" + filepath.Join(t.TempDir(), "store")
	st, created, err := store.Create(ctx, url, store.Options{Encrypt: &store.Encryption{Passphrase: []byte(testPass), KDF: testKDF}})
	if err != nil || !created {
		t.Fatalf("create encrypted store: %v (created %v)", err, created)
	}
	t.Cleanup(func() { st.Close() })
	return st, url
}

// unlocked are the options that open the test's encrypted stores.
func unlocked() store.Options {
	return store.Options{Unlock: store.Unlock{Passphrase: []byte(testPass)}}
}

// storeOfKind makes a store for table-driven tests: "plain", "encrypted"
// (file://), "encrypted-server" (an encrypted store served by a keyless
// store server, opened by a node client for n1 that holds the key).
func storeOfKind(t testing.TB, kind string) *store.Store {
	t.Helper()
	switch kind {
	case "plain":
		st, _ := newStore(t)
		return st
	case "encrypted":
		st, _ := newEncStore(t)
		return st
	case "encrypted-server":
		_, url := newEncStore(t)
		return keylessServer(t, url, "n1")
	case "encrypted-s3":
		// A bucket of a versitygw on loopback; journals in the bucket.
		srv := s3test.Start(t)
		opts := unlocked()
		opts.CredentialsFile = srv.CredentialsFile(t)
		opts.Encrypt = &store.Encryption{Passphrase: []byte(testPass), KDF: testKDF}
		st, created, err := store.Create(ctx, srv.URL("enc"), opts)
		if err != nil || !created {
			t.Fatalf("create encrypted s3 store: %v (created %v)", err, created)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	t.Fatalf("no store kind %q", kind)
	return nil
}

// keylessServer serves the encrypted store at url with a server that
// opens it keyless, as backup-cli server does, and returns a node client
// of it that holds the key.
func keylessServer(t testing.TB, url, node string) *store.Store {
	t.Helper()
	srvSt, err := store.Open(ctx, url, store.Options{Keyless: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srvSt.Close() })
	if srvSt.Keyring() != nil {
		t.Fatal("a keyless store has a keyring")
	}
	token, err := remote.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	auth, err := remote.ParseAuth(strings.NewReader(token + " " + node + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := remote.NewServer(srvSt, auth, remote.ServerOptions{})
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(ctx) })
	opts := unlocked()
	opts.Token = token
	st, err := store.Open(ctx, "socket:"+l.Addr().String(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// storeFiles reads every file of a store directory.
func storeFiles(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		out[strings.TrimPrefix(p, dir+"/")] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNoPlaintextLeaves replays trace1 into an encrypted store, with
// compactions and a journal tail, and checks that no file of the store
// holds a distinctive string of the trace (string literals: labels,
// descriptions; hex blobs: keys, as hex or raw bytes) nor any page of the
// node's database, raw or zstd-compressed.
func TestNoPlaintextLeaves(t *testing.T) {
	t.Parallel()
	st, url := newEncStore(t)
	_, n := initNode(t, st, "", "")
	recs := traceRecords(t, "trace1.jsonl")
	for i, r := range recs {
		if i == 150 || i == 300 {
			if _, err := n.Compact(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		feed(t, n, r)
	}
	if _, err := n.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	var needles [][]byte
	seen := map[string]bool{}
	add := func(b []byte) {
		if len(b) >= 12 && !seen[string(b)] {
			seen[string(b)] = true
			needles = append(needles, b)
		}
	}
	lit := regexp.MustCompile(`'([^']{12,})'`)
	blob := regexp.MustCompile(`(?i)X'([0-9a-f]{32,})'`)
	for _, r := range recs {
		for _, s := range r.Statements {
			for _, m := range lit.FindAllStringSubmatch(s, -1) {
				add([]byte(m[1]))
			}
			for _, m := range blob.FindAllStringSubmatch(s, -1) {
				add([]byte(strings.ToLower(m[1])))
				raw := make([]byte, len(m[1])/2)
				for i := range raw {
					var b byte
					for _, c := range strings.ToLower(m[1][2*i : 2*i+2]) {
						b <<= 4
						if c >= 'a' {
							b |= byte(c-'a') + 10
						} else {
							b |= byte(c - '0')
						}
					}
					raw[i] = b
				}
				add(raw)
			}
		}
	}
	strs := len(needles)
	db, err := os.ReadFile(filepath.Join("..", "..", "testdata", "trace1-final.sqlite3"))
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	ps := 4096
	for off := 0; off+ps <= len(db); off += ps {
		page := db[off : off+ps]
		if bytes.Count(page, []byte{0}) > ps-64 {
			continue // nearly empty: nothing distinctive
		}
		add(page)
		add(enc.EncodeAll(page, nil))
	}
	if strs < 20 || len(needles)-strs < 10 {
		t.Fatalf("only %d strings and %d pages to look for: the trace is not what this test expects", strs, len(needles)-strs)
	}
	files := storeFiles(t, strings.TrimPrefix(url, "file://"))
	for name, data := range files {
		for _, nd := range needles {
			if bytes.Contains(data, nd) {
				t.Fatalf("store file %s holds plaintext %.60q", name, nd)
			}
		}
	}
	// The same check finds them in a plain store: the needles are real.
	pst, purl := newStore(t)
	_, pn := initNode(t, pst, "", "")
	for _, r := range recs[:200] {
		feed(t, pn, r)
	}
	if _, err := pn.Compact(ctx, nil); err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, data := range storeFiles(t, strings.TrimPrefix(purl, "file://")) {
		for _, nd := range needles {
			if bytes.Contains(data, nd) {
				found++
			}
		}
	}
	if found == 0 {
		t.Fatal("no needle found in a plain store either: the check proves nothing")
	}
	t.Logf("%d strings and %d pages looked for in %d files of the encrypted store; %d found in a plain store", strs, len(needles)-strs, len(files), found)
}

// TestOpenEncrypted: a wrong passphrase or key file, or none, fails
// clearly and writes nothing; every way to unlock works; key objects add
// and remove, never the last.
func TestOpenEncrypted(t *testing.T) {
	t.Parallel()
	st, url := newEncStore(t)
	initNode(t, st, "", "")
	dir := strings.TrimPrefix(url, "file://")
	before := storeFiles(t, dir)
	other := crypt.NewMasterKey().KeyFile()
	for _, tc := range []struct {
		name string
		u    store.Unlock
		want error
		text string
	}{
		{"no key", store.Unlock{}, store.ErrLocked, "--passphrase-file FILE"},
		{"wrong passphrase", store.Unlock{Passphrase: []byte("nope")}, crypt.ErrWrongKey, "opens none"},
		{"prompt refused", store.Unlock{Prompt: func(string) ([]byte, error) { return nil, errors.New("no terminal") }}, nil, "no terminal"},
		{"other store's master key", store.Unlock{KeyFile: &other}, crypt.ErrWrongKey, "another store"},
		{"unknown unlock key file", store.Unlock{KeyFile: ptr(crypt.NewUnlockKeyFile())}, crypt.ErrWrongKey, "no keyfile key object"},
	} {
		_, err := store.Open(ctx, url, store.Options{Unlock: tc.u})
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) || !strings.Contains(err.Error(), tc.text) {
			t.Fatalf("%s: err = %v, want %v with %q", tc.name, err, tc.want, tc.text)
		}
	}
	if after := storeFiles(t, dir); len(after) != len(before) {
		t.Fatalf("failed opens changed the store: %d files, then %d", len(before), len(after))
	}
	kr := st.Keyring()
	master := kr.Master().KeyFile()
	unlockFile := crypt.NewUnlockKeyFile()
	ko, err := crypt.WrapWithKeyFile(kr.Master(), "plugin", unlockFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Add(ctx, ko); err != nil {
		t.Fatal(err)
	}
	ko2, err := crypt.WrapWithPassphrase(kr.Master(), "second", []byte("second pass"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Add(ctx, ko2); err != nil {
		t.Fatal(err)
	}
	foreign, _ := crypt.WrapWithPassphrase(crypt.NewMasterKey(), "foreign", []byte("x"), testKDF)
	if err := kr.Add(ctx, foreign); err == nil {
		t.Fatal("a key object of another master key was added")
	}
	for name, u := range map[string]store.Unlock{
		"passphrase":      {Passphrase: []byte(testPass)},
		"second":          {Passphrase: []byte("second pass")},
		"prompt":          {Prompt: func(string) ([]byte, error) { return []byte("second pass"), nil }},
		"master key file": {KeyFile: &master},
		"unlock key file": {KeyFile: &unlockFile},
	} {
		o, err := store.Open(ctx, url, store.Options{Unlock: u})
		if err != nil {
			t.Fatalf("open with %s: %v", name, err)
		}
		if _, err := o.LatestManifest(ctx, "n1"); err != nil {
			t.Fatalf("read through a store opened with %s: %v", name, err)
		}
		o.Close()
	}
	list, err := kr.List(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("key list: %d, %v", len(list), err)
	}
	for _, o := range list[:2] {
		if err := kr.Remove(ctx, o.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := kr.Remove(ctx, list[2].ID); !errors.Is(err, store.ErrLastKey) {
		t.Fatalf("removing the last key: %v", err)
	}
	// The master key file opens the store with every key object lost.
	for _, o := range list {
		os.Remove(filepath.Join(dir, "keys", o.ID))
	}
	o, err := store.Open(ctx, url, store.Options{Unlock: store.Unlock{KeyFile: &master}})
	if err != nil {
		t.Fatalf("open with the master key file and no key object: %v", err)
	}
	o.Close()
}

func ptr[T any](v T) *T { return &v }

// TestSecrets: node secrets round-trip sealed in an encrypted store, a
// replaced one reads as the newest, and a plain store has no keyring.
func TestSecrets(t *testing.T) {
	t.Parallel()
	st, url := newEncStore(t)
	kr := st.Keyring()
	if names, err := store.SecretNames(ctx, st, "n1"); err != nil || len(names) != 0 {
		t.Fatalf("has secrets before: %v %v", names, err)
	}
	if err := kr.PutSecret(ctx, "n1", "hsm_secret", []byte("first secret 0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	if err := kr.PutSecret(ctx, "n1", "hsm_secret", []byte("second secret 0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	if err := kr.PutSecret(ctx, "n1", "other", []byte("x")); err == nil {
		t.Fatal("a secret of an unknown name was stored")
	}
	got, err := kr.Secrets(ctx, "n1")
	if err != nil || string(got["hsm_secret"]) != "second secret 0123456789abcdef" || len(got) != 1 {
		t.Fatalf("secrets: %q %v", got, err)
	}
	if names, err := store.SecretNames(ctx, st, "n1"); err != nil || len(names) == 0 {
		t.Fatalf("has secrets after: %v %v", names, err)
	}
	for name, data := range storeFiles(t, strings.TrimPrefix(url, "file://")) {
		if bytes.Contains(data, []byte("secret 0123456789")) {
			t.Fatalf("%s holds the secret in the clear", name)
		}
	}
	plain, _ := newStore(t)
	if plain.Keyring() != nil {
		t.Fatal("a plain store has a keyring")
	}
}

// TestCopyEncrypted: file → encrypted file → plain file, each copy
// re-encoding (other chunk ids), restores equal at every manifest and the
// newest state; a copy between stores of the same master key copies
// bodies as stored.
func TestCopyEncrypted(t *testing.T) {
	t.Parallel()
	src := newCopySource(t, "trace1.jsonl")
	src.feedUpTo(t, 250, map[int]bool{1: true, 100: true, 200: true})
	enc, encURL := newEncStore(t)
	res := copyNodes(t, src.st, enc)
	if res.Mode != history.CopyReencode || !strings.Contains(res.Reason, "keyed by master key") {
		t.Fatalf("copy to an encrypted store: %+v", res)
	}
	assertCopied(t, src.st, enc, true)
	plain, _ := newStore(t)
	if res := copyNodes(t, enc, plain); res.Mode != history.CopyReencode {
		t.Fatalf("copy from an encrypted store: %+v", res)
	}
	assertCopied(t, src.st, plain, true)
	// Another encrypted store: other keys, re-encoded.
	enc2, _ := newEncStore(t)
	if res := copyNodes(t, enc, enc2); res.Mode != history.CopyReencode {
		t.Fatalf("copy between encrypted stores of different keys: %+v", res)
	}
	assertCopied(t, src.st, enc2, false)
	// A store of the same master key (its directory copied without
	// nodes): bodies copied as they are.
	sameDir := filepath.Join(t.TempDir(), "same")
	for name, data := range storeFiles(t, strings.TrimPrefix(encURL, "file://")) {
		if name == "config" || strings.HasPrefix(name, "keys/") {
			os.MkdirAll(filepath.Join(sameDir, filepath.Dir(name)), 0o755)
			if err := os.WriteFile(filepath.Join(sameDir, name), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	same, err := store.Open(ctx, "file://"+sameDir, unlocked())
	if err != nil {
		t.Fatal(err)
	}
	defer same.Close()
	if res := copyNodes(t, enc, same); res.Mode != history.CopyAsStored {
		t.Fatalf("copy between stores of one master key: %+v", res)
	}
	assertCopied(t, src.st, same, false)
}

// TestRemoveKeysAtOnce: two key objects removed at the same time by two
// openers (each sees the other's key, so each may think it is not the
// last): the store never ends with no key object.
func TestRemoveKeysAtOnce(t *testing.T) {
	t.Parallel()
	st, url := newEncStore(t)
	kr := st.Keyring()
	ko, err := crypt.WrapWithPassphrase(kr.Master(), "second", []byte("second pass"), testKDF)
	if err != nil {
		t.Fatal(err)
	}
	if err := kr.Add(ctx, ko); err != nil {
		t.Fatal(err)
	}
	master := kr.Master().KeyFile()
	for round := 0; round < 20; round++ {
		objs, err := kr.List(ctx)
		if err != nil || len(objs) < 2 {
			t.Fatalf("round %d: %d key objects (%v)", round, len(objs), err)
		}
		var wg sync.WaitGroup
		for _, o := range objs[:2] {
			other, err := store.Open(ctx, url, store.Options{Unlock: store.Unlock{KeyFile: &master}})
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				defer other.Close()
				other.Keyring().Remove(ctx, o.ID)
			})
		}
		wg.Wait()
		left, err := kr.List(ctx)
		if err != nil || len(left) == 0 {
			t.Fatalf("round %d: two removals at once left %d key objects (%v)", round, len(left), err)
		}
		for len(left) < 2 { // put a second key back for the next round
			ko, _ := crypt.WrapWithPassphrase(kr.Master(), "again", []byte("again"), testKDF)
			if err := kr.Add(ctx, ko); err != nil {
				t.Fatal(err)
			}
			left = append(left, ko)
		}
	}
}

// TestHostileKeyObjects: a key object larger than any key object, or a
// flood of them, is refused by size and count before it is read.
func TestHostileKeyObjects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		plant func(dir string) error
		want  string
	}{
		{"huge", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "keys", "ffffffffffffffff"), make([]byte, 64<<20), 0o600)
		}, "more than the 16384 a key object may have"},
		{"flood", func(dir string) error {
			for i := range 1100 {
				if err := os.WriteFile(filepath.Join(dir, "keys", fmt.Sprintf("%016x", i)), []byte("{}"), 0o600); err != nil {
					return err
				}
			}
			return nil
		}, "more than 1024 key objects"},
	} {
		_, url := newEncStore(t)
		if err := tc.plant(strings.TrimPrefix(url, "file://")); err != nil {
			t.Fatal(err)
		}
		_, err := store.Open(ctx, url, unlocked())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: open = %v, want %q", tc.name, err, tc.want)
		}
	}
}
