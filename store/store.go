// Package store is the content-addressed, deduplicating store that holds the
// backups of many nodes. Chunks (database pages, list chunks, sealed changes)
// are named by the BLAKE3-256 of their bytes, zstd-compressed and written in
// packs of a few MiB, each with an index object written before any manifest
// that needs it. A chunk already in the store is never written again, and every
// read re-hashes what it fetched. Per-node objects (node records, manifests,
// the journal) live under nodes/<name>/. The layout is in docs/store-format.md;
// this package is the one place that knows it.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/local"
	"github.com/klauspost/compress/zstd"
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
}

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
}

// DefaultRetryFor is how long calls to a store server retry a lost
// connection by default: about what the Python plugin's client waited
// (five retries from 5 s, 1.5x each).
const DefaultRetryFor = time.Minute

// DefaultMaxWriterAge is the longest a writer may run before it commits.
const DefaultMaxWriterAge = time.Hour

// Store is an open store. It is safe for concurrent use.
type Store struct {
	be    backend.Backend
	cfg   Config
	dec   *zstd.Decoder
	encMu sync.Mutex
	encs  []*zstd.Encoder
	// deltaDecs are decoders for deltas (guarded by encMu).
	deltaDecs []*zstd.Decoder
	mu        sync.RWMutex
	chunks    map[chunker.ID]location
	packs     []chunker.ID
	packNo    map[chunker.ID]uint32
	// bases are the base ids of delta copies (location.base indexes it;
	// entry 0 is unused), baseNo numbers them.
	bases  []chunker.ID
	baseNo map[chunker.ID]uint32
	loaded map[string]bool // index objects already loaded
	// indexed is set once the whole index has been loaded.
	indexed bool
	// condemned holds the chunk copies gc has condemned (copy -> when);
	// writers never reuse them (see gc.go).
	condemned       condemnedSet
	condemnedLoaded map[string]bool
	now             func() time.Time
	maxWriterAge    time.Duration
	readWorkers     int
	// refreshMu serialises Refresh: one may reset the index while
	// another is loading into it.
	refreshMu sync.Mutex

	// remote is the store server connection (nil for a local store);
	// remoteChunks is set when chunks go through the server rather than
	// through packs this client reads and writes itself.
	remote       Remote
	remoteChunks ChunkService
}

// chunkCopy is one stored copy of a chunk: the same chunk may be stored in
// more than one pack.
type chunkCopy struct {
	id   chunker.ID
	pack chunker.ID
}

type location struct {
	pack   uint32
	offset uint32
	length uint32
	raw    uint32
	// base is the delta copy's base (index into Store.bases; 0: full).
	base uint32
	kind Kind
}

// Create opens the store at url, creating it first when the place is missing
// or empty. It refuses a non-empty directory that is not a store. created
// reports whether a new store was made.
func Create(ctx context.Context, url string, opts Options) (s *Store, created bool, err error) {
	u, err := ParseURL(url)
	if err != nil {
		return nil, false, err
	}
	if u.Scheme != "file" {
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
	if _, err := be.Stat(ctx, configName); err == nil {
		s, err := open(ctx, be, opts)
		return s, false, err
	}
	entries, err := os.ReadDir(u.Path)
	if err != nil {
		return nil, false, fmt.Errorf("read store directory %s: %w", u.Path, err)
	}
	if len(entries) > 0 {
		return nil, false, fmt.Errorf("%s is not empty and is not a backup store (it has no %q object): choose a new or empty directory", u.Path, configName)
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
			return nil, false, fmt.Errorf("create store %s: format version %d is not supported (this program handles versions %d to %d)", u.Path, opts.FormatVersion, MinFormatVersion, FormatVersion)
		}
		version = opts.FormatVersion
	}
	cfg := Config{Format: configFormat, Version: version, ID: hex.EncodeToString(rnd[:]), Created: time.Now().UTC(), Params: params}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, false, err
	}
	if err := be.PutIfAbsent(ctx, configName, append(data, '\n')); err != nil && !errors.Is(err, backend.ErrExists) {
		return nil, false, fmt.Errorf("create store %s: write config: %w", be.Location(), err)
	}
	s, err = open(ctx, be, opts)
	return s, err == nil, err
}

// Open opens an existing store.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	u, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "file" {
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
	return open(ctx, be, opts)
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
	s, err := open(ctx, r.Objects(), opts)
	if err != nil {
		r.Close()
		return nil, err
	}
	s.remote, s.remoteChunks = r, r.Chunks()
	return s, nil
}

// OpenBackend opens the store kept by an already constructed backend.
func OpenBackend(ctx context.Context, be backend.Backend, opts Options) (*Store, error) {
	return open(ctx, be, opts)
}

func open(ctx context.Context, be backend.Backend, opts Options) (*Store, error) {
	data, err := be.Get(ctx, configName, 0, -1)
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
	if cfg.Version < MinFormatVersion || cfg.Version > FormatVersion {
		return nil, fmt.Errorf("open store %s: store format version %d is not supported (this program handles versions %d to %d): use a backup-cli that matches the store", be.Location(), cfg.Version, MinFormatVersion, FormatVersion)
	}
	want := DefaultParams()
	if opts.Params != nil {
		want = *opts.Params
	}
	if err := compareParams(cfg.Params, want); err != nil {
		return nil, fmt.Errorf("open store %s: %w", be.Location(), err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(64<<20))
	if err != nil {
		return nil, err
	}
	s := &Store{be: be, cfg: cfg, dec: dec, now: opts.Now, maxWriterAge: opts.MaxWriterAge, readWorkers: opts.ReadWorkers}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxWriterAge <= 0 {
		s.maxWriterAge = DefaultMaxWriterAge
	}
	s.resetIndex()
	return s, nil
}

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

// indexVersion is the index format of the store's index objects and pack
// trailers.
func (s *Store) indexVersion() uint16 {
	if s.cfg.Version >= 2 {
		return indexVersion2
	}
	return indexVersion1
}

// DeltasAllowed reports whether writers of this Store may store page
// chunks as deltas: a version-2 store, with full access (a store server's
// node clients send full pages only).
func (s *Store) DeltasAllowed() bool { return s.cfg.Version >= 2 && s.remoteChunks == nil }

// Location is the store's URL, for messages.
func (s *Store) Location() string { return s.be.Location() }

// Backend exposes the backend for tools that inspect raw objects (tests,
// verify).
func (s *Store) Backend() backend.Backend { return s.be }

// Close releases the store.
func (s *Store) Close() error {
	s.dec.Close()
	s.encMu.Lock()
	for _, e := range s.encs {
		e.Close()
	}
	s.encs = nil
	for _, d := range s.deltaDecs {
		d.Close()
	}
	s.deltaDecs = nil
	s.encMu.Unlock()
	if s.remote != nil {
		return s.remote.Close()
	}
	return s.be.Close()
}

func (s *Store) resetIndex() {
	s.chunks = map[chunker.ID]location{}
	s.packs = nil
	s.packNo = map[chunker.ID]uint32{}
	s.bases = []chunker.ID{{}}
	s.baseNo = map[chunker.ID]uint32{}
	s.loaded = map[string]bool{}
	s.indexed = false
	s.condemned = nil
	s.condemnedLoaded = map[string]bool{}
}

// LoadIndex loads the whole chunk index if it is not loaded yet. Opening a
// store does not load it, and reads and writers do not need it: they look
// up the chunks they touch (Lookup), so that their memory does not grow
// with the store. The index costs about 115 bytes a chunk; a store server
// (which answers many clients' lookups), verify and list load it.
func (s *Store) LoadIndex(ctx context.Context) error {
	if s.remoteChunks != nil {
		return nil // the server's index
	}
	s.mu.RLock()
	indexed := s.indexed
	s.mu.RUnlock()
	if indexed {
		return nil
	}
	return s.Refresh(ctx)
}

// ReleaseIndex drops the in-memory chunk index (the plugin does so after a
// compaction, to stay small while idle). It must not run concurrently with
// reads or writers of this Store.
func (s *Store) ReleaseIndex() {
	s.mu.Lock()
	s.resetIndex()
	s.mu.Unlock()
}

// Refresh loads index objects written since the index was loaded (by other
// writers), so that their chunks are found and not written again.
func (s *Store) Refresh(ctx context.Context) error {
	if s.remoteChunks != nil {
		return nil // the server's index
	}
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	if err := s.loadCondemned(ctx); err != nil {
		return err
	}
	var names []string
	present := map[string]bool{}
	err := s.be.List(ctx, "index/", func(in backend.Info) error {
		present[in.Name] = true
		s.mu.RLock()
		seen := s.loaded[in.Name]
		s.mu.RUnlock()
		if !seen {
			names = append(names, in.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("load index of store %s: %w", s.Location(), err)
	}
	// gc removed packs since the index was loaded: start over.
	s.mu.Lock()
	gone := false
	for name := range s.loaded {
		if !present[name] {
			gone = true
			break
		}
	}
	if gone {
		condemned, condemnedLoaded := s.condemned, s.condemnedLoaded
		s.resetIndex()
		s.condemned, s.condemnedLoaded = condemned, condemnedLoaded
		names = names[:0]
		for name := range present {
			names = append(names, name)
		}
	}
	s.mu.Unlock()
	for _, name := range names {
		pack, entries, err := s.readIndex(ctx, name)
		if errors.Is(err, backend.ErrNotFound) {
			// gc removed it since the listing: its pack is gone, and
			// its live chunks, if any, were indexed anew first.
			continue
		}
		if err != nil {
			return fmt.Errorf("load index of store %s: %w", s.Location(), err)
		}
		s.addIndex(name, pack, entries)
	}
	s.mu.Lock()
	s.indexed = true
	s.mu.Unlock()
	return nil
}

func (s *Store) addIndex(name string, pack chunker.ID, entries []indexEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loaded[name] {
		return
	}
	s.loaded[name] = true
	no := number(&s.packs, s.packNo, pack)
	for _, e := range entries {
		if old, dup := s.chunks[e.ID]; dup {
			// Keep the first copy, unless gc condemned it and this one
			// is a fresh copy, or this one is a full copy that replaces
			// a delta copy (reads prefer full copies).
			oldCondemned := s.condemned.has(chunkCopy{e.ID, s.packs[old.pack]})
			newCondemned := s.condemned.has(chunkCopy{e.ID, pack})
			if !preferCopy(oldCondemned, old.base != 0, newCondemned, e.delta()) {
				continue
			}
		}
		var base uint32
		if e.delta() {
			base = number(&s.bases, s.baseNo, e.Base)
		}
		s.chunks[e.ID] = location{pack: no, offset: e.Offset, length: e.Length, raw: e.Raw, kind: e.Kind, base: base}
	}
}

// Has reports whether the loaded index (LoadIndex) holds a chunk; without
// it, it knows nothing and reports false (use Lookup). Through a store
// server without full access it always reports false: writers ask the
// server instead.
//
// A chunk whose only known copy gc has condemned is reported missing, so
// that writers store it again rather than reuse a copy gc may delete.
func (s *Store) Has(id chunker.ID) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	loc, ok := s.chunks[id]
	if !ok {
		return false
	}
	return !s.condemned.has(chunkCopy{id, s.packs[loc.pack]})
}

// ChunkInfo describes where a stored chunk is.
type ChunkInfo struct {
	Pack   chunker.ID
	Kind   Kind
	Offset uint32
	Length uint32 // stored bytes
	Raw    uint32 // uncompressed bytes
	// Base is the chunk this copy is a delta against (zero: a full copy).
	Base chunker.ID
}

// Locate returns where the loaded index (LoadIndex) says a chunk is stored
// (false without it: use Lookup; false through a store server without full
// access: the client does not see the index).
func (s *Store) Locate(id chunker.ID) (ChunkInfo, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	l, ok := s.chunks[id]
	if !ok {
		return ChunkInfo{}, false
	}
	return s.info(l), true
}

// info describes a location; s.mu must be held.
func (s *Store) info(l location) ChunkInfo {
	return ChunkInfo{Pack: s.packs[l.pack], Kind: l.kind, Offset: l.offset, Length: l.length, Raw: l.raw, Base: s.bases[l.base]}
}

// ChunkCount is the number of distinct chunks in the loaded index.
func (s *Store) ChunkCount() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.chunks)
}

func (s *Store) encoder() (*zstd.Encoder, error) {
	s.encMu.Lock()
	defer s.encMu.Unlock()
	if n := len(s.encs); n > 0 {
		e := s.encs[n-1]
		s.encs = s.encs[:n-1]
		return e, nil
	}
	return zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
}

func (s *Store) putEncoder(e *zstd.Encoder) {
	s.encMu.Lock()
	s.encs = append(s.encs, e)
	s.encMu.Unlock()
}

// LocalDir returns the directory that holds the store's object name on this
// machine, when the backend is local (the journal needs a real file).
func (s *Store) LocalDir(name string) (string, error) {
	lb, ok := s.be.(*local.Backend)
	if !ok {
		return "", fmt.Errorf("store %s keeps no local files", s.Location())
	}
	p, err := lb.Path(name)
	if err != nil {
		return "", err
	}
	return filepath.Clean(p), nil
}

// readIndex reads one index object, checks it against its name and decodes
// it. A missing object is reported wrapping backend.ErrNotFound.
func (s *Store) readIndex(ctx context.Context, name string) (chunker.ID, []indexEntry, error) {
	data, err := s.readIndexData(ctx, name)
	if err != nil {
		return chunker.ID{}, nil, err
	}
	pack, entries, err := decodeIndex(data, -1)
	if err != nil {
		return chunker.ID{}, nil, fmt.Errorf("index %s: %w", name, err)
	}
	return pack, entries, nil
}

// readIndexData reads one index object and checks it against its name.
func (s *Store) readIndexData(ctx context.Context, name string) ([]byte, error) {
	data, err := s.be.Get(ctx, name, 0, -1)
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", name, err)
	}
	if chunker.Sum(data).String() != name[strings.LastIndexByte(name, '/')+1:] {
		return nil, fmt.Errorf("index %s is damaged (content does not match its name): run backup-cli verify", name)
	}
	return data, nil
}
