package plugin

// The low-space warning: a full file:// store refuses db_writes, which stops
// lightningd, so the plugin warns while there is still time to free space.
// A background goroutine samples the bytes the plugin appended (memory only)
// and, at most once a minute or sooner when the journal grew by a good part
// of the margin left, the store's free space (statfs). The db_write path does
// no extra work beyond the counter it already kept.

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/clnbackup/backup/internal/units"
)

// DefaultFreeSpaceFloor is the least free space the plugin is content with
// on a file:// store, whatever the journal's growth rate: below it there is
// little room left for a compaction's snapshot either.
const DefaultFreeSpaceFloor = 1 << 30

// Timing of the low-space watch.
const (
	// spacePollEvery is how often the appended-bytes counter is read
	// (memory only).
	spacePollEvery = time.Second
	// spaceCheckEvery is how often free space is read at the least (a
	// statfs): the brief's "at most once a minute" unless the journal grew
	// by a quarter of the margin since the last check.
	spaceCheckEvery = time.Minute
	// spaceRateWindow is the sliding window the growth rate is measured
	// over; spaceRateMinSpan the least span of it the rate is trusted on,
	// so that the burst of writes at lightningd's start-up does not look
	// like a day's worth of growth.
	spaceRateWindow  = time.Hour
	spaceRateMinSpan = 10 * time.Minute
	// spaceRewarnEvery repeats the warning while space stays low.
	spaceRewarnEvery = 24 * time.Hour
	// spaceHorizon is how much journal growth must fit in the free space.
	spaceHorizon = 24 * time.Hour
)

// FreeSpacer is implemented by a Backup that can tell the free space of its
// store's file system (a file:// store), so that the plugin can warn before
// a full disk refuses db_writes. known is false when the store cannot tell
// (a store server: its disk is the server's); the plugin then does not watch.
type FreeSpacer interface {
	FreeSpace() (free uint64, known bool, err error)
}

// rateSample is the appended-bytes counter at a time.
type rateSample struct {
	at    time.Time
	bytes int64
}

// spaceWatch decides when to read free space and when to warn. It is pure
// logic over the times and counters it is given, so that tests drive it
// with their own clock. Its methods are safe for concurrent use (the watch
// goroutine updates it, backup-status reads it).
type spaceWatch struct {
	floor uint64 // the threshold's least value

	mu        sync.Mutex
	samples   []rateSample // oldest first, at most one a minute, within the window
	checked   bool         // free space was read at least once
	lastTry   time.Time    // the last read, successful or not
	lastBytes int64        // the counter at the last check
	lastFree  uint64       // free space at the last check
	threshold uint64       // at the last check
	low       bool         // warned, and free space has not recovered since
	warned    time.Time
}

func newSpaceWatch(floor uint64) *spaceWatch { return &spaceWatch{floor: floor} }

// record adds the appended-bytes counter read at now to the rate's window.
func (w *spaceWatch) record(now time.Time, appended int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.recordLocked(now, appended)
}

func (w *spaceWatch) recordLocked(now time.Time, appended int64) {
	n := len(w.samples)
	if n > 0 && now.Sub(w.samples[n-1].at) < time.Minute {
		return // one sample a minute is plenty for an hour's window
	}
	w.samples = append(w.samples, rateSample{now, appended})
	// Drop samples that fell out of the window, keeping the newest one
	// that did so that the window stays covered.
	drop := 0
	for drop+1 < len(w.samples) && now.Sub(w.samples[drop+1].at) >= spaceRateWindow {
		drop++
	}
	w.samples = w.samples[drop:]
}

// rate is the journal's growth in bytes per second over the window up to
// now, or 0 when the window spans less than spaceRateMinSpan.
func (w *spaceWatch) rateLocked(now time.Time, appended int64) float64 {
	if len(w.samples) == 0 {
		return 0
	}
	first := w.samples[0]
	span := now.Sub(first.at)
	if span < spaceRateMinSpan || appended <= first.bytes {
		return 0
	}
	return float64(appended-first.bytes) / span.Seconds()
}

// due reports whether free space should be read now: never read yet, a
// minute since the last read, or the journal grew by a quarter of the
// margin that was left above the threshold.
func (w *spaceWatch) due(now time.Time, appended int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.recordLocked(now, appended)
	if w.lastTry.IsZero() || now.Sub(w.lastTry) >= spaceCheckEvery {
		return true
	}
	if w.lastFree > w.threshold {
		return uint64(max(appended-w.lastBytes, 0)) >= (w.lastFree-w.threshold)/4
	}
	return false
}

// failed notes a free-space reading that failed at now, so that the next
// is tried a minute later.
func (w *spaceWatch) failed(now time.Time) {
	w.mu.Lock()
	w.lastTry = now
	w.mu.Unlock()
}

// check takes a free-space reading and returns the line to log ("" for
// none): a warning when free space falls below the threshold, again once a
// day while it stays low, and a notice when it recovered above the
// threshold plus a tenth (so that a reading hovering at the threshold does
// not warn on every check).
func (w *spaceWatch) check(now time.Time, appended int64, free uint64) (level, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.recordLocked(now, appended)
	rate := w.rateLocked(now, appended)
	day := uint64(rate * spaceHorizon.Seconds())
	threshold := max(w.floor, day)
	w.checked, w.lastTry, w.lastBytes, w.lastFree, w.threshold = true, now, appended, free, threshold
	switch {
	case free < threshold && (!w.low || now.Sub(w.warned) >= spaceRewarnEvery):
		w.low, w.warned = true, now
		return levelWarn, lowSpaceMessage(free, threshold, w.floor, rate)
	case w.low && free >= threshold+threshold/10:
		w.low = false
		return levelInfo, fmt.Sprintf("Free space on the backup store recovered: %s free, above the warning threshold of %s",
			units.Bytes(int64(free)), units.Bytes(int64(threshold)))
	}
	return "", ""
}

// state is what backup-status shows: the threshold of the last check and
// whether the plugin is warning (known is false before the first check).
func (w *spaceWatch) state() (threshold uint64, low, known bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.threshold, w.low, w.checked
}

func lowSpaceMessage(free, threshold, floor uint64, rate float64) string {
	growth := fmt.Sprintf("the journal's growth rate is not known yet (it is measured over at least %s)", spaceRateMinSpan)
	if rate > 0 {
		growth = fmt.Sprintf("the journal grows by %s/day: at this rate the disk is full in about %s",
			units.Bytes(int64(rate*spaceHorizon.Seconds())), formatSeconds(float64(free)/rate))
	}
	return fmt.Sprintf("Low free space on the backup store: %s free, below the warning threshold of %s (a day of journal growth, "+
		"at least %s=%d); %s. When it is full every db_write is refused and lightningd stops. "+
		"Free space now: run `lightning-cli backup-compact`, drop old restore points with `backup-cli forget` and reclaim them with `backup-cli gc`, "+
		"or grow the store's file system.",
		units.Bytes(int64(free)), units.Bytes(int64(threshold)), optFreeSpaceFloor, floor, growth)
}

// formatSeconds is a duration in seconds for a human: days and hours, or
// less precise below two days.
func formatSeconds(secs float64) string {
	if secs >= 100*24*3600 || math.IsNaN(secs) {
		return "more than 100 days"
	}
	d := time.Duration(secs * float64(time.Second))
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days %d hours", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Second).String()
}

// watchSpace runs until the plugin shuts down, if the backup can tell its
// free space. It never touches the read loop's state: it reads the
// backup's Pending counters and statfs, and logs.
func (p *plugin) watchSpace(b Backup) {
	fs, ok := b.(FreeSpacer)
	if !ok {
		return
	}
	if _, known, err := fs.FreeSpace(); err == nil && !known {
		return // a store server: its disk is not ours to see
	}
	w := newSpaceWatch(p.opts.freeFloor)
	p.space.Store(w)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(spacePollEvery)
		defer t.Stop()
		failing := false
		for {
			now, appended := time.Now(), b.Pending().Appended
			if w.due(now, appended) {
				free, _, err := fs.FreeSpace()
				switch {
				case err != nil:
					w.failed(now)
					if failing {
						break
					}
					failing = true
					p.out.logf(levelWarn, "Cannot read the free space of the backup store: %v. The low-space warning is off until it can; "+
						"check that the store's file system is mounted", err)
				case err == nil:
					failing = false
					if level, msg := w.check(now, appended, free); msg != "" {
						p.out.log(level, msg)
					}
				}
			}
			select {
			case <-p.ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}
