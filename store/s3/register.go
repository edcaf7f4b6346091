package s3

import (
	"context"

	"github.com/clnbackup/backup/store"
)

// init makes store.Open and store.Create handle s3:// URLs; programs that
// should reach buckets import this package (for its side effect, as the
// socket: client).
func init() {
	store.RegisterObjectStore("s3", func(_ context.Context, u store.URL, opts store.Options) (store.ObjectBackend, error) {
		return New(Config{Bucket: u.Bucket, Prefix: u.Prefix, Endpoint: u.Endpoint, Region: u.Region,
			Insecure: u.Insecure, PathStyle: u.PathStyle, CredentialsFile: opts.CredentialsFile, Raw: u.Raw})
	})
}
