package s3_test

import (
	"context"
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
