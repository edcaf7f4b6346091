package backend_test

import (
	"path"
	"strings"
	"testing"

	"github.com/clnbackup/backup/store/backend"
)

func TestValidNameAndPrefix(t *testing.T) {
	t.Parallel()
	tests := []struct {
		s            string
		name, prefix bool
	}{
		{"", false, true},
		{"config", true, true},
		{"nodes/", false, true},
		{"nodes/alice/manifests/00000000000000000001", true, true},
		{"nodes/al", true, true},
		{"/etc/passwd", false, false},
		{"nodes/alice/../../../../usr/", false, false},
		{"..", false, false},
		{"nodes/.", false, false},
		{"nodes//a", false, false},
		{"nodes\\a", false, false},
		{"nodes/a\x00b", false, false},
		{"nodes/é", false, false},
		{strings.Repeat("a", 512), true, true},
		{strings.Repeat("a", 513), false, false},
	}
	for _, tc := range tests {
		if err := backend.ValidName(tc.s); (err == nil) != tc.name {
			t.Errorf("ValidName(%q) = %v, want ok %v", tc.s, err, tc.name)
		}
		if err := backend.ValidPrefix(tc.s); (err == nil) != tc.prefix {
			t.Errorf("ValidPrefix(%q) = %v, want ok %v", tc.s, err, tc.prefix)
		}
	}
}

// FuzzValidName: whatever bytes a client sends, an accepted name or prefix
// is a clean relative path (joining it to a directory stays inside), and
// every valid name is also a valid prefix.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"", "config", "nodes/a/", "a/../b", "/x", "a//b", "a\\b", "..", strings.Repeat("ab/", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		nameErr, prefixErr := backend.ValidName(s), backend.ValidPrefix(s)
		if nameErr == nil && prefixErr != nil {
			t.Fatalf("%q: a valid name but not a valid prefix: %v", s, prefixErr)
		}
		if prefixErr != nil {
			return
		}
		trimmed := strings.TrimSuffix(s, "/")
		if trimmed == "" {
			return
		}
		if path.Clean(trimmed) != trimmed || path.IsAbs(trimmed) || strings.HasPrefix(trimmed, "..") ||
			strings.ContainsAny(s, "\\\x00") || len(s) > backend.MaxNameLength {
			t.Fatalf("%q accepted but not a clean relative path", s)
		}
		for seg := range strings.SplitSeq(trimmed, "/") {
			if seg == "." || seg == ".." || seg == "" {
				t.Fatalf("%q accepted with segment %q", s, seg)
			}
		}
	})
}

func TestCheckRange(t *testing.T) {
	t.Parallel()
	const max = int64(^uint64(0) >> 1)
	tests := []struct {
		off, length, size, want int64
		ok                      bool
	}{
		{0, -1, 10, 10, true},
		{3, -1, 10, 7, true},
		{10, 0, 10, 0, true},
		{9, 1, 10, 1, true},
		{1, max, 10, 0, false},
		{max, 1, 10, 0, false},
		{-1, 1, 10, 0, false},
		{-max - 1, 2, 10, 0, false},
		{11, -1, 10, 0, false},
		{0, 11, 10, 0, false},
	}
	for _, tc := range tests {
		got, err := backend.CheckRange("x", tc.off, tc.length, tc.size)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("CheckRange(%d, %d, %d) = %d, %v; want %d ok %v", tc.off, tc.length, tc.size, got, err, tc.want, tc.ok)
		}
	}
}
