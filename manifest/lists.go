package manifest

import (
	"encoding/binary"
	"fmt"

	"github.com/clnbackup/backup/chunker"
)

// List chunks and patch chunks hold a snapshot's page IDs. Both are stored as
// ordinary chunks (named by their hash, compressed, in packs), so unchanged
// lists are shared between manifests and collected by the same gc as pages.
const (
	listMagic  = "CLNL"
	patchMagic = "CLNP"
	listFormat = 1
	// MaxListEntries bounds the IDs one list chunk may hold.
	MaxListEntries = 1 << 16
	// MaxPages bounds a snapshot's page count (1 TiB of 4 KiB pages), so
	// that a damaged count cannot make a reader allocate without limit.
	MaxPages = 1 << 28
)

// EncodeList encodes page IDs (a run of consecutive pages) as a list chunk.
func EncodeList(ids []chunker.ID) []byte {
	b := make([]byte, 0, 9+len(ids)*chunker.IDSize)
	b = append(b, listMagic...)
	b = append(b, listFormat)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

// DecodeList decodes a list chunk.
func DecodeList(b []byte) ([]chunker.ID, error) {
	if len(b) < 9 || string(b[:4]) != listMagic {
		return nil, fmt.Errorf("not a list chunk")
	}
	if b[4] != listFormat {
		return nil, fmt.Errorf("list chunk: unknown format version %d", b[4])
	}
	n := binary.BigEndian.Uint32(b[5:9])
	if n > MaxListEntries || uint64(len(b)-9) != uint64(n)*chunker.IDSize {
		return nil, fmt.Errorf("list chunk: %d entries do not match %d bytes", n, len(b)-9)
	}
	ids := make([]chunker.ID, n)
	for i := range ids {
		copy(ids[i][:], b[9+i*chunker.IDSize:])
	}
	return ids, nil
}

// PatchEntry sets the ID of one page.
type PatchEntry struct {
	Page uint32
	ID   chunker.ID
}

// Patch changes a page table: it sets the page count, then replaces the IDs
// of the listed pages (in increasing page order, each below Pages).
type Patch struct {
	Pages   uint32
	Entries []PatchEntry
}

const patchEntrySize = 4 + chunker.IDSize

// EncodePatch encodes a patch chunk.
func EncodePatch(p Patch) []byte {
	b := make([]byte, 0, 13+len(p.Entries)*patchEntrySize)
	b = append(b, patchMagic...)
	b = append(b, listFormat)
	b = binary.BigEndian.AppendUint32(b, p.Pages)
	b = binary.BigEndian.AppendUint32(b, uint32(len(p.Entries)))
	for _, e := range p.Entries {
		b = binary.BigEndian.AppendUint32(b, e.Page)
		b = append(b, e.ID[:]...)
	}
	return b
}

// DecodePatch decodes and checks a patch chunk.
func DecodePatch(b []byte) (Patch, error) {
	if len(b) < 13 || string(b[:4]) != patchMagic {
		return Patch{}, fmt.Errorf("not a patch chunk")
	}
	if b[4] != listFormat {
		return Patch{}, fmt.Errorf("patch chunk: unknown format version %d", b[4])
	}
	p := Patch{Pages: binary.BigEndian.Uint32(b[5:9])}
	if p.Pages > MaxPages {
		return Patch{}, fmt.Errorf("patch chunk: %d pages exceed the limit of %d", p.Pages, MaxPages)
	}
	n := binary.BigEndian.Uint32(b[9:13])
	if uint64(len(b)-13) != uint64(n)*patchEntrySize {
		return Patch{}, fmt.Errorf("patch chunk: %d entries do not match %d bytes", n, len(b)-13)
	}
	p.Entries = make([]PatchEntry, n)
	for i := range p.Entries {
		o := 13 + i*patchEntrySize
		e := &p.Entries[i]
		e.Page = binary.BigEndian.Uint32(b[o:])
		copy(e.ID[:], b[o+4:])
		if e.Page >= p.Pages || (i > 0 && e.Page <= p.Entries[i-1].Page) {
			return Patch{}, fmt.Errorf("patch chunk: entry %d (page %d) out of order or beyond %d pages", i, e.Page, p.Pages)
		}
	}
	return p, nil
}

// PageTable is a snapshot's page IDs in page order, built from its list
// chunks and then its patches.
type PageTable []chunker.ID

// Apply applies a patch to the table.
func (t *PageTable) Apply(p Patch) {
	tab := *t
	if int(p.Pages) <= len(tab) {
		tab = tab[:p.Pages]
	} else {
		tab = append(tab, make([]chunker.ID, int(p.Pages)-len(tab))...)
	}
	for _, e := range p.Entries {
		tab[e.Page] = e.ID
	}
	*t = tab
}

// Diff returns the patch that turns t into next.
func (t PageTable) Diff(next PageTable) Patch {
	p := Patch{Pages: uint32(len(next))}
	for i, id := range next {
		if i >= len(t) || t[i] != id {
			p.Entries = append(p.Entries, PatchEntry{Page: uint32(i), ID: id})
		}
	}
	return p
}

// Check verifies that the table is complete for a snapshot of the given
// page count (no page without an ID).
func (t PageTable) Check(pages uint32) error {
	if uint32(len(t)) != pages {
		return fmt.Errorf("page table has %d pages, snapshot has %d", len(t), pages)
	}
	for i, id := range t {
		if id.IsZero() {
			return fmt.Errorf("page table: page %d has no chunk", i+1)
		}
	}
	return nil
}
