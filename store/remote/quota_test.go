package remote

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"10GiB", 10 << 30, true},
		{"500mib", 500 << 20, true},
		{"1TB", 1e12, true},
		{"4096", 4096, true},
		{"7B", 7, true},
		{"", 0, false},
		{"GiB", 0, false},
		{"10 GiB", 0, false},
		{"10PiB", 0, false},
		{"-1GiB", 0, false},
		{"99999999999TiB", 0, false},
		{"99999999999999999999", 0, false},
	}
	for _, tc := range tests {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseAuthQuota(t *testing.T) {
	t.Parallel()
	tok := strings.Repeat("ab", 20)
	tests := []struct {
		line  string
		quota int64
		ok    bool
	}{
		{tok + " alice", 0, true},
		{tok + " alice,bob quota=10GiB", 10 << 30, true},
		{tok + " alice quota=0", 0, false},
		{tok + " alice quota=lots", 0, false},
		{tok + " alice limit=10GiB", 0, false},
		{tok + " * quota=10GiB", 0, false},
		{tok + " alice quota=1GiB extra", 0, false},
	}
	for _, tc := range tests {
		a, err := ParseAuth(strings.NewReader(tc.line + "\n"))
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v, want ok %v", tc.line, err, tc.ok)
			continue
		}
		if err != nil {
			t.Logf("%q: %v", tc.line, err)
			continue
		}
		id, _ := a.Lookup(tok)
		if id.Quota != tc.quota {
			t.Errorf("%q: quota %d, want %d", tc.line, id.Quota, tc.quota)
		}
	}
}

// FuzzParseAuth: any auth file either loads or fails with an error; a
// quota that loads is positive and only on node tokens.
func FuzzParseAuth(f *testing.F) {
	tok := strings.Repeat("ab", 20)
	f.Add(tok + " alice quota=10GiB\n" + strings.Repeat("cd", 20) + " *\n")
	f.Add("# comment\n" + tok + " a,b\n")
	f.Fuzz(func(t *testing.T, text string) {
		a, err := ParseAuth(strings.NewReader(text))
		if err != nil {
			return
		}
		for _, e := range a.entries {
			if e.id.Quota < 0 || (e.id.Admin && e.id.Quota != 0) {
				t.Fatalf("entry %+v", e.id)
			}
		}
	})
}
