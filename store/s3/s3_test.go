package s3_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/clnbackup/backup/internal/s3test"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/backend/backendtest"
	"github.com/clnbackup/backup/store/s3"
)

// newBackend is a backend over a new bucket (with a key prefix, so that the
// prefix handling is part of every test) on srv.
func newBackend(t testing.TB, srv *s3test.Server) *s3.Backend {
	t.Helper()
	u, err := store.ParseURL(srv.URL("pre/fix"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s3.New(s3.Config{Bucket: u.Bucket, Prefix: u.Prefix, Endpoint: u.Endpoint, Region: u.Region, Insecure: u.Insecure, PathStyle: u.PathStyle})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestConformance runs the backend conformance suite against a real
// versitygw on loopback.
func TestConformance(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	backendtest.Run(t, func(t testing.TB) backend.Backend { return newBackend(t, srv) })
}

// TestPrefixIsolation: objects outside the store's prefix are neither
// listed nor reachable.
func TestPrefixIsolation(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	b := newBackend(t, srv)
	ctx := context.Background()
	if err := b.PutIfAbsent(ctx, "a/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// The same bucket without the prefix: an object beside the store's.
	outside, err := s3.New(s3.Config{Bucket: b.Bucket(), Endpoint: srv.Addr, Insecure: true, PathStyle: true, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := outside.PutIfAbsent(ctx, "pre/other", []byte("y")); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := b.List(ctx, "", func(in backend.Info) error { names = append(names, in.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "a/x" {
		t.Fatalf("listed %v", names)
	}
}

// TestCounts: the request counter sees each kind of request.
func TestCounts(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	b := newBackend(t, srv)
	ctx := context.Background()
	before := b.Stats()
	b.PutIfAbsent(ctx, "c/1", []byte("hello"))
	b.Get(ctx, "c/1", 1, 2)
	b.Stat(ctx, "c/1")
	b.List(ctx, "c/", func(backend.Info) error { return nil })
	b.Delete(ctx, "c/1")
	d := b.Stats().Sub(before)
	if d.Put != 1 || d.Get != 1 || d.Head != 1 || d.List != 1 || d.Delete != 1 || d.BytesUp < 5 || d.BytesDown < 2 {
		t.Fatalf("counts %+v", d)
	}
}

// TestProbeRefusesBucketWithoutConditionalWrites: in front of the real
// server, a proxy answers a refused conditional PUT (412) with success, as a
// provider that ignores If-None-Match does; preparing a store there is
// refused, naming the missing feature.
func TestProbeRefusesBucketWithoutConditionalWrites(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	target, _ := url.Parse("http://" + srv.Addr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodPut && resp.StatusCode == http.StatusPreconditionFailed {
			resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
			resp.Body.Close()
			resp.Body, resp.ContentLength = io.NopCloser(strings.NewReader("")), 0
			resp.Header = http.Header{"Etag": {`"0123456789abcdef0123456789abcdef"`}}
		}
		return nil
	}
	ps := httptest.NewServer(proxy)
	defer ps.Close()
	b, err := s3.New(s3.Config{Bucket: "noconditional", Endpoint: strings.TrimPrefix(ps.URL, "http://"), Insecure: true, PathStyle: true, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Prepare(context.Background())
	if err == nil || !strings.Contains(err.Error(), "If-None-Match") {
		t.Fatalf("prepare behind a proxy that ignores conditional writes: %v, want a refusal naming If-None-Match", err)
	}
	// Through store.Create (backup-cli init) the same refusal, and no store.
	u := "s3://noconditional2/x?endpoint=" + strings.TrimPrefix(ps.URL, "http://") + "&tls=false&path-style=true&region=us-east-1"
	if _, _, err := store.Create(context.Background(), u, store.Options{}); err == nil || !strings.Contains(err.Error(), "conditional writes") {
		t.Fatalf("create: %v", err)
	}
	if _, err := store.Open(context.Background(), u, store.Options{}); !errors.Is(err, store.ErrNotStore) {
		t.Fatalf("open after the refused create: %v, want ErrNotStore", err)
	}
}
