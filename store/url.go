package store

import (
	"fmt"
	"path/filepath"
	"strings"
)

// URL is a parsed store URL.
type URL struct {
	Scheme string // "file"
	// Path is the local path of a file:// URL, made absolute.
	Path string
}

// ParseURL parses a store URL. Supported: file:///absolute/path and
// file://relative/path (a directory store, or a legacy v1 backup file).
func ParseURL(raw string) (URL, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		if strings.HasPrefix(raw, "socket:") {
			return URL{}, fmt.Errorf("store URL %q: the socket: scheme is not supported yet; use file:///path", raw)
		}
		return URL{}, fmt.Errorf("store URL %q has no scheme: write file:///absolute/path/to/store", raw)
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
		return URL{Scheme: "file", Path: p}, nil
	default:
		return URL{}, fmt.Errorf("store URL %q: unsupported scheme %q (supported: file://)", raw, scheme)
	}
}
