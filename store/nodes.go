package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/backend"
)

// ErrNodeExists is returned (wrapped) by CreateNode for a name in use.
var ErrNodeExists = errors.New("node already exists in the store")

// ErrNoNode is returned (wrapped) for a node the store does not hold.
var ErrNoNode = errors.New("no such node in the store")

// ErrManifestExists is returned (wrapped) when a manifest sequence number is
// taken: another writer committed it first.
var ErrManifestExists = errors.New("manifest already exists")

// NodeInfo is the record written when a node is added to the store.
type NodeInfo struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	// Host is the machine that ran init, for operators reading the store.
	Host string `json:"host,omitempty"`
}

func nodePrefix(node string) string     { return "nodes/" + node + "/" }
func nodeInfoName(node string) string   { return nodePrefix(node) + "node.json" }
func manifestPrefix(node string) string { return nodePrefix(node) + "manifests/" }
func manifestName(node string, seq uint64) string {
	return fmt.Sprintf("%s%020d", manifestPrefix(node), seq)
}

// CreateNode adds a node to the store; it fails if the name is taken.
func (s *Store) CreateNode(ctx context.Context, info NodeInfo) error {
	if err := manifest.ValidNodeName(info.Name); err != nil {
		return err
	}
	data, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if err := s.be.PutIfAbsent(ctx, nodeInfoName(info.Name), append(data, '\n')); err != nil {
		if errors.Is(err, backend.ErrExists) {
			return fmt.Errorf("node %q in store %s: %w (choose another --node name, or restore it)", info.Name, s.Location(), ErrNodeExists)
		}
		return fmt.Errorf("create node %q in store %s: %w", info.Name, s.Location(), err)
	}
	return nil
}

// Node returns a node's record.
func (s *Store) Node(ctx context.Context, node string) (NodeInfo, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return NodeInfo{}, err
	}
	data, err := backend.ReadWhole(ctx, s.be, nodeInfoName(node), maxRecordObject)
	if err != nil {
		if errors.Is(err, backend.ErrNotFound) {
			return NodeInfo{}, fmt.Errorf("node %q: %w %s", node, ErrNoNode, s.Location())
		}
		return NodeInfo{}, fmt.Errorf("read node %q: %w", node, err)
	}
	var info NodeInfo
	if err := json.Unmarshal(data, &info); err != nil {
		return NodeInfo{}, fmt.Errorf("read node %q: damaged node record: %w", node, err)
	}
	return info, nil
}

// Nodes lists the nodes in the store, sorted by name.
func (s *Store) Nodes(ctx context.Context) ([]string, error) {
	var names []string
	err := s.be.List(ctx, "nodes/", func(in backend.Info) error {
		rest := strings.TrimPrefix(in.Name, "nodes/")
		if node, file, ok := strings.Cut(rest, "/"); ok && file == "node.json" {
			names = append(names, node)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list nodes of store %s: %w", s.Location(), err)
	}
	return names, nil
}

// putManifest stores m under its node's sequence number. Everything m names
// must already be durable, and the writer that stored it young enough: only
// Writer.Commit calls it. It fails with ErrManifestExists if the number is
// taken. It returns the encoded size.
func putManifest(ctx context.Context, s *Store, m *manifest.Manifest) (int64, error) {
	data, err := manifest.Encode(m)
	if err != nil {
		return 0, err
	}
	if err := s.be.PutIfAbsent(ctx, manifestName(m.Node, m.Seq), data); err != nil {
		if errors.Is(err, backend.ErrExists) {
			return 0, fmt.Errorf("write manifest %d of node %q: %w (another writer for this node?)", m.Seq, m.Node, ErrManifestExists)
		}
		return 0, fmt.Errorf("write manifest %d of node %q: %w", m.Seq, m.Node, err)
	}
	return int64(len(data)), nil
}

// ManifestSeqs lists a node's manifest sequence numbers in increasing order.
func (s *Store) ManifestSeqs(ctx context.Context, node string) ([]uint64, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return nil, err
	}
	var seqs []uint64
	prefix := manifestPrefix(node)
	err := s.be.List(ctx, prefix, func(in backend.Info) error {
		seq, err := strconv.ParseUint(strings.TrimPrefix(in.Name, prefix), 10, 64)
		if err != nil {
			return nil // not a manifest
		}
		seqs = append(seqs, seq)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list manifests of node %q: %w", node, err)
	}
	return seqs, nil
}

// Manifest reads and checks one manifest.
func (s *Store) Manifest(ctx context.Context, node string, seq uint64) (*manifest.Manifest, error) {
	if err := manifest.ValidNodeName(node); err != nil {
		return nil, err
	}
	data, err := backend.ReadWhole(ctx, s.be, manifestName(node, seq), maxNodeObject)
	if err != nil {
		return nil, fmt.Errorf("read manifest %d of node %q: %w", seq, node, err)
	}
	m, err := manifest.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("read manifest %d of node %q: %w", seq, node, err)
	}
	if m.Node != node || m.Seq != seq {
		return nil, fmt.Errorf("read manifest %d of node %q: it names node %q manifest %d (misplaced object)", seq, node, m.Node, m.Seq)
	}
	return m, nil
}

// LatestManifest returns the node's newest manifest.
func (s *Store) LatestManifest(ctx context.Context, node string) (*manifest.Manifest, error) {
	seqs, err := s.ManifestSeqs(ctx, node)
	if err != nil {
		return nil, err
	}
	if len(seqs) == 0 {
		return nil, fmt.Errorf("node %q has no manifest in store %s", node, s.Location())
	}
	return s.Manifest(ctx, node, seqs[len(seqs)-1])
}

// Usage sums the store's objects by class, for list and the benchmarks.
type Usage struct {
	Objects       int
	Bytes         int64
	PackBytes     int64
	IndexBytes    int64
	ManifestBytes int64
	JournalBytes  int64
	Packs         int
	// IndexObjects, Manifests and JournalObjects count those classes
	// (journal segment files, or record objects in a bucket): on object
	// storage, requests and per-object fees follow the counts.
	IndexObjects, Manifests, JournalObjects int
}

// Usage lists every object in the store.
func (s *Store) Usage(ctx context.Context) (Usage, error) {
	var u Usage
	err := s.be.List(ctx, "", func(in backend.Info) error {
		u.Objects++
		u.Bytes += in.Size
		switch {
		case strings.HasPrefix(in.Name, "packs/"):
			u.Packs++
			u.PackBytes += in.Size
		case strings.HasPrefix(in.Name, "index/"):
			u.IndexObjects++
			u.IndexBytes += in.Size
		case strings.Contains(in.Name, "/manifests/"):
			u.Manifests++
			u.ManifestBytes += in.Size
		case strings.Contains(in.Name, "/journal/"):
			u.JournalObjects++
			u.JournalBytes += in.Size
		}
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("usage of store %s: %w", s.Location(), err)
	}
	return u, nil
}

// NodeOfObject returns the node an object name belongs to ("nodes/N/..."),
// so a store server can allow a client its own nodes' objects and nothing
// else without knowing the layout.
func NodeOfObject(name string) (node string, ok bool) {
	rest, ok := strings.CutPrefix(name, "nodes/")
	if !ok {
		return "", false
	}
	node, _, ok = strings.Cut(rest, "/")
	return node, ok && node != ""
}

// IsLeaseObject reports whether name is one of a node's lease generations,
// the only objects a node's writer deletes.
func IsLeaseObject(name string) bool {
	node, ok := NodeOfObject(name)
	return ok && strings.HasPrefix(name, leasePrefix(node)) && len(name) > len(leasePrefix(node))
}

// IsJournalObject reports whether name is a file of a node's journal, which
// only the server's journal code touches.
func IsJournalObject(name string) bool {
	node, ok := NodeOfObject(name)
	return ok && strings.HasPrefix(name, nodePrefix(node)+"journal/")
}

// NodesPrefix is the prefix under which node objects are listed.
const NodesPrefix = "nodes/"

// ConfigObject is the name of the store's config object, which every
// client reads on open.
const ConfigObject = configName
