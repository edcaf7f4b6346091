package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clnbackup/backup/internal/s3test"
	"github.com/clnbackup/backup/store"
)

// TestS3Commands runs the commands on an s3:// store in a real S3 server
// (versitygw): init (the bucket is created and probed), list with object
// counts, restore, verify --read-data, forget, gc and unlock, all with the
// keys from --s3-credentials, which init names in backup.lock.
func TestS3Commands(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	creds := srv.CredentialsFile(t)
	tmp := t.TempDir()
	ldir := filepath.Join(tmp, "lightning")
	os.Mkdir(ldir, 0o755)
	copyFile(t, testdata+"trace1-final.sqlite3", filepath.Join(ldir, "lightningd.sqlite3"))
	url := srv.URL("backups/cln")
	c := func(args ...string) []string { return append([]string{"--s3-credentials", creds}, args...) }

	out := mustRun(t, c("init", "--lightning-dir", ldir, "--node", "alice", url)...)
	if !strings.Contains(out, "Created store") {
		t.Errorf("init: %s", out)
	}
	raw, _ := os.ReadFile(filepath.Join(ldir, "backup.lock"))
	var lock map[string]string
	if err := json.Unmarshal(raw, &lock); err != nil || lock["backend_url"] != url || lock["s3_credentials"] != creds {
		t.Fatalf("backup.lock = %s (%v)", raw, err)
	}
	mustRun(t, c("init", "--node", "bob", url)...)
	bad := filepath.Join(tmp, "bad-credentials")
	os.WriteFile(bad, []byte("[default]\naws_access_key_id = nobody\naws_secret_access_key = wrongwrong\n"), 0o600)
	mustFail(t, "access denied", "--s3-credentials", bad, "list", url)
	os.Chmod(bad, 0o644)
	mustFail(t, "chmod", "--s3-credentials", bad, "list", url)

	var l struct {
		Objects      int            `json:"objects"`
		ObjectCounts map[string]int `json:"object_counts"`
		Nodes        []any          `json:"nodes"`
	}
	out = mustRun(t, c("list", "--json", url)...)
	if err := json.Unmarshal([]byte(out), &l); err != nil || len(l.Nodes) != 2 || l.Objects == 0 || l.ObjectCounts["packs"] == 0 || l.ObjectCounts["manifests"] != 2 {
		t.Fatalf("list --json: %s (%v)", out, err)
	}
	if out = mustRun(t, c("list", url)...); !strings.Contains(out, "Objects: ") {
		t.Errorf("list: no object counts:\n%s", out)
	}
	dest := filepath.Join(tmp, "restored.sqlite3")
	mustRun(t, c("restore", "--node", "alice", url, dest)...)
	sameDB(t, dest, testdata+"trace1-final.sqlite3")
	mustRun(t, c("verify", "--read-data", url)...)

	// copy s3:// → file:// → another bucket prefix, restored equal.
	fileURL := "file://" + filepath.Join(tmp, "copied")
	mustRun(t, c("copy", url, fileURL)...)
	url2 := srv.URL("backups/second")
	mustRun(t, c("copy", fileURL, url2)...)
	for i, u := range []string{fileURL, url2} {
		dest := filepath.Join(tmp, fmt.Sprintf("copied-%d.sqlite3", i))
		mustRun(t, c("restore", "--node", "alice", u, dest)...)
		sameDB(t, dest, testdata+"trace1-final.sqlite3")
	}
	mustRun(t, c("forget", "--node", "bob", "--keep-last", "1", url)...)
	mustRun(t, c("gc", url)...)
	mustRun(t, c("unlock", "--node", "alice", url)...)
	mustRun(t, c("verify", "--read-data", url)...)
}

// TestS3InitRefusesForeignPrefix: a bucket prefix holding objects that are
// not a store is not made one.
func TestS3InitRefusesForeignPrefix(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	creds := srv.CredentialsFile(t)
	url := srv.URL("taken")
	st, _, err := store.Create(context.Background(), strings.Replace(url, "/taken?", "?", 1), store.Options{CredentialsFile: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Put a foreign object under the prefix through a store at the root.
	u, _ := store.ParseURL(url)
	if err := st.Objects().PutIfAbsent(context.Background(), u.Prefix+"/photo.jpg", []byte("x")); err != nil {
		t.Fatal(err)
	}
	mustFail(t, "not empty", "--s3-credentials", creds, "init", "--node", "a", url)
}
