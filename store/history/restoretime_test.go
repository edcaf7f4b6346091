package history_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// TestStateAt replays trace1 through the journal with a record a minute
// (each record's Time set as the plugin sets it, the store's clock moved
// with them), compacting and sealing in between, then restores by time:
// at, just before and just after records, at compactions, after the
// newest record and at the init. Every restore must equal, table by
// table, the committed history applied up to the last change received at
// or before that time. A time before the init is refused, naming the
// oldest state; after forget drops all but the newest restore point, the
// oldest state is the first one that restore point holds.
func TestStateAt(t *testing.T) {
	t.Parallel()
	clock := &testClock{}
	_, url := newStore(t)
	st := openWithClock(t, url, clock)
	clock.Advance(-365 * 24 * time.Hour) // times well apart from the real clock
	initM, n := initNode(t, st, "", "")
	compactAt := map[int]bool{5: true, 100: true, 250: true, 300: true, 386: true}
	var fed []journal.Record
	for i, r := range traceRecords(t, "trace1.jsonl") {
		clock.Advance(time.Minute)
		if compactAt[i] {
			if _, err := n.Compact(ctx, nil); err != nil {
				t.Fatalf("compact before hook %d: %v", i, err)
			}
			clock.Advance(time.Minute)
		}
		if i%97 == 0 {
			if _, err := n.Seal(ctx); err != nil {
				t.Fatalf("seal before hook %d: %v", i, err)
			}
		}
		r.Time = clock.Now()
		feed(t, n, r)
		fed = append(fed, r)
	}
	clock.Advance(time.Minute)
	if _, err := n.Compact(ctx, nil); err != nil { // the last restore point holds no record
		t.Fatal(err)
	}
	committed := resolved(fed)
	// want is the data_version of the last committed change received at or
	// before at (0, the empty database of the init, if none).
	want := func(at time.Time) uint32 {
		v := uint32(0)
		for _, r := range committed {
			if !r.Time.After(at) {
				v = r.Version
			}
		}
		return v
	}
	type pick struct {
		name string
		at   time.Time
	}
	picks := []pick{{"at the init", initM.Created}, {"a year later", clock.Now().Add(365 * 24 * time.Hour)}}
	for _, k := range []int{0, 1, 11, 12, 57, 150, 299, 300, 301, len(committed) - 2, len(committed) - 1} {
		at := committed[k].Time
		picks = append(picks,
			pick{fmt.Sprintf("at record %d", k), at},
			pick{fmt.Sprintf("just before record %d", k), at.Add(-time.Nanosecond)},
			pick{fmt.Sprintf("30s after record %d", k), at.Add(30 * time.Second)})
	}
	compactions := 0
	for _, seq := range seqsOf(t, st, "n1") {
		m, err := st.Manifest(ctx, "n1", seq)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Changes) == 0 && seq > 1 {
			compactions++
			picks = append(picks, pick{fmt.Sprintf("at compaction manifest %d", seq), m.Created})
		}
	}
	if compactions < len(compactAt) {
		t.Fatalf("only %d compactions written", compactions)
	}
	t.Run("picks", func(t *testing.T) {
		for _, p := range picks {
			t.Run(p.name, func(t *testing.T) {
				t.Parallel()
				got, err := history.StateAt(ctx, st, "n1", p.at)
				if err != nil {
					t.Fatalf("StateAt(%s): %v", p.at, err)
				}
				if w := want(p.at); got.Version != w || got.Received.After(p.at) {
					t.Fatalf("StateAt(%s) = %+v, want data_version %d received at or before it", p.at, got, w)
				}
				path, res := restore(t, st, history.RestoreOptions{Version: &got.Version})
				if res.Version != got.Version {
					t.Fatalf("restored data_version %d, want %d", res.Version, got.Version)
				}
				assertSame(t, p.name, path, expectedAt(t, committed, got.Version))
			})
		}
	})
	// After the picks (their group waits for them): forget drops the
	// restore points they used.
	_, err := history.StateAt(ctx, st, "n1", initM.Created.Add(-time.Second))
	if !errors.Is(err, history.ErrBeforeOldest) || !strings.Contains(err.Error(), "the oldest state the store holds is data_version 0") ||
		!strings.Contains(err.Error(), initM.Created.Format(time.RFC3339Nano)) {
		t.Fatalf("a time before the init: %v, want a refusal naming data_version 0 at %s", err, initM.Created.Format(time.RFC3339Nano))
	}
	clock.Advance(time.Hour)
	if _, err := history.Forget(ctx, st, history.ForgetOptions{Policy: history.ForgetPolicy{Last: 1}}); err != nil {
		t.Fatal(err)
	}
	seqs := seqsOf(t, st, "n1")
	if len(seqs) != 1 {
		t.Fatalf("forget kept %v", seqs)
	}
	last, err := st.Manifest(ctx, "n1", seqs[0])
	if err != nil {
		t.Fatal(err)
	}
	// The oldest state left: the restore point's, at the time it was
	// written, or the first change after it the journal still holds (the
	// last changes stay in the journal: lightningd may still replace them).
	oldestV, oldestAt, from := last.LastVersion(), last.Created, fmt.Sprintf("manifest %d", last.Seq)
	for _, r := range committed {
		if r.Version > last.LastVersion() && r.Time.Before(oldestAt) {
			oldestV, oldestAt, from = r.Version, r.Time, "record "
			break
		}
	}
	_, err = history.StateAt(ctx, st, "n1", oldestAt.Add(-time.Nanosecond))
	if wantMsg := fmt.Sprintf("the oldest state the store holds is data_version %d, received at %s (%s", oldestV, oldestAt.Format(time.RFC3339Nano), from); !errors.Is(err, history.ErrBeforeOldest) || !strings.Contains(err.Error(), wantMsg) {
		t.Fatalf("a time before the only restore point left: %v, want %q", err, wantMsg)
	}
	if got, err := history.StateAt(ctx, st, "n1", oldestAt); err != nil || got.Version != oldestV {
		t.Fatalf("at the oldest state left: %+v, %v; want data_version %d", got, err, oldestV)
	}
}
