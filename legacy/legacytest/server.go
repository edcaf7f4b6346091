// Package legacytest runs, for tests, a server speaking the Python backup
// plugin's socket protocol over a v1 backup file, as that plugin's
// `backup-cli server` does (reference: /work/shared/reference/legacy-backup.md),
// so that reading a backup back from such a server is tested against the
// protocol rather than against our own client.
package legacytest

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/clnbackup/backup/legacy"
)

// Frame types of the legacy protocol.
const (
	typChange      = 0x01
	typSnapshot    = 0x02
	typReqMetadata = 0x04
	typRestore     = 0x05
	typNack        = 0x07
	typMetadata    = 0x08
	typDone        = 0x09
)

// Serve serves the v1 backup file at path on a loopback port until the test
// ends, one connection at a time (the legacy server's way), and returns
// its HOST:PORT. It answers REQ_METADATA from the file's header and
// RESTORE with the file's entries up to the first one at the header's
// version (the legacy FileBackend.stream_changes loop), each payload
// zlib-compressed after its u32 version, then DONE; other requests get NACK.
func Serve(t testing.TB, path string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if err := serveConn(c, path); err != nil && !errors.Is(err, io.EOF) {
				t.Logf("legacy test server: %v", err)
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

func serveConn(c net.Conn, path string) error {
	for {
		var h [5]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return err
		}
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(h[1:]))); err != nil {
			return err
		}
		var err error
		switch h[0] {
		case typReqMetadata:
			err = sendMetadata(c, path)
		case typRestore:
			err = sendEntries(c, path)
		default:
			err = send(c, typNack, nil)
		}
		if err != nil {
			return err
		}
	}
}

func send(w io.Writer, typ byte, payload []byte) error {
	h := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	_, err := w.Write(append(h, payload...))
	return err
}

func sendMetadata(w io.Writer, path string) error {
	f, err := legacy.OpenFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	hd := f.Header()
	b := binary.BigEndian.AppendUint32(nil, 1)
	b = binary.BigEndian.AppendUint32(b, hd.Version)
	b = binary.BigEndian.AppendUint32(b, hd.PrevVersion)
	b = binary.BigEndian.AppendUint64(b, hd.VersionCount)
	return send(w, typMetadata, b)
}

var errStop = errors.New("stop")

func sendEntries(w io.Writer, path string) error {
	f, err := legacy.OpenFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	want := f.Header().Version
	err = f.Entries(func(e legacy.Entry) error {
		var body []byte
		typ := byte(typChange)
		if e.Kind == legacy.Snapshot {
			typ = typSnapshot
			if body, err = io.ReadAll(e.Snapshot); err != nil {
				return err
			}
		} else {
			body = []byte(strings.Join(e.Statements, "\x00"))
		}
		var z bytes.Buffer
		z.Write(binary.BigEndian.AppendUint32(nil, e.Version))
		zw := zlib.NewWriter(&z)
		zw.Write(body)
		zw.Close()
		if err := send(w, typ, z.Bytes()); err != nil {
			return err
		}
		if e.Version >= want {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return err
	}
	return send(w, typDone, nil)
}
