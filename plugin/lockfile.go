package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clnbackup/backup/internal/secretfile"
)

// LockName is the file in the lightning directory that names the backup:
// {"backend_url": URL, "node": NAME, "token": SECRET, "s3_credentials": FILE,
// "key_file": FILE}, written by `backup-cli init --lightning-dir` with mode
// 0600 (token only for a store server, s3_credentials only for an s3://
// store, key_file only for an encrypted store). The Python plugin's files ({"backend_url": URL}) are
// read too; a missing node means DefaultNode.
const LockName = "backup.lock"

// DefaultNode is the node name of a backup.lock that names none (the same
// as the store's default, history.DefaultNode).
const DefaultNode = "default"

// errNoLock is returned by readLock when the lightning directory holds no
// backup.lock.
var errNoLock = errors.New("no " + LockName)

// readLock reads dir/backup.lock.
func readLock(dir string) (Lock, error) {
	path := filepath.Join(dir, LockName)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Lock{}, errNoLock
	}
	if err != nil {
		return Lock{}, fmt.Errorf("read %s: %w", path, err)
	}
	var raw struct {
		BackendURL *string `json:"backend_url"`
		Node       *string `json:"node"`
		Token      string  `json:"token"`
		Retry      string  `json:"server_retry"`
		S3Creds    string  `json:"s3_credentials"`
		KeyFile    string  `json:"key_file"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return Lock{}, fmt.Errorf("read %s: not a JSON object: %w", path, err)
	}
	if raw.BackendURL == nil || strings.TrimSpace(*raw.BackendURL) == "" {
		return Lock{}, fmt.Errorf("read %s: it has no \"backend_url\"", path)
	}
	l := Lock{URL: strings.TrimSpace(*raw.BackendURL), Node: DefaultNode, Token: strings.TrimSpace(raw.Token)}
	if raw.Retry != "" {
		d, err := time.ParseDuration(raw.Retry)
		if err != nil || d <= 0 {
			return Lock{}, fmt.Errorf("read %s: \"server_retry\" %q is not a positive duration such as 60s or 5m", path, raw.Retry)
		}
		l.ServerRetry = d
	}
	if l.Token != "" {
		if err := secretfile.Check(path, "the store server token"); err != nil {
			return Lock{}, err
		}
	}
	if raw.S3Creds != "" {
		if !filepath.IsAbs(raw.S3Creds) {
			return Lock{}, fmt.Errorf("read %s: \"s3_credentials\" %q is not an absolute path", path, raw.S3Creds)
		}
		if err := secretfile.Check(raw.S3Creds, "the S3 credentials file"); err != nil {
			return Lock{}, err
		}
		l.S3Credentials = raw.S3Creds
	}
	if raw.KeyFile != "" {
		if !filepath.IsAbs(raw.KeyFile) {
			return Lock{}, fmt.Errorf("read %s: \"key_file\" %q is not an absolute path", path, raw.KeyFile)
		}
		if err := secretfile.Check(raw.KeyFile, "the key of an encrypted store"); err != nil {
			return Lock{}, err
		}
		l.KeyFile = raw.KeyFile
	}
	if raw.Node != nil {
		if *raw.Node == "" {
			return Lock{}, fmt.Errorf("read %s: \"node\" is empty (leave it out for the node %q)", path, DefaultNode)
		}
		l.Node = *raw.Node
	}
	return l, nil
}
