package history

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/writeback"
	"github.com/zeebo/blake3"
)

// The cache proof (CacheDir/<node>.snapshot.proof) lets a compaction skip
// hashing the whole cached snapshot. It is written only after the cache file
// is fdatasynced, and names the snapshot's page table (by digest) and the
// cache file's identity as stat reports it: device, inode, size,
// modification and change times. Any write, truncation or replacement of the
// file changes its ctime, which no unprivileged process can set back, so a
// proof that still matches means the file holds what the compaction that
// wrote it left there. The proof is removed (and its removal made durable)
// before the cache is changed again, so a crash never leaves a proof beside
// a half-changed file. A bad, missing or foreign proof only means a full
// check: every page hashed against the page table and PRAGMA
// integrity_check, as without a proof. Even a matching proof is not taken
// more than cacheFullCheckEvery times in a row (a disk that rots silently
// changes no ctime).

// cacheFullCheckEvery is how many compactions in a row may trust the proof
// before one checks the cache in full again.
var cacheFullCheckEvery = 16

const (
	proofSuffix = ".proof"
	proofMagic  = "CLNBPRF1"
	proofSize   = len(proofMagic) + 32 + 4 + 4 + 5*8 + 4 + 32
)

// cacheProof is what a proof file says about the cache file beside it.
type cacheProof struct {
	table    chunker.ID // tableDigest of the snapshot the file holds
	pageSize uint32
	pages    uint32
	dev, ino uint64
	size     int64
	mtime    int64  // ns
	ctime    int64  // ns
	trusted  uint32 // compactions since the last full check
}

// tableDigest names a page table: the BLAKE3 of its ids in order.
func tableDigest(tab manifest.PageTable) chunker.ID {
	h := blake3.New()
	for i := range tab {
		h.Write(tab[i][:])
	}
	var id chunker.ID
	copy(id[:], h.Sum(nil))
	return id
}

func (p cacheProof) encode() []byte {
	b := make([]byte, 0, proofSize)
	b = append(b, proofMagic...)
	b = append(b, p.table[:]...)
	b = binary.BigEndian.AppendUint32(b, p.pageSize)
	b = binary.BigEndian.AppendUint32(b, p.pages)
	for _, v := range []uint64{p.dev, p.ino, uint64(p.size), uint64(p.mtime), uint64(p.ctime)} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	b = binary.BigEndian.AppendUint32(b, p.trusted)
	sum := chunker.Sum(b)
	return append(b, sum[:]...)
}

var errBadProof = errors.New("not a cache proof, or a damaged one")

// decodeProof parses a proof file's bytes (from disk: any bytes at all).
func decodeProof(b []byte) (cacheProof, error) {
	if len(b) != proofSize || !bytes.HasPrefix(b, []byte(proofMagic)) {
		return cacheProof{}, errBadProof
	}
	body := b[:proofSize-32]
	if sum := chunker.Sum(body); !bytes.Equal(sum[:], b[proofSize-32:]) {
		return cacheProof{}, errBadProof
	}
	var p cacheProof
	r := body[len(proofMagic):]
	copy(p.table[:], r)
	r = r[32:]
	p.pageSize, p.pages = binary.BigEndian.Uint32(r), binary.BigEndian.Uint32(r[4:])
	r = r[8:]
	u := func(i int) uint64 { return binary.BigEndian.Uint64(r[8*i:]) }
	p.dev, p.ino, p.size, p.mtime, p.ctime = u(0), u(1), int64(u(2)), int64(u(3)), int64(u(4))
	p.trusted = binary.BigEndian.Uint32(r[40:])
	return p, nil
}

// fileIdentity fills p's file fields from fi.
func (p *cacheProof) fileIdentity(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	p.dev, p.ino, p.size = uint64(st.Dev), st.Ino, fi.Size()
	p.mtime = st.Mtim.Sec*1e9 + st.Mtim.Nsec
	p.ctime = st.Ctim.Sec*1e9 + st.Ctim.Nsec
	return true
}

// proofPath is where the cache's proof lives ("" without a cache).
func (c *snapCache) proofPath() string {
	if c.path == "" {
		return ""
	}
	return c.path + proofSuffix
}

// claim reads the cache's proof and says whether it vouches for the cache
// file as a copy of snapshot s (page table tab): the file is the one the
// proof names, unchanged since, and the proof has not been trusted
// cacheFullCheckEvery times in a row. Either way the proof is removed, and
// its removal made durable, before the caller takes the cache to change it.
// It returns the proof when it vouches.
func (c *snapCache) claim(s manifest.Snapshot, tab manifest.PageTable) (cacheProof, bool) {
	pp := c.proofPath()
	if pp == "" {
		return cacheProof{}, false
	}
	data, err := os.ReadFile(pp)
	if errors.Is(err, os.ErrNotExist) {
		return cacheProof{}, false
	}
	defer func() {
		// A proof whose removal may not last must not outlive the
		// file: without both, the next compaction fetches every page.
		if err := os.Remove(pp); (err != nil && !errors.Is(err, os.ErrNotExist)) || syncDir(c.dir) != nil {
			os.Remove(c.path)
			os.Remove(pp)
		}
	}()
	p, err := decodeProof(data)
	if err != nil || p.pageSize != s.PageSize || p.pages != s.Pages || int(p.trusted) >= cacheFullCheckEvery ||
		p.size != int64(s.PageSize)*int64(s.Pages) || p.table != tableDigest(tab) {
		return cacheProof{}, false
	}
	fi, err := os.Stat(c.path)
	var now cacheProof
	if err != nil || !now.fileIdentity(fi) || now.dev != p.dev || now.ino != p.ino || now.size != p.size ||
		now.mtime != p.mtime || now.ctime != p.ctime {
		return cacheProof{}, false
	}
	return p, true
}

// stillTaken says whether the file at tmp, which take moved the cache to,
// is still the file p vouches for (the rename changes only its ctime).
func stillTaken(tmp string, p cacheProof) bool {
	fi, err := os.Stat(tmp)
	var now cacheProof
	return err == nil && now.fileIdentity(fi) && now.dev == p.dev && now.ino == p.ino && now.size == p.size && now.mtime == p.mtime
}

// vouch writes the proof for the cache that keep just put in place, holding
// snapshot s (page table tab); trusted counts the compactions since the
// last full check. The cache file is fdatasynced first, so that a proof
// never outlives the data it names. A failure leaves no proof: the next
// compaction checks in full.
func (c *snapCache) vouch(s manifest.Snapshot, tab manifest.PageTable, trusted uint32) error {
	pp := c.proofPath()
	if pp == "" {
		return nil
	}
	f, err := os.OpenFile(c.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("cache proof: %w", err)
	}
	// Paced first: the replay's last checkpoint left pages dirty.
	fi, serr := f.Stat()
	if serr == nil {
		err = writeback.Drain(f, fi.Size())
	}
	if err == nil {
		err = f.Sync()
	}
	f.Close()
	p := cacheProof{table: tableDigest(tab), pageSize: s.PageSize, pages: s.Pages, trusted: trusted}
	if err == nil && serr == nil && !p.fileIdentity(fi) {
		err = errors.New("no file identity on this system")
	}
	if err = errors.Join(err, serr); err != nil {
		return fmt.Errorf("cache proof for %s: %w", c.path, err)
	}
	tmp, err := os.CreateTemp(c.dir, c.node+tempMark+"*")
	if err != nil {
		return fmt.Errorf("cache proof: %w", err)
	}
	_, err = tmp.Write(p.encode())
	err = errors.Join(err, tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), pp)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("cache proof %s: %w", pp, err)
	}
	return nil
}
