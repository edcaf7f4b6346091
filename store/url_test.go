package store_test

import (
	"strings"
	"testing"

	"github.com/clnbackup/backup/store"
)

// TestParseURL checks the URL forms the legacy plugin accepted and refused.
func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw          string
		scheme, addr string
		proxy        string
		tls          string
		err          string
	}{
		{raw: "socket:127.0.0.1:1234", scheme: "socket", addr: "127.0.0.1:1234"},
		{raw: "socket:[::1]:1234", scheme: "socket", addr: "[::1]:1234"},
		{raw: "socket:backup.example.org:9737", scheme: "socket", addr: "backup.example.org:9737"},
		{raw: "socket:abcdef.onion:1234?proxy=socks5:127.0.0.1:9050", scheme: "socket", addr: "abcdef.onion:1234", proxy: "127.0.0.1:9050"},
		{raw: "socket:abcdef.onion:1234?proxy=socks5:[::1]:9050", scheme: "socket", addr: "abcdef.onion:1234", proxy: "[::1]:9050"},
		{raw: "socket:h:1234?tls=system", scheme: "socket", addr: "h:1234", tls: "system"},
		{raw: "socket:h:1234?tls=abababababababababababababababababababababababababababababababab", scheme: "socket", addr: "h:1234", tls: "abababababababababababababababababababababababababababababababab"},
		{raw: "socket:h:1234?tls=ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB", scheme: "socket", addr: "h:1234", tls: "abababababababababababababababababababababababababababababababab"},
		{raw: "socket:abcdef.onion:1234?proxy=socks5:127.0.0.1:9050&tls=abababababababababababababababababababababababababababababababab", scheme: "socket", addr: "abcdef.onion:1234", proxy: "127.0.0.1:9050", tls: "abababababababababababababababababababababababababababababababab"},
		{raw: "socket:h:1234?tls=abcd", err: "64-hex-digit"},
		{raw: "socket:h:1234?tls=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", err: "not hex"},
		{raw: "socket:h:1234?tls=system&tls=system", err: "tls given 2 times"},
		{raw: "socket:127.0.0.1", err: "missing port"},
		{raw: "socket:::1:1234", err: "brackets"},
		{raw: "socket:127.0.0.1:99999", err: "port"},
		{raw: "socket:127.0.0.1:1234?timeout=5", err: "unknown parameter"},
		{raw: "socket:h:1234?proxy=http:127.0.0.1:8080", err: "only socks5"},
		{raw: "socket:h:1234?proxy=socks5:127.0.0.1", err: "proxy"},
		{raw: "socket:", err: "no host"},
		{raw: "file:///srv/store", scheme: "file"},
		{raw: "file:///srv/store?x=1", err: "query"},
		{raw: "gs://bucket", err: "unsupported scheme"},
		{raw: "s3://bk", err: "3 to 63"},
		{raw: "s3://Bucket", err: "lowercase"},
		{raw: "s3://-bucket", err: "lowercase"},
		{raw: "s3://bucket/a/../b", err: "prefix"},
		{raw: "s3://bucket/a//b", err: "prefix"},
		{raw: "s3://bucket?endpoint=http://h:9000", err: "endpoint"},
		{raw: "s3://bucket?endpoint=h", err: "endpoint"},
		{raw: "s3://bucket?tls=maybe", err: "true or false"},
		{raw: "s3://bucket?region=a&region=b", err: "2 times"},
		{raw: "s3://bucket?secret=x", err: "unknown parameter"},
		{raw: "/srv/store", err: "no scheme"},
	} {
		checkURL(t, tc.raw, tc.err, func(u store.URL) bool {
			return u.Scheme == tc.scheme && (tc.scheme != "socket" || (u.Addr == tc.addr && u.Proxy == tc.proxy && u.TLS == tc.tls))
		})
	}
}

// TestParseS3URL checks the parts of s3:// URLs.
func TestParseS3URL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw  string
		want store.URL
	}{
		{"s3://my-bucket", store.URL{Scheme: "s3", Bucket: "my-bucket"}},
		{"s3://my.bucket/nodes-a/x/", store.URL{Scheme: "s3", Bucket: "my.bucket", Prefix: "nodes-a/x"}},
		{"s3://bkt/p?endpoint=127.0.0.1:7070&region=us-east-1&tls=false&path-style=true",
			store.URL{Scheme: "s3", Bucket: "bkt", Prefix: "p", Endpoint: "127.0.0.1:7070", Region: "us-east-1", Insecure: true, PathStyle: true}},
		{"s3://bkt?endpoint=acc.r2.cloudflarestorage.com:443&region=auto", store.URL{Scheme: "s3", Bucket: "bkt", Endpoint: "acc.r2.cloudflarestorage.com:443", Region: "auto"}},
	} {
		checkURL(t, tc.raw, "", func(u store.URL) bool {
			tc.want.Raw = tc.raw
			return u == tc.want
		})
	}
}

func checkURL(t *testing.T, raw, wantErr string, ok func(store.URL) bool) {
	t.Helper()
	for _, tc := range []struct{ raw, err string }{{raw, wantErr}} {
		u, err := store.ParseURL(tc.raw)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want one containing %q", tc.raw, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.raw, err)
			continue
		}
		if !ok(u) {
			t.Errorf("%s: got %+v", tc.raw, u)
		}
	}
}
