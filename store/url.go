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
)

// URL is a parsed store URL.
type URL struct {
	Scheme string // "file" or "socket"
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
//     socks5 are errors), with TLS when tls= is given (see URL.TLS).
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
	default:
		return URL{}, fmt.Errorf("store URL %q: unsupported scheme %q (supported: file://, socket:)", raw, scheme)
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
