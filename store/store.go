// Package store is the content-addressed, deduplicating store that holds the
// backups of many nodes. Chunks (database pages, list chunks, sealed changes)
// are named by the BLAKE3-256 of their bytes and kept zstd-compressed by a
// chunk layer (store/packs, or a store server's); a chunk already in the
// store is never written again, and every read re-hashes what it fetched.
// This package knows the per-node objects (node records, manifests, leases
// under nodes/<name>/; docs/store-format.md), writes chunks and commits the
// manifests that name them (Writer), and reads chunks back, through three
// seams: objects (backend.Backend), chunks (chunk.Layer) and journals
// (Journals), each with its implementations side by side.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/local"
	"github.com/clnbackup/backup/store/packs"
)

// FormatVersion is the store layout version of new stores. Version 2 may
// hold page chunks stored as deltas against an earlier version of the page
// (index format 2); version-1 stores (index format 1, no deltas) are still
// read and written, never with deltas.
const FormatVersion = 2

// MinFormatVersion is the oldest store layout version this code handles.
const MinFormatVersion = 1

const (
	configName   = "config"
	configFormat = "clnbackup-store"
)

// Params are the chunking parameters fixed when a store is created. Every
// writer of a store must use the same ones, or snapshots would stop sharing
// chunks; opening a store whose parameters differ from the caller's fails.
type Params struct {
	Chunker     string `json:"chunker"`
	Hash        string `json:"hash"`
	Compression string `json:"compression"`
	// ListEntries is the number of page IDs per list chunk.
	ListEntries int `json:"list_entries"`
	// PackSize is the size at which a writer closes a pack.
	PackSize int `json:"pack_size"`
}

// DefaultParams are the parameters of new stores (see docs/design.md for the
// measurements behind them).
func DefaultParams() Params {
	return Params{Chunker: "sqlite-page", Hash: "blake3-256", Compression: "zstd", ListEntries: 1024, PackSize: 8 << 20}
}

// Config is the store's root object.
type Config struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Params  Params    `json:"params"`
	// Encryption is set in encrypted stores (format 3) only.
	Encryption *EncryptionConfig `json:"encryption,omitempty"`
}

// Encrypted reports whether the store's objects are encrypted (format 3).
func (c Config) Encrypted() bool { return c.Encryption != nil }

// ErrNotStore is returned (wrapped) when a URL names no store.
var ErrNotStore = errors.New("not a backup store")

// Options tune Open and Create.
type Options struct {
	// Params are the parameters the caller expects (DefaultParams when nil).
	Params *Params
	// FormatVersion is the layout version Create gives a new store
	// (FormatVersion when 0; tests make version-1 stores with 1).
	FormatVersion int
	// Now is the clock (time.Now when nil); tests inject one to move time
	// past grace periods and lease expiries without sleeping.
	Now func() time.Time
	// MaxWriterAge bounds how long a writer may take from its first chunk
	// lookup to the manifest that names its chunks (DefaultMaxWriterAge
	// when 0). gc's grace period must be longer (see GC).
	MaxWriterAge time.Duration
	// ReadWorkers is how many goroutines ReadChunks decompresses and
	// verifies with (GOMAXPROCS when 0). The plugin uses 1, so that a
	// compaction leaves lightningd's hook path a core.
	ReadWorkers int
	// Token is the secret a store server knows this client by (socket:
	// URLs only).
	Token string
	// RetryFor bounds how long a call to a store server keeps retrying a
	// lost connection before it fails (DefaultRetryFor when 0). A db_write
	// waits that long for an unreachable server, then is refused.
	RetryFor time.Duration
	// CredentialsFile is the file of an s3:// store's keys (AWS's shared
	// credentials format, mode 0600) instead of the environment's: the
	// plugin's, named in backup.lock.
	CredentialsFile string
	// JournalDir keeps the nodes' journals of an s3:// store in this
	// local directory instead of the bucket (backup-cli server
	// --journal-dir): an acknowledgement costs an fsync, not a PUT.
	JournalDir string
	// Unlock opens an encrypted store's master key (see Unlock).
	Unlock Unlock
	// Encrypt makes Create write a new store encrypted (nil: plain). It
	// is ignored when the store exists.
	Encrypt *Encryption
	// Keyless opens an encrypted store without its key, as a store server
	// does: objects, chunk bodies and journal records move as ciphertext,
	// checked for size, structure and names only.
	Keyless bool
	// GroupCommit makes the appends of all nodes' journals in a local
	// directory durable together, through one write-ahead log (see
	// journal.WAL): a store server carrying many nodes makes one
	// fdatasync per batch of appends, not one per append.
	GroupCommit bool
	// GroupCommitSize is the write-ahead log's size (journal.DefaultWALSize
	// when 0).
	GroupCommitSize int64
}

// DefaultRetryFor is how long calls to a store server retry a lost
// connection by default: about what the Python plugin's client waited
// (five retries from 5 s, 1.5x each).
const DefaultRetryFor = time.Minute

// DefaultMaxWriterAge is the longest a writer may run before it commits.
const DefaultMaxWriterAge = time.Hour

// Store is an open store: the store's config, its objects, the chunk layer
// that keeps its chunks and the journals of its nodes. It knows the layout
// of the per-node objects (node records, manifests, leases) and reads and
// writes chunks through its chunk layer, the same way whether that is packs
// it reads and writes itself or a store server's chunk service. It is safe
// for concurrent use.
type Store struct {
	be       backend.Backend
	cfg      Config
	codec    *chunk.Codec
	chunks   chunk.Layer
	journals Journals
	// packs is the chunk layer when this client sees the packs (a local
	// store, or a store server with an admin token): the store-wide
	// maintenance (gc, verify, counting chunks) needs it.
	packs *packs.Packs
	// closer closes the store server connection, if any.
	closer       io.Closer
	now          func() time.Time
	maxWriterAge time.Duration
	reader       *chunkReader
	// raw is the backend without the sealed view (be is sealedBackend
	// over it in an encrypted store opened with its key; else be).
	raw backend.Backend
	// keyring is an encrypted store's keys (nil: plain, or keyless).
	keyring *Keyring
}

// Create opens the store at url, creating it first when the place is missing
// or empty. It refuses a non-empty directory (or bucket prefix) that is not
// a store. created reports whether a new store was made.
func Create(ctx context.Context, url string, opts Options) (s *Store, created bool, err error) {
	u, err := ParseURL(url)
	if err != nil {
		return nil, false, err
	}
	if u.Scheme != "file" {
		if os := objectStore(u.Scheme); os != nil {
			return createObjectStore(ctx, os, u, opts)
		}
		// A store server creates its store when it starts.
		s, err := openRemote(ctx, u, opts)
		return s, false, err
	}
	if err := os.MkdirAll(u.Path, 0o755); err != nil {
		return nil, false, fmt.Errorf("create store directory %s: %w", u.Path, err)
	}
	be, err := local.New(u.Path)
	if err != nil {
		return nil, false, err
	}
	empty := func() (bool, error) {
		entries, err := os.ReadDir(u.Path)
		if err != nil {
			return false, fmt.Errorf("read store directory %s: %w", u.Path, err)
		}
		return len(entries) == 0, nil
	}
	return createIn(ctx, be, opts, nil, empty, nil)
}

// createIn opens the store kept by be, first writing its config if there
// is none and the place is empty; prepare (if any) readies the place for a
// new store first (an object store's bucket check).
func createIn(ctx context.Context, be backend.Backend, opts Options, journals Journals, empty func() (bool, error), prepare func(context.Context) error) (*Store, bool, error) {
	if _, err := be.Stat(ctx, configName); err == nil {
		s, err := open(ctx, be, opts, journals)
		return s, false, err
	} else if !errors.Is(err, backend.ErrNotFound) {
		return nil, false, fmt.Errorf("open store %s: %w", be.Location(), err)
	}
	ok, err := empty()
	if err != nil {
		return nil, false, err
	}
	if !ok {
		return nil, false, fmt.Errorf("%s is not empty and is not a backup store (it has no %q object): choose a new or empty place", be.Location(), configName)
	}
	if prepare != nil {
		if err := prepare(ctx); err != nil {
			return nil, false, err
		}
	}
	params := DefaultParams()
	if opts.Params != nil {
		params = *opts.Params
	}
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, false, fmt.Errorf("create store id: %w", err)
	}
	version := FormatVersion
	if opts.FormatVersion != 0 {
		if opts.FormatVersion < MinFormatVersion || opts.FormatVersion > FormatVersion {
			return nil, false, fmt.Errorf("create store %s: format version %d is not supported (this program handles versions %d to %d)", be.Location(), opts.FormatVersion, MinFormatVersion, FormatVersion)
		}
		version = opts.FormatVersion
	}
	cfg := Config{Format: configFormat, Version: version, ID: hex.EncodeToString(rnd[:]), Created: time.Now().UTC(), Params: params}
	if opts.Encrypt != nil {
		mk, o, err := newEncryptedConfig(&cfg, opts.Encrypt)
		if err != nil {
			return nil, false, fmt.Errorf("create encrypted store %s: %w", be.Location(), err)
		}
		// The key object goes first: a config naming a master key that
		// no key object wraps would make a store nobody can open.
		if err := putKeyObject(ctx, be, o); err != nil {
			return nil, false, fmt.Errorf("create encrypted store %s: %w", be.Location(), err)
		}
		opts.Unlock = Unlock{KeyFile: ptr(mk.KeyFile())}
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, false, err
	}
	if err := be.PutIfAbsent(ctx, configName, append(data, '\n')); err != nil && !errors.Is(err, backend.ErrExists) {
		return nil, false, fmt.Errorf("create store %s: write config: %w", be.Location(), err)
	}
	s, err := open(ctx, be, opts, journals)
	return s, err == nil, err
}

// Open opens an existing store.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	u, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "file" {
		if os := objectStore(u.Scheme); os != nil {
			return openObjectStore(ctx, os, u, opts)
		}
		return openRemote(ctx, u, opts)
	}
	st, err := os.Stat(u.Path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open store %s: %w: %s does not exist (create one with backup-cli init)", url, ErrNotStore, u.Path)
		}
		return nil, fmt.Errorf("open store %s: %w", url, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("open store %s: %w: %s is a file, not a store directory", url, ErrNotStore, u.Path)
	}
	be, err := local.New(u.Path)
	if err != nil {
		return nil, err
	}
	return open(ctx, be, opts, nil)
}

// openRemote opens a store through a store server.
func openRemote(ctx context.Context, u URL, opts Options) (*Store, error) {
	d, err := dialer(u.Scheme)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", u.Raw, err)
	}
	r, err := d(ctx, u, opts)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", u.Raw, err)
	}
	s, err := open(ctx, r.Objects(), opts, r.Journals())
	if err != nil {
		r.Close()
		return nil, err
	}
	s.closer = r
	if svc := r.Chunks(); svc != nil {
		s.packs, s.chunks = nil, &serverChunks{svc: svc, where: s.Location()}
		s.reader = newChunkReader(s.chunks, s.codec, opts.ReadWorkers, s.Location())
	}
	return s, nil
}

// OpenBackend opens the store kept by an already constructed backend, with
// its nodes' journals in journals (nil: in the backend's directory, which
// must then be a local one).
func OpenBackend(ctx context.Context, be backend.Backend, opts Options, journals Journals) (*Store, error) {
	return open(ctx, be, opts, journals)
}

// open reads the config and sets up the chunk layer as packs over be; a
// store server client replaces it when the server keeps the chunks.
func open(ctx context.Context, be backend.Backend, opts Options, journals Journals) (*Store, error) {
	data, err := backend.ReadWhole(ctx, be, configName, maxRecordObject)
	if err != nil {
		if errors.Is(err, backend.ErrNotFound) {
			return nil, fmt.Errorf("open store %s: %w (no %q object; create one with backup-cli init)", be.Location(), ErrNotStore, configName)
		}
		return nil, fmt.Errorf("open store %s: read config: %w", be.Location(), err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil || cfg.Format != configFormat {
		return nil, fmt.Errorf("open store %s: %w (config object is not a backup store config)", be.Location(), ErrNotStore)
	}
	if cfg.Version < MinFormatVersion || cfg.Version > MaxFormatVersion {
		return nil, fmt.Errorf("open store %s: store format version %d is not supported (this program handles versions %d to %d): use a backup-cli that matches the store", be.Location(), cfg.Version, MinFormatVersion, MaxFormatVersion)
	}
	if err := checkEncryptionConfig(cfg); err != nil {
		return nil, fmt.Errorf("open store %s: %w", be.Location(), err)
	}
	want := DefaultParams()
	if opts.Params != nil {
		want = *opts.Params
	}
	if err := compareParams(cfg.Params, want); err != nil {
		return nil, fmt.Errorf("open store %s: %w", be.Location(), err)
	}
	var keyring *Keyring
	if cfg.Encrypted() && !opts.Keyless {
		mk, by, err := unlock(ctx, be, cfg, opts.Unlock)
		if err != nil {
			return nil, fmt.Errorf("open encrypted store %s: %w", be.Location(), err)
		}
		keyring = &Keyring{master: mk, openedBy: by, keys: mk.Keys()}
	}
	c, err := chunk.NewCodec()
	if err != nil {
		return nil, err
	}
	raw := be
	switch {
	case keyring != nil:
		c.WithKeys(keyring.keys)
		be = &sealedBackend{Backend: raw, keys: keyring.keys}
	case cfg.Encrypted():
		c.WithoutKeys()
	}
	s := &Store{be: be, raw: raw, cfg: cfg, codec: c, now: opts.Now, maxWriterAge: opts.MaxWriterAge, keyring: keyring}
	if keyring != nil {
		keyring.st = s
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxWriterAge <= 0 {
		s.maxWriterAge = DefaultMaxWriterAge
	}
	s.packs = packs.New(raw, packs.Options{StoreVersion: cfg.Version, PackSize: cfg.Params.PackSize, Codec: c, Now: s.now, MaxWriterAge: s.maxWriterAge, CheckContent: CheckChunkContent})
	s.chunks = s.packs
	s.reader = newChunkReader(s.chunks, c, opts.ReadWorkers, be.Location())
	if journals == nil {
		dj, err := newDirJournals(raw)
		if err == nil {
			err = dj.setupWAL(opts.GroupCommit, opts.GroupCommitSize)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("open store %s: %w", be.Location(), err)
		}
		journals = dj
	}
	if keyring != nil {
		journals = &sealedJournals{Journals: journals, keys: keyring.keys}
	}
	s.journals = journals
	return s, nil
}

func ptr[T any](v T) *T { return &v }

func compareParams(have, want Params) error {
	var diffs []string
	if have.Chunker != want.Chunker {
		diffs = append(diffs, fmt.Sprintf("chunker %q (expected %q)", have.Chunker, want.Chunker))
	}
	if have.Hash != want.Hash {
		diffs = append(diffs, fmt.Sprintf("hash %q (expected %q)", have.Hash, want.Hash))
	}
	if have.Compression != want.Compression {
		diffs = append(diffs, fmt.Sprintf("compression %q (expected %q)", have.Compression, want.Compression))
	}
	if have.ListEntries != want.ListEntries {
		diffs = append(diffs, fmt.Sprintf("list_entries %d (expected %d)", have.ListEntries, want.ListEntries))
	}
	if have.PackSize < 1<<16 || have.PackSize > 1<<30 {
		diffs = append(diffs, fmt.Sprintf("pack_size %d (expected 64 KiB..1 GiB)", have.PackSize))
	}
	if len(diffs) > 0 {
		return fmt.Errorf("store was created with different chunking parameters: %s; use a backup-cli with the same parameters", strings.Join(diffs, ", "))
	}
	return nil
}

// Config returns the store's configuration.
func (s *Store) Config() Config { return s.cfg }

// DeltasAllowed reports whether writers of this Store may store page chunks
// as deltas: a version-2 store whose chunk layer takes them (a store
// server's node clients send full pages only).
func (s *Store) DeltasAllowed() bool { return s.cfg.Version >= 2 && s.chunks.Deltas() }

// ChunkID names data as this store names chunks: BLAKE3-256, or in an
// encrypted store keyed BLAKE3 under its chunk id key (the key stays in
// the store). Everything that names or checks a chunk of this store (the
// snapshot of a database, the compaction cache) must use it.
func (s *Store) ChunkID(data []byte) chunker.ID { return s.codec.ID(data) }

// Location is the store's URL, for messages.
func (s *Store) Location() string { return s.be.Location() }

// Objects is the store's object backend, for those that serve or inspect
// raw objects (a store server, tests).
func (s *Store) Objects() backend.Backend { return s.be }

// Close releases the store.
func (s *Store) Close() error {
	s.codec.Close()
	var werr error
	if dj := dirJournalsOf(s.journals); dj != nil {
		werr = dj.close()
	}
	var err error
	if s.closer != nil {
		err = s.closer.Close()
	} else {
		err = s.be.Close()
	}
	return errors.Join(werr, err)
}

// Lookup finds whether, and where, the chunks ids are stored (see
// chunk.Layer.Lookup).
func (s *Store) Lookup(ctx context.Context, ids []chunker.ID) (chunk.Lookup, error) {
	return s.chunks.Lookup(ctx, ids)
}

// ReleaseIndex drops what the chunk layer holds in memory (the plugin does
// so after a compaction, to stay small while idle). It must not run
// concurrently with reads or writers of this Store.
func (s *Store) ReleaseIndex() { s.chunks.ReleaseIndex() }
