// Package s3 is the s3:// backend: a store's objects kept in a bucket of an
// S3-compatible object store (AWS S3, Backblaze B2, Cloudflare R2, MinIO,
// Ceph RGW, Garage, versitygw), through github.com/minio/minio-go/v7.
// Put-if-absent is a conditional write (If-None-Match: *), which every
// provider the store supports must honour (New with Probe checks it); the
// rest of the backend.Backend contract maps onto plain GET (ranged), HEAD,
// paginated LIST (lexical order, as S3 lists) and DELETE (idempotent in S3).
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/clnbackup/backup/store/backend"
)

// Backend keeps objects in one bucket, under an optional key prefix. It is
// safe for concurrent use; minio-go retries reads, listings and deletes with
// backoff on 5xx, throttling and timeouts, and the backend retries the
// conditional PUT itself (see PutIfAbsent).
type Backend struct {
	cfg    Config
	cl     *minio.Client // retries (reads, lists, deletes)
	put    *minio.Client // no retries: PutIfAbsent decides about each retry
	core   minio.Core
	prefix string // cfg.Prefix + "/", or ""
	stats  *counter
}

var _ backend.Backend = (*Backend)(nil)

// putAttempts bounds PutIfAbsent's tries; putBackoff is its first pause,
// doubled each time (capped at putBackoffCap).
const (
	putAttempts   = 8
	putBackoff    = 100 * time.Millisecond
	putBackoffCap = 3 * time.Second
)

// key is the bucket key of an object name.
func (b *Backend) key(name string) string { return b.prefix + name }

// Bucket is the bucket's name.
func (b *Backend) Bucket() string { return b.cfg.Bucket }

// Location is the store's URL.
func (b *Backend) Location() string { return b.cfg.Location() }

// Close releases idle connections.
func (b *Backend) Close() error {
	b.stats.closeIdle()
	return nil
}

// PutIfAbsent implements backend.Backend with one conditional PUT
// (If-None-Match: *): the bucket refuses it with 412 when the name is taken,
// and of concurrent PUTs exactly one succeeds. A try that fails without an
// answer (a lost connection, a 5xx, throttling) is retried with backoff; a
// retry refused with 412 may be refused because the lost try was stored, so
// the object is read back: the same bytes mean that try succeeded (so a
// record is stored exactly once by name), other bytes are another writer's.
func (b *Backend) PutIfAbsent(ctx context.Context, name string, data []byte) error {
	if err := backend.ValidName(name); err != nil {
		return err
	}
	delay := putBackoff
	var last error
	for attempt := 0; attempt < putAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("put %s in %s: %w (after: %v)", name, b.Location(), ctx.Err(), last)
			case <-time.After(delay):
			}
			delay = min(2*delay, putBackoffCap)
		}
		opts := minio.PutObjectOptions{DisableMultipart: true, SendContentMd5: true}
		opts.SetMatchETagExcept("*")
		_, err := b.put.PutObject(ctx, b.cfg.Bucket, b.key(name), bytes.NewReader(data), int64(len(data)), opts)
		if err == nil {
			return nil
		}
		if conflict(err) {
			if attempt == 0 {
				return fmt.Errorf("put %s: %w", name, backend.ErrExists)
			}
			return b.settleRetry(ctx, name, data, err)
		}
		if ctx.Err() != nil || !retryable(err) {
			return b.opErr("put", name, err)
		}
		last = err
	}
	return fmt.Errorf("put %s in %s: gave up after %d tries: %w (check the endpoint and the provider's status)", name, b.Location(), putAttempts, last)
}

// settleRetry decides a retried put refused because the name is taken: ours
// if the stored bytes are the ones we sent.
func (b *Backend) settleRetry(ctx context.Context, name string, data []byte, cause error) error {
	got, err := b.ReadWhole(ctx, name, int64(len(data)))
	if err != nil {
		return fmt.Errorf("put %s: a retry found the name taken and reading it back failed: %w (first: %v)", name, err, cause)
	}
	if bytes.Equal(got, data) {
		return nil
	}
	return fmt.Errorf("put %s: %w", name, backend.ErrExists)
}

// conflict reports a refused conditional write: 412 Precondition Failed, or
// 409 ConditionalRequestConflict (AWS, for a concurrent conditional PUT).
func conflict(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed" ||
		(r.StatusCode == http.StatusConflict && r.Code == "ConditionalRequestConflict")
}

// retryable reports a failure worth another try: no answer, a 5xx, a
// throttling or timeout answer.
func retryable(err error) bool {
	r := minio.ToErrorResponse(err)
	if r.StatusCode == 0 && r.Code == "" {
		return true // transport error: no answer
	}
	switch r.Code {
	case "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable":
		return true
	}
	return r.StatusCode >= 500 || r.StatusCode == http.StatusTooManyRequests || r.StatusCode == http.StatusRequestTimeout
}

// notFound reports an answer that the object does not exist.
func notFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.Code == "NoSuchKey" || r.Code == "NotFound" || (r.StatusCode == http.StatusNotFound && r.Code == "")
}

// opErr wraps a failed request with what failed and where, ErrNotFound for a
// missing object.
func (b *Backend) opErr(op, name string, err error) error {
	if notFound(err) {
		return fmt.Errorf("%s %s: %w", op, name, backend.ErrNotFound)
	}
	r := minio.ToErrorResponse(err)
	switch {
	case r.Code == "NoSuchBucket":
		return fmt.Errorf("%s %s: bucket %q does not exist at %s (create the store with backup-cli init): %w", op, name, b.cfg.Bucket, b.cfg.endpoint(), backend.ErrNotFound)
	case r.StatusCode == http.StatusForbidden || r.Code == "AccessDenied" || r.Code == "InvalidAccessKeyId" || r.Code == "SignatureDoesNotMatch" || r.Code == "XAdminUserNotFound":
		return fmt.Errorf("%s %s in %s: %w: %v (check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the credentials file, and the bucket's policy)", op, name, b.Location(), ErrAccessDenied, err)
	}
	return fmt.Errorf("%s %s in %s: %w", op, name, b.Location(), err)
}

// Get implements backend.Backend with one ranged GET. The object's size
// comes from the answer's Content-Range, so no HEAD is needed; a range the
// bucket refuses (416: an offset at or past the end) is checked against a
// HEAD to tell an empty read at the end from a bad offset.
func (b *Backend) Get(ctx context.Context, name string, off, length int64) ([]byte, error) {
	if err := backend.ValidName(name); err != nil {
		return nil, err
	}
	if off < 0 || length == 0 || (length > 0 && length > math.MaxInt64-off) {
		return b.getChecked(ctx, name, off, length)
	}
	var opts minio.GetObjectOptions
	if off > 0 || length > 0 {
		end := int64(0)
		if length > 0 {
			end = off + length - 1
		}
		if err := opts.SetRange(off, end); err != nil {
			return b.getChecked(ctx, name, off, length)
		}
	}
	rc, info, hdr, err := b.core.GetObject(ctx, b.cfg.Bucket, b.key(name), opts)
	if err != nil {
		if minio.ToErrorResponse(err).StatusCode == http.StatusRequestedRangeNotSatisfiable {
			return b.getChecked(ctx, name, off, length)
		}
		return nil, b.opErr("get", name, err)
	}
	defer rc.Close()
	size := info.Size
	if cr := hdr.Get("Content-Range"); cr != "" {
		if size, err = totalFromContentRange(cr); err != nil {
			return nil, fmt.Errorf("get %s from %s: %w", name, b.Location(), err)
		}
	} else if off > 0 {
		return nil, fmt.Errorf("get %s from %s: the server ignored the range (no Content-Range): the endpoint is not S3-compatible enough", name, b.Location())
	}
	n, err := backend.CheckRange(name, off, length, size)
	if err != nil {
		return nil, err
	}
	return readBody(rc, n, name, b.Location())
}

// ReadWhole implements backend.WholeReader: one GET, refused on the size
// the answer gives before its body is read.
func (b *Backend) ReadWhole(ctx context.Context, name string, max int64) ([]byte, error) {
	if err := backend.ValidName(name); err != nil {
		return nil, err
	}
	rc, info, _, err := b.core.GetObject(ctx, b.cfg.Bucket, b.key(name), minio.GetObjectOptions{})
	if err != nil {
		return nil, b.opErr("get", name, err)
	}
	defer rc.Close()
	if err := backend.CheckWhole(name, info.Size, max); err != nil {
		return nil, fmt.Errorf("get %s from %s: %w", name, b.Location(), err)
	}
	return readBody(rc, info.Size, name, b.Location())
}

// getChecked is Get by a HEAD first: for ranges a GET cannot ask for.
func (b *Backend) getChecked(ctx context.Context, name string, off, length int64) ([]byte, error) {
	in, err := b.Stat(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	n, err := backend.CheckRange(name, off, length, in.Size)
	if err != nil || n == 0 {
		return []byte{}, err
	}
	var opts minio.GetObjectOptions
	if err := opts.SetRange(off, off+n-1); err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	rc, _, _, err := b.core.GetObject(ctx, b.cfg.Bucket, b.key(name), opts)
	if err != nil {
		return nil, b.opErr("get", name, err)
	}
	defer rc.Close()
	return readBody(rc, n, name, b.Location())
}

// preallocMax is the largest body read into a buffer allocated up front;
// a larger one grows as its bytes arrive, so a size a server merely claims
// costs no memory.
const preallocMax = 16 << 20

// readBody reads exactly n bytes: a body that is shorter or longer than the
// answer said is an error, never a short object.
func readBody(rc io.Reader, n int64, name, where string) ([]byte, error) {
	var buf []byte
	if n <= preallocMax {
		buf = make([]byte, n)
		if _, err := io.ReadFull(rc, buf); err != nil {
			return nil, fmt.Errorf("get %s from %s: read %d bytes: %w", name, where, n, err)
		}
	} else {
		var err error
		if buf, err = io.ReadAll(io.LimitReader(rc, n)); err != nil || int64(len(buf)) != n {
			return nil, fmt.Errorf("get %s from %s: read %d of %d bytes: %v: %w", name, where, len(buf), n, err, io.ErrUnexpectedEOF)
		}
	}
	var one [1]byte
	if k, _ := rc.Read(one[:]); k > 0 {
		return nil, fmt.Errorf("get %s from %s: the server sent more than the %d bytes asked for", name, where, n)
	}
	return buf, nil
}

// totalFromContentRange parses the total size of "bytes A-B/TOTAL".
func totalFromContentRange(cr string) (int64, error) {
	_, total, ok := strings.Cut(cr, "/")
	if !ok || !strings.HasPrefix(cr, "bytes ") {
		return 0, fmt.Errorf("malformed Content-Range %.60q", cr)
	}
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("malformed Content-Range %.60q", cr)
	}
	return n, nil
}

// Stat implements backend.Backend with a HEAD.
func (b *Backend) Stat(ctx context.Context, name string) (backend.Info, error) {
	if err := backend.ValidName(name); err != nil {
		return backend.Info{}, err
	}
	oi, err := b.cl.StatObject(ctx, b.cfg.Bucket, b.key(name), minio.StatObjectOptions{})
	if err != nil {
		return backend.Info{}, b.opErr("stat", name, err)
	}
	return backend.Info{Name: name, Size: oi.Size, ModTime: oi.LastModified}, nil
}

// List implements backend.Backend with paginated LIST requests (1000 keys
// each), in the bucket's lexical order. Keys under the store's prefix that
// are not valid object names (put there by something else) are skipped.
func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.Info) error) error {
	if err := backend.ValidPrefix(prefix); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing goroutine when fn fails
	for oi := range b.cl.ListObjects(ctx, b.cfg.Bucket, minio.ListObjectsOptions{Prefix: b.key(prefix), Recursive: true}) {
		if oi.Err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("list %q in %s: %w", prefix, b.Location(), ctx.Err())
			}
			return b.opErr("list", prefix, oi.Err)
		}
		name, ok := strings.CutPrefix(oi.Key, b.prefix)
		if !ok || backend.ValidName(name) != nil {
			continue
		}
		if err := fn(backend.Info{Name: name, Size: oi.Size, ModTime: oi.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Delete implements backend.Backend: S3 answers a DELETE of a missing key
// with success, so it is idempotent as the contract asks.
func (b *Backend) Delete(ctx context.Context, name string) error {
	if err := backend.ValidName(name); err != nil {
		return err
	}
	if err := b.cl.RemoveObject(ctx, b.cfg.Bucket, b.key(name), minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
		return b.opErr("delete", name, err)
	}
	return nil
}

// ErrAccessDenied is wrapped by errors of requests the provider refused for
// the credentials: retrying cannot help.
var ErrAccessDenied = errors.New("access denied")

// errNoConditionalWrites is wrapped by Probe's error for a bucket that
// accepts a second If-None-Match: * PUT of an existing key.
var errNoConditionalWrites = errors.New("the bucket does not honour conditional writes (PUT with If-None-Match: *)")
