package remote

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/clnbackup/backup/internal/secretfile"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
)

// MinTokenLength is the shortest token an auth file may hold.
const MinTokenLength = 32

// Auth maps client tokens to what they may do. Tokens are kept only as
// SHA-256 hashes and compared in constant time.
type Auth struct {
	entries []authEntry
}

type authEntry struct {
	hash [sha256.Size]byte
	id   Identity
}

// Identity is what a token allows.
type Identity struct {
	// Label names the token in logs without revealing it: the first bytes
	// of its hash and where it was defined.
	Label string
	// Admin tokens have full object access and every node's journal.
	Admin bool
	// Nodes are the nodes a node token may write and read.
	Nodes []string
	// Quota bounds what a node token may make the store hold (bytes; 0:
	// no quota): see quota.go for what counts.
	Quota int64
	// key identifies the token (hex of its hash) to the quota count,
	// across connections and auth file reloads.
	key string
}

func (id Identity) String() string {
	if id.Admin {
		return id.Label + " (admin)"
	}
	return fmt.Sprintf("%s (nodes %s)", id.Label, strings.Join(id.Nodes, ","))
}

func (id Identity) hasNode(node string) bool {
	return id.Admin || slices.Contains(id.Nodes, node)
}

// anyone is the identity of every client of a server without auth file.
var anyone = Identity{Label: "anyone (no auth file)", Admin: true}

// LoadAuth reads an auth file: one token per line, "TOKEN NODE[,NODE...]"
// for a node token, optionally followed by "quota=SIZE" (10GiB, 500MB,
// bytes), or "TOKEN *" for an admin token; blank lines and lines starting
// with # are ignored. Tokens are at least 32 characters. A file other users
// may read is refused: its tokens would be theirs.
func LoadAuth(path string) (*Auth, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	if err := secretfile.CheckMode(path, "the store server's client tokens", fi.Mode()); err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	a, err := ParseAuth(f)
	if err != nil {
		return nil, fmt.Errorf("auth file %s: %w", path, err)
	}
	return a, nil
}

// ParseAuth parses the content of an auth file (see LoadAuth).
func ParseAuth(r io.Reader) (*Auth, error) {
	a := &Auth{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	seen := map[[sha256.Size]byte]int{}
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 && len(fields) != 3 {
			return nil, fmt.Errorf("line %d: want \"TOKEN NODE[,NODE...] [quota=SIZE]\" or \"TOKEN *\", got %d fields", line, len(fields))
		}
		tok, who := fields[0], fields[1]
		if len(tok) < MinTokenLength {
			return nil, fmt.Errorf("line %d: token of %d characters is too short (at least %d; make one with backup-cli server add-token)", line, len(tok), MinTokenLength)
		}
		h := sha256.Sum256([]byte(tok))
		if prev, dup := seen[h]; dup {
			return nil, fmt.Errorf("line %d: the token of line %d again", line, prev)
		}
		seen[h] = line
		id := Identity{Label: fmt.Sprintf("token %s (line %d)", hex.EncodeToString(h[:4]), line), key: hex.EncodeToString(h[:])}
		if len(fields) == 3 {
			if who == "*" {
				return nil, fmt.Errorf("line %d: quotas are for node tokens; an admin token has none", line)
			}
			size, ok := strings.CutPrefix(fields[2], "quota=")
			if !ok {
				return nil, fmt.Errorf("line %d: third field %q: want quota=SIZE (e.g. quota=10GiB)", line, fields[2])
			}
			q, err := parseSize(size)
			if err != nil || q <= 0 {
				return nil, fmt.Errorf("line %d: quota=%s: want a size above 0 (e.g. 10GiB): %v", line, size, err)
			}
			id.Quota = q
		}
		if who == "*" {
			id.Admin = true
		} else {
			for _, n := range strings.Split(who, ",") {
				if err := manifest.ValidNodeName(n); err != nil {
					return nil, fmt.Errorf("line %d: %w", line, err)
				}
				if !slices.Contains(id.Nodes, n) {
					id.Nodes = append(id.Nodes, n)
				}
			}
			slices.Sort(id.Nodes)
		}
		a.entries = append(a.entries, authEntry{hash: h, id: id})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(a.entries) == 0 {
		return nil, fmt.Errorf("no tokens (add one with backup-cli server add-token)")
	}
	return a, nil
}

// Lookup returns what token allows. Every entry is compared, in constant
// time, so the time taken does not tell which prefix matched.
func (a *Auth) Lookup(token string) (Identity, bool) {
	h := sha256.Sum256([]byte(token))
	found := -1
	for i := range a.entries {
		if subtle.ConstantTimeCompare(h[:], a.entries[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Identity{}, false
	}
	return a.entries[found].id, true
}

// lookupHash returns what the token of hash allows (SetAuth checks the
// live sessions, which keep their token's hash only, against a new table).
func (a *Auth) lookupHash(h [sha256.Size]byte) (Identity, bool) {
	for i := range a.entries {
		if a.entries[i].hash == h {
			return a.entries[i].id, true
		}
	}
	return Identity{}, false
}

// covers reports whether id allows everything old did: a session that
// logged in with old may go on under id.
func (id Identity) covers(old Identity) bool {
	if id.Admin {
		return true
	}
	if old.Admin {
		return false
	}
	for _, n := range old.Nodes {
		if !slices.Contains(id.Nodes, n) {
			return false
		}
	}
	return true
}

// NewToken returns a fresh random token: 32 bytes, hex.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// AddToken appends a token line to an auth file (created with mode 0600
// when missing): for nodes, or an admin token when admin is set.
func AddToken(path, token string, nodes []string, admin bool) error {
	who := "*"
	if !admin {
		if len(nodes) == 0 {
			return fmt.Errorf("a node token needs at least one node")
		}
		for _, n := range nodes {
			if err := manifest.ValidNodeName(n); err != nil {
				return err
			}
		}
		who = strings.Join(nodes, ",")
	}
	if len(token) < MinTokenLength {
		return fmt.Errorf("token too short")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("auth file: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("auth file %s: %w", path, err)
	}
	if _, err := fmt.Fprintf(f, "%s %s\n", token, who); err != nil {
		f.Close()
		return fmt.Errorf("auth file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("auth file %s: %w", path, err)
	}
	return f.Close()
}

// Authorization of object requests. A node token may read the config, read
// and put-if-absent its nodes' objects (not their journal files, which only
// the journal operations touch), delete its nodes' lease generations and
// list what it may read. Packs, index and gc objects are for admin tokens:
// node tokens store and read chunks through the chunk operations.

func (id Identity) checkName(name string) error {
	if err := backend.ValidName(name); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

// ownObject allows a node token an object of one of its nodes that the
// store layout defines (store.ParseNodeObject), never a journal file: a
// name the layout does not have is refused before any backend sees it.
func (id Identity) ownObject(op, name string) error {
	node, ok := store.NodeOfObject(name)
	if !ok {
		return denied("%s %s: denied to %s: only admin tokens may touch objects outside nodes/ (packs, index and gc objects; chunks go through the chunk operations)", op, name, id)
	}
	if !id.hasNode(node) {
		return denied("%s %s: denied to %s: the object belongs to node %q", op, name, id, node)
	}
	_, kind, _, err := store.ParseNodeObject(name)
	if err != nil {
		return badRequest("%s %s: refused to %s: %v", op, name, id, err)
	}
	if kind == store.NodeJournal {
		return denied("%s %s: denied to %s: journal files are only reached through the journal operations", op, name, id)
	}
	return nil
}

func (id Identity) canRead(name string) error {
	// config and an encrypted store's key objects are what every client
	// reads before it can open the store (a key object holds the master
	// key wrapped only).
	if err := id.checkName(name); err != nil || id.Admin || name == store.ConfigObject || strings.HasPrefix(name, store.KeysPrefix) {
		return err
	}
	return id.ownObject("read", name)
}

func (id Identity) canWrite(name string) error {
	if err := id.checkName(name); err != nil || id.Admin {
		return err
	}
	return id.ownObject("write", name)
}

func (id Identity) canDelete(name string) error {
	if err := id.checkName(name); err != nil || id.Admin {
		return err
	}
	if err := id.ownObject("delete", name); err != nil {
		return err
	}
	if !store.IsLeaseObject(name) {
		return denied("delete %s: denied to %s: a node token may delete only its lease objects (forget and gc are for admin tokens or the server)", name, id)
	}
	return nil
}

// checkPrefix refuses a list prefix that is not the start of a valid
// object name (backend.ValidPrefix): "..", empty segments, absolute
// prefixes, backslashes, NUL, overlong. It is checked for every token,
// admin included, before anything else looks at the prefix: a backend
// that joins it into a path must never see one that walks out of the
// store.
func checkPrefix(prefix string) error {
	if err := backend.ValidPrefix(prefix); err != nil {
		return badRequest("list: %v", err)
	}
	return nil
}

// listPlan is how a node token's List of prefix is served: the config
// object when it matches, then the listed prefixes in order, each filtered
// by canRead. An admin lists prefix as is.
func (id Identity) listPlan(prefix string) (config bool, prefixes []string, err error) {
	if err := checkPrefix(prefix); err != nil {
		return false, nil, err
	}
	if id.Admin {
		return false, []string{prefix}, nil
	}
	config = strings.HasPrefix(store.ConfigObject, prefix)
	if strings.HasPrefix(prefix, store.KeysPrefix) {
		return false, []string{prefix}, nil
	}
	if node, ok := store.NodeOfObject(prefix); ok {
		if !id.hasNode(node) {
			return false, nil, denied("list %s: denied to %s: the prefix belongs to node %q", prefix, id, node)
		}
		return false, []string{prefix}, nil
	}
	if !strings.HasPrefix(prefix, store.NodesPrefix) && !strings.HasPrefix(store.NodesPrefix, prefix) && !config {
		return false, nil, denied("list %q: denied to %s: only admin tokens may list outside nodes/ (packs, index and gc objects)", prefix, id)
	}
	// A prefix of "nodes/" or a partial node name: the token's nodes
	// that match, in lexical order of their object names.
	nodes := slices.Clone(id.Nodes)
	slices.SortFunc(nodes, func(a, b string) int { return strings.Compare(a+"/", b+"/") })
	for _, n := range nodes {
		np := store.NodesPrefix + n + "/"
		if strings.HasPrefix(np, prefix) {
			prefixes = append(prefixes, np)
		}
	}
	return config, prefixes, nil
}
