package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/journal"
)

// Bounds of the objects readers take whole: a store's objects come from its
// host, a server or other nodes, and a read "to the end" would hold
// whatever they hold (backend.ReadWhole).
const (
	// maxNodeObject is the largest object under nodes/ besides journals:
	// a manifest.
	maxNodeObject = manifest.MaxSize
	// maxRecordObject bounds the store's JSON records (its config, node
	// records, leases), which are a few hundred bytes.
	maxRecordObject = 1 << 20
)

// NodeObjectKind is what an object under nodes/<node>/ is, by the store
// layout (docs/store-format.md): a store server lets node tokens touch only
// these, and checks what they put by kind, so one node's client cannot
// leave an object that breaks gc, list or restore for the others.
type NodeObjectKind int

// The kinds of node objects.
const (
	NodeRecord   NodeObjectKind = iota + 1 // nodes/<node>/node.json
	NodeManifest                           // nodes/<node>/manifests/<seq, 20 digits>
	NodeLease                              // nodes/<node>/lease/<gen, 20 digits>
	NodeJournal                            // nodes/<node>/journal/...: the journal service's files
	NodeSecret                             // nodes/<node>/secrets/<name>-<gen, 20 digits>: encrypted stores only
)

func (k NodeObjectKind) String() string {
	switch k {
	case NodeRecord:
		return "node record"
	case NodeManifest:
		return "manifest"
	case NodeLease:
		return "lease"
	case NodeJournal:
		return "journal file"
	case NodeSecret:
		return "node secret"
	}
	return fmt.Sprintf("node object kind %d", int(k))
}

// ParseNodeObject classifies an object name under nodes/ by the store
// layout: its node, kind and, for manifests and leases, the sequence
// number or generation its name holds. Any other name under a node (a
// name the layout does not define) is an error saying which names exist.
func ParseNodeObject(name string) (node string, kind NodeObjectKind, seq uint64, err error) {
	if err := backend.ValidName(name); err != nil {
		return "", 0, 0, err
	}
	node, ok := NodeOfObject(name)
	if !ok {
		return "", 0, 0, fmt.Errorf("object %q is not under nodes/<node>/", name)
	}
	if err := manifest.ValidNodeName(node); err != nil {
		return "", 0, 0, fmt.Errorf("object %q: %w", name, err)
	}
	rest := strings.TrimPrefix(name, nodePrefix(node))
	switch dir, file, _ := strings.Cut(rest, "/"); {
	case rest == "node.json":
		return node, NodeRecord, 0, nil
	case dir == "manifests" || dir == "lease":
		n, ok := twentyDigits(file)
		if !ok {
			return "", 0, 0, fmt.Errorf("object %q: a %s name is 20 decimal digits", name, dir)
		}
		if dir == "lease" {
			return node, NodeLease, n, nil
		}
		return node, NodeManifest, n, nil
	case dir == "journal":
		return node, NodeJournal, 0, nil
	case dir == "secrets":
		if _, gen, ok := parseSecretName(file); ok {
			return node, NodeSecret, gen, nil
		}
		return "", 0, 0, fmt.Errorf("object %q: a secret's name is hsm_secret or emergency.recover, a dash and 20 decimal digits", name)
	}
	return "", 0, 0, fmt.Errorf("object %q: the store layout has no such object under a node (node.json, manifests/<20 digits>, lease/<20 digits>, secrets/, journal/)", name)
}

// twentyDigits parses the 20-digit decimal numbers of manifest and lease
// names (ParseUint alone would take "+1" or shorter forms).
func twentyDigits(s string) (uint64, bool) {
	if len(s) != 20 {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// CheckNodeObject checks an object a node's client is about to put under
// nodes/<node>/, by kind, before it is stored: a node record must decode
// and name its node; a lease must decode and name its node and generation;
// a manifest must decode (checksum included), be the node's at the
// sequence its name says, and name change, list and patch chunks the
// store holds, whose content is of those kinds. Anything else is refused. It needs the
// store's packs (a store server's own store).
func (s *Store) CheckNodeObject(ctx context.Context, name string, data []byte) error {
	node, kind, seq, err := ParseNodeObject(name)
	if err != nil {
		return err
	}
	if kind == NodeSecret && !s.cfg.Encrypted() {
		return fmt.Errorf("object %s: node secrets are kept only in encrypted stores", name)
	}
	if s.cfg.Encrypted() && kind != NodeJournal {
		if s.keyring == nil {
			// A keyless server: the envelope's structure is all it sees.
			return checkSealedObject(name, data)
		}
		if data, err = openObject(s.keyring.keys, name, data); err != nil {
			return err
		}
	}
	switch kind {
	case NodeSecret:
	case NodeRecord:
		var info NodeInfo
		if err := strictJSON(data, &info); err != nil {
			return fmt.Errorf("node record %s does not decode: %w", name, err)
		}
		if info.Name != node {
			return fmt.Errorf("node record %s names node %q", name, info.Name)
		}
	case NodeLease:
		var l Lease
		if err := strictJSON(data, &l); err != nil {
			return fmt.Errorf("lease %s does not decode: %w", name, err)
		}
		if l.Node != node || l.Gen != seq {
			return fmt.Errorf("lease %s names node %q generation %d", name, l.Node, l.Gen)
		}
	case NodeManifest:
		m, err := manifest.Decode(data)
		if err != nil {
			return fmt.Errorf("manifest %s does not decode: %w", name, err)
		}
		if m.Node != node || m.Seq != seq {
			return fmt.Errorf("manifest %s names node %q manifest %d (misplaced)", name, m.Node, m.Seq)
		}
		return checkManifestChunks(ctx, s, name, m)
	default:
		return fmt.Errorf("object %s: a %s is not put as an object (the journal operations write it)", name, kind)
	}
	return nil
}

// checkManifestChunks checks that every chunk m names directly is stored,
// and is of the kind its place in the manifest says.
func checkManifestChunks(ctx context.Context, s *Store, name string, m *manifest.Manifest) error {
	p, err := s.Packs("check manifest chunks")
	if err != nil {
		return err
	}
	want := map[chunker.ID]chunk.Kind{}
	var ids []chunker.ID
	add := func(id chunker.ID, k chunk.Kind) {
		if _, ok := want[id]; !ok {
			ids = append(ids, id)
		}
		want[id] = k
	}
	for _, c := range m.Changes {
		add(c.ID, chunk.KindChange)
	}
	for _, id := range m.Snapshot.Lists {
		add(id, chunk.KindList)
	}
	for _, id := range m.Snapshot.Patches {
		add(id, chunk.KindPatch)
	}
	if len(ids) == 0 {
		return nil
	}
	l, err := p.Lookup(ctx, ids)
	if err != nil {
		return fmt.Errorf("manifest %s: look up its chunks: %w", name, err)
	}
	for _, id := range ids {
		// Any copy will do, condemned or not: gc rescues the condemned
		// chunks a manifest committed meanwhile names.
		in, ok := l.Locate(id)
		if !ok {
			return fmt.Errorf("manifest %s names chunk %s, which the store does not hold (upload chunks before the manifest that names them)", name, id.Short())
		}
		if in.Kind == want[id] {
			continue // its content was checked when it was stored
		}
		// Another writer may have stored the same bytes first, declared
		// as a page (any bytes may be one): the content decides.
		data, err := s.Get(ctx, id)
		if err != nil {
			return fmt.Errorf("manifest %s: read chunk %s: %w", name, id.Short(), err)
		}
		if err := CheckChunkContent(want[id], data); err != nil {
			return fmt.Errorf("manifest %s names chunk %s as a %s chunk, but it is not one: %v", name, id.Short(), want[id], err)
		}
	}
	return nil
}

// CheckChunkContent refuses a chunk whose content is not what kind says,
// where the content can tell: list, patch and change chunks have formats
// of their own and must decode; any bytes may be a page. A store server
// applies it to the bodies node clients upload, which keeps the index's
// kinds honest for gc's scan of list and patch chunks. Nothing relies on
// the kind recorded for a chunk to judge another node's history: verify
// and the manifest check go by the role a manifest names a chunk in.
func CheckChunkContent(kind chunk.Kind, data []byte) error {
	var err error
	switch kind {
	case chunk.KindList:
		_, err = manifest.DecodeList(data)
	case chunk.KindPatch:
		_, err = manifest.DecodePatch(data)
	case chunk.KindChange:
		_, err = journal.DecodeChunk(data)
	}
	return err
}

// strictJSON decodes one JSON value, refusing unknown fields and trailing
// data.
func strictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the JSON value")
	}
	return nil
}
