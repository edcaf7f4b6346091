// Package manifest defines a node's restore points. A manifest is immutable:
// it names one snapshot of the node's database (as list chunks of page IDs)
// and the sealed change chunks that follow it. It is written last, after
// everything it names is durable, so its existence is the commit point of a
// restore point. This package only encodes and decodes; it does no I/O.
package manifest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/zeebo/blake3"
)

// FormatVersion is the manifest format this code writes and reads.
const FormatVersion = 1

// MaxSize bounds an encoded manifest; decoding refuses anything larger.
const MaxSize = 64 << 20

// magic starts every encoded manifest.
const magic = "clnbackup-manifest"

// Manifest is one restore point of one node.
type Manifest struct {
	// Format is the manifest format version (FormatVersion).
	Format int `json:"format"`
	// Node is the node the manifest belongs to.
	Node string `json:"node"`
	// Seq numbers the node's manifests 1, 2, 3...; a higher one is newer.
	Seq uint64 `json:"seq"`
	// Created is when the manifest was written.
	Created time.Time `json:"created"`
	// Snapshot is the database the restore point starts from.
	Snapshot Snapshot `json:"snapshot"`
	// Changes are the sealed change chunks to apply after the snapshot, in
	// order.
	Changes []ChangeRef `json:"changes,omitempty"`
	// JournalSeq is the last journal record the snapshot and Changes
	// cover: the node's journal records after it are newer than this
	// restore point.
	JournalSeq uint64 `json:"journal_seq"`
	// Stats records what writing this restore point cost the store.
	Stats Stats `json:"stats"`
}

// Snapshot describes a database file as pages stored in chunks.
type Snapshot struct {
	// Version is the database's data_version (0 for an empty database).
	Version uint32 `json:"data_version"`
	// PageSize is the database page size in bytes (0 for an empty database).
	PageSize uint32 `json:"page_size"`
	// Pages is the number of pages; the file is Pages*PageSize bytes.
	Pages uint32 `json:"pages"`
	// Lists are list chunks holding the page IDs in page order.
	Lists []chunker.ID `json:"lists,omitempty"`
	// Patches are patch chunks applied in order on top of Lists: each sets
	// the page count and replaces some page IDs. They let a snapshot that
	// differs from the previous one in scattered pages cost only those
	// pages' IDs instead of rewriting every list chunk they touch.
	Patches []chunker.ID `json:"patches,omitempty"`
}

// Size is the database file size in bytes.
func (s Snapshot) Size() int64 { return int64(s.Pages) * int64(s.PageSize) }

// ChangeRef names one sealed change chunk: a run of journal records.
type ChangeRef struct {
	ID           chunker.ID `json:"id"`
	FirstSeq     uint64     `json:"first_seq"`
	LastSeq      uint64     `json:"last_seq"`
	FirstVersion uint32     `json:"first_version"`
	LastVersion  uint32     `json:"last_version"`
	Records      int        `json:"records"`
}

// Stats is what a manifest added to the store when it was written.
type Stats struct {
	// AddedBytes is the bytes of packs and indexes that writing the
	// restore point added to the store (the manifest object itself, a few
	// KiB, is not counted).
	AddedBytes int64 `json:"added_bytes"`
	// NewChunks is the number of chunks that were not in the store yet.
	NewChunks int `json:"new_chunks"`
	// ReusedChunks is the number of chunk references that needed no new
	// chunk: found in the store, or repeated within the restore point.
	ReusedChunks int `json:"reused_chunks"`
}

// LastVersion is the data_version this restore point restores to.
func (m *Manifest) LastVersion() uint32 {
	if n := len(m.Changes); n > 0 {
		return m.Changes[n-1].LastVersion
	}
	return m.Snapshot.Version
}

// Encode returns the stored form: a first line "clnbackup-manifest 1", the
// manifest as JSON, and a last line with the BLAKE3-256 of everything before
// it, so that truncation or any flipped byte is detected on read.
func Encode(m *Manifest) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "%s %d\n", magic, FormatVersion)
	body, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest %d of node %q: %w", m.Seq, m.Node, err)
	}
	buf.Write(body)
	buf.WriteByte('\n')
	sum := blake3.Sum256(buf.Bytes())
	fmt.Fprintf(&buf, "blake3 %s\n", hex.EncodeToString(sum[:]))
	return buf.Bytes(), nil
}

// ErrUnknownFormat is returned (wrapped) for a manifest of a format version
// this code does not know.
var ErrUnknownFormat = errors.New("unknown manifest format version")

// Decode parses and checks a stored manifest.
func Decode(b []byte) (*Manifest, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("manifest of %d bytes exceeds the %d-byte limit", len(b), MaxSize)
	}
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return nil, errors.New("manifest truncated: no header line")
	}
	var version int
	if _, err := fmt.Sscanf(string(b[:nl]), magic+" %d", &version); err != nil {
		return nil, fmt.Errorf("not a manifest: header line %q", truncate(b[:nl]))
	}
	if version != FormatVersion {
		return nil, fmt.Errorf("%w %d (this program reads version %d): upgrade backup-cli", ErrUnknownFormat, version, FormatVersion)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, errors.New("manifest truncated: no checksum line")
	}
	last := bytes.LastIndexByte(b[:len(b)-1], '\n')
	if last < nl {
		return nil, errors.New("manifest truncated: no checksum line")
	}
	sumLine := string(b[last+1 : len(b)-1])
	const sumPrefix = "blake3 "
	if len(sumLine) != len(sumPrefix)+64 || sumLine[:len(sumPrefix)] != sumPrefix {
		return nil, fmt.Errorf("manifest truncated or damaged: bad checksum line %q", truncate([]byte(sumLine)))
	}
	want, err := hex.DecodeString(sumLine[len(sumPrefix):])
	if err != nil {
		return nil, fmt.Errorf("manifest damaged: checksum line: %w", err)
	}
	got := blake3.Sum256(b[:last+1])
	if !bytes.Equal(got[:], want) {
		return nil, errors.New("manifest damaged: checksum mismatch")
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b[nl+1 : last+1]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest damaged: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the invariants every manifest must hold.
func (m *Manifest) Validate() error {
	if m.Format != FormatVersion {
		return fmt.Errorf("%w %d", ErrUnknownFormat, m.Format)
	}
	if err := ValidNodeName(m.Node); err != nil {
		return fmt.Errorf("manifest %d: %w", m.Seq, err)
	}
	if m.Seq == 0 {
		return fmt.Errorf("manifest of node %q: sequence number 0", m.Node)
	}
	s := m.Snapshot
	if s.Pages > MaxPages {
		return fmt.Errorf("manifest %d of node %q: %d pages exceed the limit of %d", m.Seq, m.Node, s.Pages, MaxPages)
	}
	if s.Pages > 0 {
		if s.PageSize < 512 || s.PageSize > 65536 || s.PageSize&(s.PageSize-1) != 0 {
			return fmt.Errorf("manifest %d of node %q: bad page size %d", m.Seq, m.Node, s.PageSize)
		}
		if len(s.Lists) == 0 {
			return fmt.Errorf("manifest %d of node %q: %d pages but no list chunks", m.Seq, m.Node, s.Pages)
		}
	}
	prev := m.JournalSeq
	for i, c := range m.Changes {
		if c.Records <= 0 || c.FirstSeq > c.LastSeq {
			return fmt.Errorf("manifest %d of node %q: change chunk %d: bad record range", m.Seq, m.Node, i)
		}
		if i > 0 && c.FirstSeq <= m.Changes[i-1].LastSeq {
			return fmt.Errorf("manifest %d of node %q: change chunk %d out of order", m.Seq, m.Node, i)
		}
		prev = c.LastSeq
	}
	if len(m.Changes) > 0 && prev != m.JournalSeq {
		return fmt.Errorf("manifest %d of node %q: journal_seq %d differs from last change record %d", m.Seq, m.Node, m.JournalSeq, prev)
	}
	return nil
}

// ValidNodeName checks a node name: 1 to 64 letters, digits, '.', '_' or
// '-', starting with a letter or digit. Node names become object names, so
// anything that could climb out of the node's namespace ("../x") is refused.
func ValidNodeName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("invalid node name %q: must be 1 to 64 characters", name)
	}
	for i, c := range name {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || (c != '.' && c != '_' && c != '-')) {
			return fmt.Errorf("invalid node name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", name)
		}
	}
	return nil
}

func truncate(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "..."
	}
	return string(b)
}
