package history_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// addNode inits node name from an empty database and, with records > 0,
// opens it and appends that many changes (data_version 1..records). It
// returns the open node (nil without records); the test closes it.
func addNode(t *testing.T, st *store.Store, name string, records int) *history.Node {
	t.Helper()
	if _, err := history.Init(ctx, st, name, "", nil); err != nil {
		t.Fatal(err)
	}
	if records == 0 {
		return nil
	}
	n, err := history.OpenNode(ctx, st, name)
	if err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= records; v++ {
		feed(t, n, journal.Record{Version: uint32(v), Time: time.Now().UTC(),
			Statements: []string{fmt.Sprintf("UPDATE vars SET intval=%d WHERE name='data_version';", v)}})
	}
	return n
}

func statusOf(t *testing.T, st *store.Store) (history.StoreStatus, map[string]history.NodeStatus) {
	t.Helper()
	s, err := history.Status(ctx, st, "")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	byName := map[string]history.NodeStatus{}
	for _, n := range s.Nodes {
		byName[n.Name] = n
	}
	return s, byName
}

func staleNames(s history.StoreStatus, max time.Duration) []string {
	var names []string
	for _, n := range s.Stale(max) {
		names = append(names, n.Name)
	}
	return names
}

// TestStatus: a node whose writer holds and refreshes its lease is live;
// once the store's clock passes the lease's expiry it is expired and stale
// after max; a node closed cleanly or never opened has no writer and is
// always stale; journal records show as backlog and as the last change;
// the free space of a file:// store is known.
func TestStatus(t *testing.T) {
	t.Parallel()
	_, url := newStore(t)
	clock := &testClock{}
	st := openWithClock(t, url, clock)
	live := addNode(t, st, "live", 3)
	t.Cleanup(func() { live.Close() })
	sealed := addNode(t, st, "sealed", 4)
	if _, err := sealed.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sealed.Close(); err != nil { // releases the lease
		t.Fatal(err)
	}
	addNode(t, st, "never", 0)

	s, nodes := statusOf(t, st)
	if !s.FreeKnown || s.FreeBytes == 0 || !s.SizeKnown || s.StoredBytes == 0 {
		t.Errorf("file:// store: free %d (known %v), stored %d (known %v)", s.FreeBytes, s.FreeKnown, s.StoredBytes, s.SizeKnown)
	}
	for _, tc := range []struct {
		node           string
		state          string
		backlog        int
		version        uint32
		lastChangeFrom string
	}{
		{"live", history.WriterLive, 3, 3, "journal"},
		{"sealed", history.WriterNone, 1, 4, "journal"}, // the newest group is never sealed
		{"never", history.WriterNone, 0, 0, "snapshot"},
	} {
		n := nodes[tc.node]
		if n.Writer.State != tc.state || n.Backlog.Records != tc.backlog || n.NewestVersion != tc.version || n.LastChangeFrom != tc.lastChangeFrom {
			t.Errorf("node %s: writer %s, backlog %d, version %d, last change from %q; want %s, %d, %d, %q",
				tc.node, n.Writer.State, n.Backlog.Records, n.NewestVersion, n.LastChangeFrom, tc.state, tc.backlog, tc.version, tc.lastChangeFrom)
		}
		if n.LastChange.IsZero() || n.Snapshot.IsZero() || n.RestorePoints == 0 {
			t.Errorf("node %s: last change %v, snapshot %v, %d restore points", tc.node, n.LastChange, n.Snapshot, n.RestorePoints)
		}
		if tc.backlog > 0 && n.Backlog.Bytes == 0 {
			t.Errorf("node %s: %d records of backlog but 0 bytes", tc.node, tc.backlog)
		}
	}
	if l := nodes["live"].Writer; l.LastRefresh.IsZero() || l.Lease == nil || !l.StaleSince.IsZero() {
		t.Errorf("live writer: %+v", l)
	}
	if got, want := staleNames(s, time.Minute), []string{"never", "sealed"}; !slices.Equal(got, want) {
		t.Errorf("stale now: %v, want %v (no writer counts as stale)", got, want)
	}

	// The writer keeps refreshing by the real clock; the store's clock
	// moves past its lease's expiry: it is what a writer that stopped
	// refreshing looks like.
	clock.Advance(10 * time.Minute)
	s, nodes = statusOf(t, st)
	w := nodes["live"].Writer
	if w.State != history.WriterExpired || !w.StaleSince.Equal(w.Lease.Expires) {
		t.Fatalf("writer after the clock passed its expiry: %+v", w)
	}
	for _, tc := range []struct {
		max  time.Duration
		want []string
	}{
		{time.Minute, []string{"live", "never", "sealed"}},
		{time.Hour, []string{"never", "sealed"}},
	} {
		if got := staleNames(s, tc.max); !slices.Equal(got, tc.want) {
			t.Errorf("stale for more than %s: %v, want %v", tc.max, got, tc.want)
		}
	}
}

// TestStatusDeadOwner: a lease not yet expired whose owner process on this
// host is gone (a lightningd that crashed) shows dead, stale since its last
// refresh, as a new writer would judge it (it takes such a lease over).
func TestStatusDeadOwner(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	addNode(t, st, "crashed", 0)
	p := exec.Command("true")
	if err := p.Run(); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	now := st.Now().UTC()
	l := store.Lease{Node: "crashed", Owner: "0123456789abcdef", Host: host, PID: p.Process.Pid,
		Acquired: now.Add(-10 * time.Second), Expires: now.Add(50 * time.Second), Gen: 1}
	data, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Objects().PutIfAbsent(ctx, "nodes/crashed/lease/00000000000000000001", data); err != nil {
		t.Fatal(err)
	}
	s, nodes := statusOf(t, st)
	w := nodes["crashed"].Writer
	if w.State != history.WriterDead || !w.StaleSince.Equal(l.Acquired) {
		t.Fatalf("writer whose process is gone: %+v", w)
	}
	for _, tc := range []struct {
		max  time.Duration
		want []string
	}{{5 * time.Second, []string{"crashed"}}, {time.Minute, nil}} {
		if got := staleNames(s, tc.max); !slices.Equal(got, tc.want) {
			t.Errorf("stale for more than %s: %v, want %v", tc.max, got, tc.want)
		}
	}
}

// TestStatusLastSealedChange: with no journal record after the newest
// restore point (here its journal is gone), the last change is the newest
// sealed change's time, read from its change chunk.
func TestStatusLastSealedChange(t *testing.T) {
	t.Parallel()
	st, url := newStore(t)
	n := addNode(t, st, "lost", 4)
	if _, err := n.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(strings.TrimPrefix(url, "file://"), "nodes", "lost", "journal")); err != nil {
		t.Fatal(err)
	}
	_, nodes := statusOf(t, st)
	got := nodes["lost"]
	if got.LastChangeFrom != "sealed change" || got.LastChange.IsZero() || got.LastChange.After(time.Now()) || !got.LastChange.After(got.Snapshot) || got.NewestVersion != 3 {
		t.Fatalf("status after the journal went: %+v", got)
	}
}
