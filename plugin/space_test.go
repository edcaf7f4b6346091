package plugin

import (
	"strings"
	"testing"
	"time"
)

// TestSpaceWatch drives the low-space logic with its own clock: the floor,
// the rate over the window (ignored while it spans too little), the
// hysteresis, the daily repeat, and when free space is read.
func TestSpaceWatch(t *testing.T) {
	const MiB = 1 << 20
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := newSpaceWatch(100 * MiB)
	var appended int64
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	check := func(d time.Duration, free uint64, wantLevel, wantIn string) {
		t.Helper()
		level, msg := w.check(at(d), appended, free)
		if level != wantLevel || !strings.Contains(msg, wantIn) {
			t.Fatalf("at +%s, %d MiB free, %d appended: got %q %q, want level %q with %q", d, free/MiB, appended, level, msg, wantLevel, wantIn)
		}
	}

	if !w.due(at(0), 0) {
		t.Fatal("the first reading is not due")
	}
	check(0, 200*MiB, "", "")
	if _, low, known := w.state(); !known || low {
		t.Fatalf("state after a good reading: low=%v known=%v", low, known)
	}
	// A start-up burst within 5 minutes is not trusted as a rate (it
	// would be 74 MiB a day); after 10 minutes it is, 37 MiB a day.
	appended = 256 << 10
	check(5*time.Minute, 150*MiB, "", "")
	if th, _, _ := w.state(); th != 100*MiB {
		t.Fatalf("threshold %d MiB after a short burst, want the floor 100", th/MiB)
	}
	// Below the floor: one warning, with no rate yet.
	check(6*time.Minute, 99*MiB, levelWarn, "99.0 MiB free, below the warning threshold of 100.0 MiB")
	check(7*time.Minute, 98*MiB, "", "")
	// Back just above the threshold: not recovered (a tenth more needed).
	check(8*time.Minute, 105*MiB, "", "")
	check(9*time.Minute, 99*MiB, "", "")
	check(10*time.Minute, 111*MiB, levelInfo, "recovered")
	if _, low, _ := w.state(); low {
		t.Fatal("still low after recovering")
	}
	check(11*time.Minute, 99*MiB, levelWarn, "Low free space")
	// Staying low: again a day after the warning, not before.
	check(11*time.Minute+23*time.Hour, 99*MiB, "", "")
	check(11*time.Minute+24*time.Hour, 99*MiB, levelWarn, "Low free space")

	// The rate: 1 MiB a minute over the window is 1440 MiB a day, which
	// beats the floor; the message tells the rate and the time to full.
	w = newSpaceWatch(100 * MiB)
	appended = 0
	for m := 0; m <= 30; m++ {
		appended = int64(m) * MiB
		w.record(at(time.Duration(m)*time.Minute), appended)
	}
	check(30*time.Minute, 1000*MiB, levelWarn, "the journal grows by 1.41 GiB/day: at this rate the disk is full in about 16h40m0s")
	if th, _, _ := w.state(); th != 1440*MiB {
		t.Fatalf("threshold %d MiB, want a day at 1 MiB/min = 1440", th/MiB)
	}
	// The window slides: an hour later with no more growth, the rate
	// falls and the threshold is the floor again.
	check(30*time.Minute+2*time.Hour, 200*MiB, levelInfo, "recovered")
	if th, _, _ := w.state(); th != 100*MiB {
		t.Fatalf("threshold %d MiB after idle hours, want the floor", th/MiB)
	}

	// When free space is read: every minute, or once the journal grew by
	// a quarter of the margin (here 100 MiB over the floor: 25 MiB).
	w = newSpaceWatch(100 * MiB)
	appended = 0
	check(0, 200*MiB, "", "")
	for _, c := range []struct {
		d        time.Duration
		appended int64
		due      bool
	}{
		{time.Second, 0, false},
		{2 * time.Second, 24 * MiB, false},
		{3 * time.Second, 25 * MiB, true},
		{59 * time.Second, 0, false},
		{time.Minute, 0, true},
	} {
		if got := w.due(at(c.d), c.appended); got != c.due {
			t.Errorf("due at +%s with %d MiB appended = %v, want %v", c.d, c.appended/MiB, got, c.due)
		}
	}
	w.failed(at(time.Minute))
	if w.due(at(time.Minute+time.Second), 0) {
		t.Error("a failed reading is retried before a minute")
	}
}
