package crypt

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestKeyFileRoundTrip(t *testing.T) {
	t.Parallel()
	mk := NewMasterKey()
	tests := []struct {
		name string
		kf   KeyFile
	}{
		{"master", mk.KeyFile()},
		{"unlock", NewUnlockKeyFile()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			line := tc.kf.Format()
			if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 || len(line) > 100 {
				t.Fatalf("not one short line: %q", line)
			}
			for _, in := range []string{line, strings.TrimSpace(line), "  \t" + line + "\r\n\n"} {
				got, err := ParseKeyFile([]byte(in))
				if err != nil {
					t.Fatalf("ParseKeyFile(%q): %v", in, err)
				}
				if got != tc.kf {
					t.Fatalf("round trip changed the key file")
				}
			}
		})
	}
	got, err := ParseKeyFile([]byte(mk.KeyFile().Format()))
	if err != nil {
		t.Fatal(err)
	}
	back, err := got.MasterKey()
	if err != nil || back != mk {
		t.Fatalf("master key from key file: %v", err)
	}
	if _, err := NewUnlockKeyFile().MasterKey(); err == nil {
		t.Fatal("an unlock key file gave a master key")
	}
}

func TestParseKeyFileRefuses(t *testing.T) {
	t.Parallel()
	var mk MasterKey
	copy(mk.b[:], "a fixed key whose check has a-f.")
	good := strings.TrimSpace(mk.KeyFile().Format())
	check := good[len(good)-8:]
	if strings.ToUpper(check) == check || check[7] == '0' {
		t.Fatalf("test key's check %s has no letter or ends in 0: pick another", check)
	}
	parts := strings.Split(good, ":")
	rejoin := func(p0, p1, p2, p3 string) string {
		body := p0 + ":" + p1 + ":" + p2
		return body + ":" + keyFileCheck(body)
	}
	flip := []byte(good)
	i := len(keyFilePrefix) + len(":master:") + 3
	flip[i] ^= 1 // one character of the key mistyped
	tests := []struct {
		name, in string
	}{
		{"empty", ""},
		{"whitespace", " \n"},
		{"two lines", good + "\n" + good},
		{"inner space", strings.Replace(good, ":", ": ", 1)},
		{"wrong prefix", rejoin("clnbackup-key-v2", parts[1], parts[2], "")},
		{"unknown kind", rejoin(parts[0], "admin", parts[2], "")},
		{"upper kind", rejoin(parts[0], "MASTER", parts[2], "")},
		{"mistyped key", string(flip)},
		{"bad check", good[:len(good)-1] + "0"},
		{"upper check", good[:len(good)-8] + strings.ToUpper(check)},
		{"no check", parts[0] + ":" + parts[1] + ":" + parts[2]},
		{"extra field", good + ":x"},
		{"short key", rejoin(parts[0], parts[1], parts[2][:42], "")},
		{"long key", rejoin(parts[0], parts[1], parts[2]+"A", "")},
		{"padded key", rejoin(parts[0], parts[1], parts[2]+"=", "")},
		{"std base64", rejoin(parts[0], parts[1], strings.Repeat("+", 43), "")},
		{"non-canonical last char", rejoin(parts[0], parts[1], parts[2][:42]+"B", "")},
		{"huge", strings.Repeat(" ", maxKeyFileSize) + good},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kf, err := ParseKeyFile([]byte(tc.in))
			if err == nil {
				t.Fatalf("ParseKeyFile(%.60q) accepted: %v", tc.in, kf)
			}
			if !errors.Is(err, errKeyFile) {
				t.Fatalf("error does not wrap errKeyFile: %v", err)
			}
		})
	}
}

func TestKeyFileDoesNotPrint(t *testing.T) {
	t.Parallel()
	kf := NewUnlockKeyFile()
	secret := strings.Split(kf.Format(), ":")[2]
	s := fmt.Sprintf("%v %+v %#v %s", kf, kf, kf, kf)
	if strings.Contains(s, secret) || strings.Contains(s, fmt.Sprint(kf.secret[0], " ", kf.secret[1])) {
		t.Fatalf("formatted key file shows its secret: %s", s)
	}
}

func FuzzParseKeyFile(f *testing.F) {
	f.Add([]byte(NewMasterKey().KeyFile().Format()))
	f.Add([]byte(NewUnlockKeyFile().Format()))
	f.Add([]byte("clnbackup-key-v1:master::"))
	f.Add([]byte(":::"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Also with the check fixed up, so that the fuzzer reaches what
		// follows the check.
		fixed := string(data)
		if i := strings.LastIndexByte(fixed, ':'); i >= 0 {
			body := strings.TrimSpace(fixed[:i])
			fixed = body + ":" + keyFileCheck(body)
		}
		for _, in := range [][]byte{data, []byte(fixed)} {
			kf, err := ParseKeyFile(in)
			if err != nil {
				continue
			}
			// What parses formats back to the same line.
			if got := kf.Format(); got != strings.TrimSpace(string(in))+"\n" {
				t.Fatalf("ParseKeyFile(%q) formats as %q", in, got)
			}
		}
	})
}
