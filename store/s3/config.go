package s3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/clnbackup/backup/internal/secretfile"
	"github.com/clnbackup/backup/store/backend"
)

// Config says where a store's bucket is and how to reach it: the parts of
// an s3://BUCKET[/PREFIX]?endpoint=...&region=...&tls=false&path-style=true
// URL (store.ParseURL), and where the credentials come from.
type Config struct {
	Bucket string
	// Prefix is the key prefix of the store's objects, without a trailing
	// slash ("" for the bucket's root).
	Prefix string
	// Endpoint is HOST:PORT ("" for AWS: s3.amazonaws.com).
	Endpoint string
	Region   string
	// Insecure speaks plain HTTP (tls=false): for a server on loopback.
	Insecure  bool
	PathStyle bool
	// CredentialsFile is a shared credentials file (AWS's format) to take
	// the keys from instead of the environment (the plugin's, named in
	// backup.lock); it must be readable only by its owner.
	CredentialsFile string
	// Raw is the URL, for messages.
	Raw string
}

// Location is the store's URL for messages.
func (c Config) Location() string {
	if c.Raw != "" {
		return c.Raw
	}
	loc := "s3://" + c.Bucket
	if c.Prefix != "" {
		loc += "/" + c.Prefix
	}
	return loc
}

func (c Config) endpoint() string {
	if c.Endpoint == "" {
		return "s3.amazonaws.com"
	}
	return c.Endpoint
}

// creds are the credentials as the AWS tools take them: a credentials file
// when one is named (the plugin's), else AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, then the shared credentials
// file (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile
// AWS_PROFILE or "default"), then an instance's IAM role.
func (c Config) creds() (*credentials.Credentials, error) {
	profile := os.Getenv("AWS_PROFILE")
	if c.CredentialsFile != "" {
		if err := secretfile.Check(c.CredentialsFile, "the S3 credentials file"); err != nil {
			return nil, err
		}
		if _, err := os.Stat(c.CredentialsFile); err != nil {
			return nil, fmt.Errorf("S3 credentials file: %w", err)
		}
		return credentials.NewFileAWSCredentials(c.CredentialsFile, profile), nil
	}
	return credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{Profile: profile},
		&credentials.IAM{},
	}), nil
}

// New connects to the bucket cfg names (no request is made: the first
// object operation finds out whether the bucket and the keys work).
func New(cfg Config) (*Backend, error) {
	if len(cfg.Bucket) < 3 {
		return nil, fmt.Errorf("s3 store %s: bucket name %q is shorter than 3 characters", cfg.Location(), cfg.Bucket)
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	cr, err := cfg.creds()
	if err != nil {
		return nil, fmt.Errorf("s3 store %s: %w", cfg.Location(), err)
	}
	stats := newCounter(newTransport())
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	mk := func(retries int) (*minio.Client, error) {
		return minio.New(cfg.endpoint(), &minio.Options{Creds: cr, Secure: !cfg.Insecure, Region: cfg.Region,
			BucketLookup: lookup, Transport: stats, MaxRetries: retries})
	}
	cl, err := mk(minio.MaxRetry)
	if err != nil {
		return nil, fmt.Errorf("s3 store %s: %w", cfg.Location(), err)
	}
	put, err := mk(1)
	if err != nil {
		return nil, fmt.Errorf("s3 store %s: %w", cfg.Location(), err)
	}
	b := &Backend{cfg: cfg, cl: cl, put: put, core: minio.Core{Client: cl}, stats: stats}
	if cfg.Prefix != "" {
		b.prefix = cfg.Prefix + "/"
	}
	return b, nil
}

// newTransport is an HTTP transport with timeouts, so that a server that
// stops answering fails a try (which is retried) instead of hanging it.
func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Prepare makes the bucket ready for a new store: creates it when missing,
// and probes that it honours conditional writes (leases, journals and gc's
// safety rely on put-if-absent), refusing a bucket that does not with an
// error naming the missing feature.
func (b *Backend) Prepare(ctx context.Context) error {
	ok, err := b.cl.BucketExists(ctx, b.cfg.Bucket)
	if err != nil {
		return b.opErr("check bucket", b.cfg.Bucket, err)
	}
	if !ok {
		if err := b.cl.MakeBucket(ctx, b.cfg.Bucket, minio.MakeBucketOptions{Region: b.cfg.Region}); err != nil {
			return b.opErr("create bucket", b.cfg.Bucket, err)
		}
	}
	return b.Probe(ctx)
}

// Probe writes a probe object twice with If-None-Match: * and fails, wrapping
// errNoConditionalWrites, if the second write is not refused.
func (b *Backend) Probe(ctx context.Context) error {
	var r [8]byte
	rand.Read(r[:])
	name := "probe-" + hex.EncodeToString(r[:])
	if err := b.PutIfAbsent(ctx, name, []byte("first")); err != nil {
		return fmt.Errorf("probe bucket %s for conditional writes: %w", b.Location(), err)
	}
	defer b.Delete(context.WithoutCancel(ctx), name)
	err := b.PutIfAbsent(ctx, name, []byte("second"))
	switch {
	case err == nil:
		return fmt.Errorf("s3 store %s at %s: %w; the store needs them for leases, journals and gc: use a provider that supports them (AWS S3, R2, B2, MinIO, Ceph RGW 18+, versitygw)", b.Location(), b.cfg.endpoint(), errNoConditionalWrites)
	case errors.Is(err, backend.ErrExists):
		return nil
	}
	return fmt.Errorf("probe bucket %s for conditional writes: %w", b.Location(), err)
}
