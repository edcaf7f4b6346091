package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/journal"
	_ "github.com/clnbackup/backup/store/remote" // socket: URLs
)

// fleetNode is one simulated node: its plugin's connection to the server,
// its journal, and what it measured.
type fleetNode struct {
	c    *fleetConfig
	name string
	rng  *rand.Rand
	st   *store.Store
	j    store.Journal

	version uint32
	lat     []time.Duration

	// compaction, in the background as the plugin does it
	cmu         sync.Mutex
	compacting  bool
	sealed      uint64 // journal seq the newest manifest covers
	mseq        uint64
	compactions int64
	cwg         sync.WaitGroup

	errMu    sync.Mutex
	errors   int64
	firstErr error
}

func (n *fleetNode) connect(ctx context.Context, addr, token string) error {
	st, err := store.Open(ctx, "socket:"+addr, store.Options{Token: token})
	if err != nil {
		return fmt.Errorf("node %s: open store: %w", n.name, err)
	}
	n.st = st
	if n.j, err = st.OpenJournal(ctx, n.name); err != nil {
		return fmt.Errorf("node %s: open journal: %w", n.name, err)
	}
	n.version = uint32(n.j.NextSeq())
	return nil
}

func (n *fleetNode) close() {
	n.cwg.Wait()
	if n.j != nil {
		n.j.Close()
	}
	if n.st != nil {
		n.st.Close()
	}
}

func (n *fleetNode) fail(err error) {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	n.errors++
	if n.firstErr == nil {
		n.firstErr = fmt.Errorf("node %s: %w", n.name, err)
	}
}

// change is a db_write like lightningd's: a row of about ChangeBytes and
// the data_version bump.
func (n *fleetNode) change() journal.Record {
	n.version++
	v := n.version
	return journal.Record{Version: v, Statements: []string{
		fmt.Sprintf("INSERT INTO forwards (id, data) VALUES (%d, x'%s');", v, strings.Repeat("a5", n.c.ChangeBytes/2)),
		fmt.Sprintf("UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = %d", v-1),
	}}
}

// run sends changes until deadline: events spaced exponentially at Rate,
// each a burst of BurstSize changes with probability BurstProb.
func (n *fleetNode) run(ctx context.Context, deadline time.Time) {
	// Nodes start at random offsets within one mean gap, not in step.
	if n.c.Rate > 0 {
		time.Sleep(time.Duration(n.rng.Float64() / n.c.Rate * float64(time.Second)))
	}
	for ctx.Err() == nil && time.Now().Before(deadline) {
		count := 1
		if n.rng.Float64() < n.c.BurstProb {
			count = n.c.BurstSize
		}
		for range count {
			t0 := time.Now()
			r, err := n.j.Append(n.change())
			if err != nil {
				n.fail(err)
				return // the plugin stops acknowledging too
			}
			n.lat = append(n.lat, time.Since(t0))
			n.maybeCompact(ctx, r.Seq)
		}
		if n.c.Rate > 0 {
			gap := time.Duration(n.rng.ExpFloat64() / n.c.Rate * float64(time.Second))
			if time.Now().Add(gap).After(deadline) {
				return
			}
			time.Sleep(gap)
		}
	}
}

// maybeCompact starts a compaction in the background once CompactAt
// records have piled up since the last one (one at a time).
func (n *fleetNode) maybeCompact(ctx context.Context, last uint64) {
	n.cmu.Lock()
	defer n.cmu.Unlock()
	if n.compacting || last-n.sealed < uint64(n.c.CompactAt) {
		return
	}
	n.compacting = true
	n.cwg.Add(1)
	go func() {
		defer n.cwg.Done()
		err := n.compact(ctx)
		n.cmu.Lock()
		n.compacting = false
		n.cmu.Unlock()
		if err != nil {
			n.fail(fmt.Errorf("compact: %w", err))
		}
	}()
}

// compact seals the journal records since the last compaction into a
// change chunk and a manifest, then trims the journal: the server-side
// traffic of a plugin's compaction (the database snapshot aside).
func (n *fleetNode) compact(ctx context.Context) error {
	n.cmu.Lock()
	after := n.sealed
	n.cmu.Unlock()
	var recs []journal.Record
	if err := n.st.ReadJournal(ctx, n.name, after, func(r journal.Record) error {
		recs = append(recs, r)
		return nil
	}); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	first, last := recs[0], recs[len(recs)-1]
	w, err := n.st.NewWriter(ctx)
	if err != nil {
		return err
	}
	defer w.Close()
	id, _, err := w.Put(ctx, chunk.KindChange, journal.EncodeChunk(recs))
	if err != nil {
		return err
	}
	m := &manifest.Manifest{Format: manifest.FormatVersion, Node: n.name, Seq: n.mseq + 1, Created: time.Now(),
		Changes:    []manifest.ChangeRef{{ID: id, FirstSeq: first.Seq, LastSeq: last.Seq, FirstVersion: first.Version, LastVersion: last.Version, Records: len(recs)}},
		JournalSeq: last.Seq}
	if _, err := w.Commit(ctx, m); err != nil {
		return err
	}
	n.mseq++
	if err := n.j.Trim(last.Seq); err != nil {
		return err
	}
	n.cmu.Lock()
	n.sealed = last.Seq
	n.compactions++
	n.cmu.Unlock()
	return nil
}

// httpGet returns the body of a GET.
func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}
