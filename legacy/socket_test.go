package legacy_test

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/legacy"
	"github.com/clnbackup/backup/legacy/legacytest"
	"github.com/clnbackup/backup/replay"
)

var realV1 = filepath.Join("..", "testdata", "legacy-v1.dbak")

// TestFetchFromLegacyServer reads the real v1 backup back from a server
// speaking the legacy protocol: the fetched file restores to the same
// database as the original.
func TestFetchFromLegacyServer(t *testing.T) {
	t.Parallel()
	addr := legacytest.Serve(t, realV1)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fetched := filepath.Join(dir, "fetched.dbak")
	var progress int64
	md, err := legacy.Fetch(t.Context(), conn, fetched, legacy.FetchOptions{Progress: func(n int64) { progress = n }})
	if err != nil {
		t.Fatal(err)
	}
	if md.Version != 400 || md.Protocol != 1 {
		t.Fatalf("metadata %+v", md)
	}
	if st, err := os.Stat(fetched); err != nil || st.Size() != progress || st.Mode().Perm() != 0o600 {
		t.Fatalf("fetched file: %v, %v; progress said %d bytes", st, err, progress)
	}
	got, want := filepath.Join(dir, "got.sqlite3"), filepath.Join(dir, "want.sqlite3")
	if _, err := legacy.Restore(fetched, got, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := legacy.Restore(realV1, want, nil); err != nil {
		t.Fatal(err)
	}
	if diff, err := replay.Diff(got, want); err != nil || len(diff) > 0 {
		t.Fatalf("fetched backup restores differently: %v\n%s", err, strings.Join(diff, "\n"))
	}
}

// scripted is a connection whose peer sends the given bytes, then nothing
// (EOF), and swallows what is written to it.
type scripted struct{ r io.Reader }

func (s scripted) Read(p []byte) (int, error)       { return s.r.Read(p) }
func (s scripted) Write(p []byte) (int, error)      { return len(p), nil }
func (s scripted) Close() error                     { return nil }
func (s scripted) LocalAddr() net.Addr              { return nil }
func (s scripted) RemoteAddr() net.Addr             { return nil }
func (s scripted) SetDeadline(time.Time) error      { return nil }
func (s scripted) SetReadDeadline(time.Time) error  { return nil }
func (s scripted) SetWriteDeadline(time.Time) error { return nil }

func frame(typ byte, payload []byte) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

func metadata(protocol, version uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, protocol)
	b = binary.BigEndian.AppendUint32(b, version)
	b = binary.BigEndian.AppendUint32(b, version-1)
	return frame(0x08, binary.BigEndian.AppendUint64(b, 2))
}

func change(typ byte, version uint32, body []byte) []byte {
	var z bytes.Buffer
	z.Write(binary.BigEndian.AppendUint32(nil, version))
	zw := zlib.NewWriter(&z)
	zw.Write(body)
	zw.Close()
	return frame(typ, z.Bytes())
}

func join(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestFetchRefusesBadServer: what a broken or hostile server sends fails
// with a message naming the problem, within the limits, and leaves no file.
func TestFetchRefusesBadServer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		peer []byte
		want string
	}{
		{"not a legacy server", frame(0x8f, []byte("\x04\x00\x00\x00\x05hello")), "not METADATA"},
		{"other protocol", metadata(2, 5), "protocol 2"},
		{"no entries", join(metadata(1, 5), frame(0x09, nil)), "holds no entries"},
		{"nack", join(metadata(1, 5), frame(0x07, nil)), "NACK"},
		{"unknown frame", join(metadata(1, 5), frame(0x0b, []byte("{}"))), "unexpected frame of type 0x0b"},
		{"not zlib", join(metadata(1, 5), frame(0x01, []byte("\x00\x00\x00\x05not zlib"))), "not zlib-compressed"},
		{"no version", join(metadata(1, 5), frame(0x01, []byte("\x00\x00"))), "too short for its version"},
		{"bomb", join(metadata(1, 5), change(0x02, 5, make([]byte, 1<<20))), "decompresses to more than"},
		{"too many entries", join(metadata(1, 5), bytes.Repeat(change(0x01, 5, make([]byte, 60<<10)), 3)), "limit"},
		{"cut off", join(metadata(1, 5), change(0x01, 5, []byte("SELECT 1"))[:12]), "entry 1"},
		{"silent after metadata", metadata(1, 5), "read answer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dest := filepath.Join(t.TempDir(), "fetched.dbak")
			_, err := legacy.Fetch(t.Context(), scripted{bytes.NewReader(tc.peer)}, dest, legacy.FetchOptions{MaxBytes: 64 << 10})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Fetch: %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(dest); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a failed fetch left %s (%v)", dest, err)
			}
		})
	}
}

// TestFetchTimesOut: a server that never answers (the legacy server busy
// with the plugin's connection) fails after the timeout, saying why.
func TestFetchTimesOut(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	defer server.Close()
	go io.Copy(io.Discard, server)
	_, err := legacy.Fetch(t.Context(), client, filepath.Join(t.TempDir(), "x.dbak"), legacy.FetchOptions{Timeout: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "serves one client at a time") {
		t.Fatalf("Fetch from a silent server: %v", err)
	}
}

// FuzzFetch: whatever a server sends, Fetch neither panics nor writes
// beyond its limit, and a failed fetch leaves no file.
func FuzzFetch(f *testing.F) {
	f.Add(join(metadata(1, 5), change(0x01, 5, []byte("SELECT 1")), frame(0x09, nil)))
	f.Add(join(metadata(1, 5), change(0x02, 4, []byte("SQLite format 3\x00")), change(0x01, 5, nil), frame(0x09, nil)))
	f.Add(metadata(1, 1))
	f.Fuzz(func(t *testing.T, peer []byte) {
		dest := filepath.Join(t.TempDir(), "fetched.dbak")
		const limit = 1 << 20
		_, err := legacy.Fetch(t.Context(), scripted{bytes.NewReader(peer)}, dest, legacy.FetchOptions{MaxBytes: limit})
		st, serr := os.Stat(dest)
		switch {
		case err != nil && !errors.Is(serr, fs.ErrNotExist):
			t.Fatalf("failed fetch (%v) left its file", err)
		case err == nil && (serr != nil || st.Size() > limit):
			t.Fatalf("fetched file: %v, %v", st, serr)
		}
	})
}
