package store

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/clnbackup/backup/store/backend"
)

// URL is a parsed store URL.
type URL struct {
	Scheme string // "file", "socket" or "s3"
	// Path is the local path of a file:// URL, made absolute.
	Path string
	// Addr is the HOST:PORT of a socket: URL (IPv6 in brackets), and
	// Proxy the HOST:PORT of its SOCKS5 proxy ("" for none).
	Addr  string
	Proxy string
	// TLS is how a socket: URL's connection is encrypted: "" for none
	// (plaintext, for loopback, Tor, WireGuard or SSH tunnels), "system"
	// to verify the server's certificate against the system's roots and
	// the host name, or a pin: the SHA-256 of the server key's
	// SubjectPublicKeyInfo as 64 lowercase hex digits (what backup-cli
	// server --tls-self-signed prints), checked instead of any chain, so
	// a self-signed server is safe to reach over the internet.
	TLS string
	// Bucket, Prefix (no leading or trailing slash, "" for the bucket's
	// root), Endpoint (HOST:PORT, "" for AWS), Region ("" to ask the
	// endpoint), PathStyle and Insecure (tls=false: plain HTTP) are an
	// s3:// URL's.
	Bucket, Prefix, Endpoint, Region string
	PathStyle, Insecure              bool
	// Raw is the URL as given.
	Raw string
}

// String is the URL as given.
func (u URL) String() string { return u.Raw }

// ParseURL parses a store URL:
//   - file:///absolute/path and file://relative/path: a directory store, or
//     a legacy v1 backup file;
//   - socket:HOST:PORT[?proxy=socks5:PHOST:PPORT][&tls=FINGERPRINT|system]:
//     a store server, as the legacy plugin wrote it (IPv6 addresses in
//     brackets; unknown parameters, a missing port and proxies other than
//     socks5 are errors), with TLS when tls= is given (see URL.TLS);
//   - s3://BUCKET[/PREFIX][?endpoint=HOST:PORT&region=R&tls=false&path-style=true]:
//     a store in an S3-compatible bucket (see parseS3).
func ParseURL(raw string) (URL, error) {
	if rest, ok := strings.CutPrefix(raw, "socket:"); ok {
		return parseSocket(raw, rest)
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return URL{}, fmt.Errorf("store URL %q has no scheme: write file:///absolute/path/to/store or socket:HOST:PORT", raw)
	}
	switch scheme {
	case "file":
		if rest == "" {
			return URL{}, fmt.Errorf("store URL %q has no path: write file:///absolute/path/to/store", raw)
		}
		if strings.ContainsAny(rest, "?#") {
			return URL{}, fmt.Errorf("store URL %q: query and fragment are not supported for file://", raw)
		}
		p, err := filepath.Abs(rest)
		if err != nil {
			return URL{}, fmt.Errorf("store URL %q: %w", raw, err)
		}
		return URL{Scheme: "file", Path: p, Raw: raw}, nil
	case "s3":
		return parseS3(raw, rest)
	default:
		return URL{}, fmt.Errorf("store URL %q: unsupported scheme %q (supported: file://, socket:, s3://)", raw, scheme)
	}
}

func parseSocket(raw, rest string) (URL, error) {
	rest = strings.TrimPrefix(rest, "//") // tolerate socket://HOST:PORT
	hostport, query, _ := strings.Cut(rest, "?")
	addr, err := checkHostPort(hostport)
	if err != nil {
		return URL{}, fmt.Errorf("store URL %q: %w (write socket:HOST:PORT, socket:[::1]:PORT)", raw, err)
	}
	u := URL{Scheme: "socket", Addr: addr, Raw: raw}
	if query == "" {
		return u, nil
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return URL{}, fmt.Errorf("store URL %q: bad query: %w", raw, err)
	}
	for k, vs := range q {
		if k != "proxy" && k != "tls" {
			return URL{}, fmt.Errorf("store URL %q: unknown parameter %q (the parameters are proxy=socks5:HOST:PORT and tls=FINGERPRINT or tls=system)", raw, k)
		}
		if len(vs) != 1 {
			return URL{}, fmt.Errorf("store URL %q: %s given %d times", raw, k, len(vs))
		}
		if k == "tls" {
			if u.TLS, err = checkTLS(vs[0]); err != nil {
				return URL{}, fmt.Errorf("store URL %q: %w", raw, err)
			}
			continue
		}
		typ, paddr, ok := strings.Cut(vs[0], ":")
		if !ok || typ != "socks5" {
			return URL{}, fmt.Errorf("store URL %q: proxy %q: only socks5:HOST:PORT proxies are supported", raw, vs[0])
		}
		if u.Proxy, err = checkHostPort(paddr); err != nil {
			return URL{}, fmt.Errorf("store URL %q: proxy: %w", raw, err)
		}
	}
	return u, nil
}

// checkTLS checks a tls= value: "system" or a SHA-256 fingerprint in hex
// (either case; returned in lowercase).
func checkTLS(v string) (string, error) {
	if v == "system" {
		return v, nil
	}
	if len(v) != 2*sha256.Size {
		return "", fmt.Errorf("tls=%q: want tls=system or the server's 64-hex-digit SHA-256 key fingerprint (backup-cli server --tls-self-signed prints it)", v)
	}
	if _, err := hex.DecodeString(v); err != nil {
		return "", fmt.Errorf("tls=%q: the fingerprint is not hex: copy it from the server's log (backup-cli server --tls-self-signed prints it)", v)
	}
	return strings.ToLower(v), nil
}

// checkHostPort checks HOST:PORT with a bracketed IPv6 host and a port.
func checkHostPort(hp string) (string, error) {
	if hp == "" {
		return "", fmt.Errorf("no host and port")
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		if strings.Count(hp, ":") > 1 && !strings.HasPrefix(hp, "[") {
			return "", fmt.Errorf("address %q: an IPv6 address must be in brackets", hp)
		}
		return "", fmt.Errorf("address %q: %v", hp, err)
	}
	if host == "" {
		return "", fmt.Errorf("address %q has no host", hp)
	}
	if strings.Contains(host, ":") && !strings.HasPrefix(hp, "[") {
		return "", fmt.Errorf("address %q: an IPv6 address must be in brackets", hp)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("address %q: port %q is not a number from 1 to 65535", hp, port)
	}
	return net.JoinHostPort(host, port), nil
}

// parseS3 parses the part of an s3:// URL after the scheme. The bucket name
// follows S3's rules (3 to 63 lowercase letters, digits, '.' and '-'); the
// prefix is one or more object-name segments (letters, digits, '.', '_',
// '-'), so that no key of the store can leave it. Parameters: endpoint
// (HOST:PORT; default AWS), region, tls=false (plain HTTP, for loopback or
// a private network) and path-style=true (bucket in the path, not the host
// name: MinIO, Garage, Ceph and versitygw usually need it). Unknown or
// repeated parameters are errors, so a typo never silently reaches AWS.
func parseS3(raw, rest string) (URL, error) {
	path, query, _ := strings.Cut(rest, "?")
	bucket, prefix, _ := strings.Cut(path, "/")
	prefix = strings.TrimSuffix(prefix, "/")
	if err := checkBucket(bucket); err != nil {
		return URL{}, fmt.Errorf("store URL %q: %w (write s3://BUCKET[/PREFIX][?endpoint=HOST:PORT&region=R&tls=false&path-style=true])", raw, err)
	}
	if prefix != "" {
		if err := backend.ValidName(prefix); err != nil {
			return URL{}, fmt.Errorf("store URL %q: prefix %q: segments of letters, digits, '.', '_' and '-' only, none starting with '.'", raw, prefix)
		}
	}
	u := URL{Scheme: "s3", Bucket: bucket, Prefix: prefix, Raw: raw}
	q, err := url.ParseQuery(query)
	if err != nil {
		return URL{}, fmt.Errorf("store URL %q: bad query: %w", raw, err)
	}
	for k, vs := range q {
		if len(vs) != 1 {
			return URL{}, fmt.Errorf("store URL %q: %s given %d times", raw, k, len(vs))
		}
		v := vs[0]
		switch k {
		case "endpoint":
			if u.Endpoint, err = checkHostPort(v); err != nil {
				return URL{}, fmt.Errorf("store URL %q: endpoint: %w (write endpoint=HOST:PORT, without http://)", raw, err)
			}
		case "region":
			if v == "" || strings.ContainsAny(v, "/ ") {
				return URL{}, fmt.Errorf("store URL %q: region %q is not a region name (e.g. us-east-1, auto for R2)", raw, v)
			}
			u.Region = v
		case "tls", "path-style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return URL{}, fmt.Errorf("store URL %q: %s=%q: write true or false", raw, k, v)
			}
			if k == "tls" {
				u.Insecure = !b
			} else {
				u.PathStyle = b
			}
		default:
			return URL{}, fmt.Errorf("store URL %q: unknown parameter %q (the parameters are endpoint=HOST:PORT, region=R, tls=false and path-style=true)", raw, k)
		}
	}
	return u, nil
}

// checkBucket checks S3's bucket naming rules.
func checkBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q: must be 3 to 63 characters", b)
	}
	for i, c := range []byte(b) {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || ((c == '.' || c == '-') && i > 0 && i < len(b)-1)
		if !ok {
			return fmt.Errorf("bucket name %q: lowercase letters, digits, and '.' or '-' between them only", b)
		}
	}
	return nil
}
