package legacy

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// pyWriter builds v1 files in tests the way the Python plugin's file backend
// writes them: each entry is appended at the end of the file (the backend's
// file is opened in append mode, so its seek to offset_head has no effect),
// then the header is rewritten; a rewind only changes the writer's memory.
type pyWriter struct {
	body []byte // everything after the header
	hdr  [HeaderSize]byte

	version, prevVersion uint32
	head, prev           uint64
	count                uint64
}

func newPyWriter() *pyWriter {
	w := &pyWriter{head: HeaderSize}
	w.writeHeader()
	return w
}

func (w *pyWriter) writeHeader() {
	var h [HeaderSize]byte
	binary.BigEndian.PutUint32(h[0:], FileVersion)
	binary.BigEndian.PutUint32(h[4:], w.version)
	binary.BigEndian.PutUint64(h[8:], w.head)
	binary.BigEndian.PutUint32(h[16:], w.prevVersion)
	binary.BigEndian.PutUint64(h[20:], w.prev)
	binary.BigEndian.PutUint64(h[28:], w.count)
	w.hdr = h
}

// appendEntry writes an entry at the end of the file without touching the
// header: what is on disk when the plugin dies between the two writes.
func (w *pyWriter) appendEntry(version uint32, kind EntryKind, payload []byte) {
	w.body = binary.BigEndian.AppendUint32(w.body, uint32(len(payload)))
	w.body = binary.BigEndian.AppendUint32(w.body, version)
	w.body = append(w.body, byte(kind))
	w.body = append(w.body, payload...)
}

func (w *pyWriter) add(version uint32, kind EntryKind, payload []byte) {
	w.appendEntry(version, kind, payload)
	w.prevVersion, w.prev = w.version, w.head
	w.version = version
	w.head += EntryHeaderSize + uint64(len(payload))
	w.count++
	w.writeHeader()
}

func (w *pyWriter) change(version uint32, stmts ...string) {
	w.add(version, Change, []byte(strings.Join(stmts, "\x00")))
}

func (w *pyWriter) snapshot(version uint32, db []byte) { w.add(version, Snapshot, db) }

// rewind drops the last entry from the writer's idea of the file.
func (w *pyWriter) rewind() {
	w.version, w.head = w.prevVersion, w.prev
	w.prevVersion, w.prev = 0, 0
}

func (w *pyWriter) bytes() []byte {
	return append(append([]byte(nil), w.hdr[:]...), w.body...)
}

func (w *pyWriter) file(t *testing.T) string {
	t.Helper()
	return writeTemp(t, w.bytes())
}

func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "backup.dbak")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Statements of a small lightningd-like history: version 1 creates the
// schema, every later version inserts one row; each ends like lightningd's
// transactions by bumping data_version.
func bump(v uint32) string {
	return "UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = " + uitoa(v-1)
}

func uitoa(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func schema() []string {
	return []string{
		"CREATE TABLE vars (name TEXT, val TEXT, intval INTEGER, blobval BLOB, PRIMARY KEY (name))",
		"INSERT INTO vars (name, intval) VALUES ('data_version', 0)",
		"CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)",
		bump(1),
	}
}

func row(v uint32, key string) []string {
	return []string{"INSERT INTO kv VALUES ('" + key + "', 'value at " + uitoa(v) + "')", bump(v)}
}
