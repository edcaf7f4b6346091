package plugin

// backup-compact, automatic compaction, and backup-status.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/clnbackup/backup/store/history"
)

// Pauses before the next automatic compaction after one that failed or found
// nothing to do, so that a trigger that stays true does not start one per
// write.
const (
	retryAfterFailure = 10 * time.Minute
	retryAfterNothing = time.Minute
)

// compactor runs at most one compaction at a time and remembers the last
// result. It is shared by the read loop and the compaction goroutine.
type compactor struct {
	mu      sync.Mutex
	running bool
	started time.Time
	reason  string
	retryAt time.Time // no automatic compaction before this
	last    *compactRecord
	// jitter scales the automatic triggers (jitterFactor, drawn at the
	// first write; 0 before). Only the read loop uses it.
	jitter float64
}

// compactRecord is a finished compaction.
type compactRecord struct {
	reason   string
	finished time.Time
	outcome  CompactOutcome
	err      error
}

// tryStart marks a compaction as running unless one is; an automatic one
// also waits for retryAt.
func (c *compactor) tryStart(reason string, now time.Time, auto bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running || (auto && now.Before(c.retryAt)) {
		return false
	}
	c.running, c.started, c.reason = true, now, reason
	return true
}

// abandon ends a compaction that turned out to have nothing to do before it
// began (backup-compact answered with the statistics).
func (c *compactor) abandon() {
	c.mu.Lock()
	c.running = false
	c.mu.Unlock()
}

func (c *compactor) finish(rec compactRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running = false
	switch {
	case rec.err != nil:
		c.retryAt = rec.finished.Add(retryAfterFailure)
	case rec.outcome.Manifest == 0:
		c.retryAt = rec.finished.Add(retryAfterNothing)
	}
	if rec.err != nil || rec.outcome.Manifest != 0 {
		c.last = &rec
	}
}

// compactRPC is backup-compact. The decision whether one is running is taken
// here, in the read loop, so that two calls in a row are answered in order;
// the rest runs in the background and writes continue meanwhile.
func (p *plugin) compactRPC(req *request) {
	if p.backup == nil {
		p.out.fail(req.ID, codeUnavailable, p.unavailable())
		return
	}
	const reason = "requested with backup-compact"
	if !p.comp.tryStart(reason, time.Now(), false) {
		p.out.reply(req.ID, legacyAnswer{"compaction still in progress"})
		return
	}
	id, b := req.ID, p.backup
	p.wg.Add(1)
	runLowPriority(p.ctx, func(ctx context.Context, prio string) {
		defer p.wg.Done()
		// Not p.ctx: the answer is still due when lightningd closes stdin.
		ok, stats, err := b.Compactable(context.Background())
		if err != nil {
			p.comp.finish(compactRecord{reason: reason, finished: time.Now(), err: err})
			p.out.fail(id, codeUnavailable, fmt.Sprintf("cannot compact: %v", err))
			return
		}
		if !ok {
			p.comp.abandon()
			p.out.reply(id, stats)
			return
		}
		p.out.reply(id, legacyAnswer{"compaction started"})
		p.compact(ctx, b, reason, prio)
	})
}

// legacyAnswer is the Python plugin's {"result": "..."} answer.
type legacyAnswer struct {
	Result string `json:"result"`
}

// maybeCompact starts an automatic compaction when a trigger is reached. It
// runs after every write, so it only compares counters kept in memory.
func (p *plugin) maybeCompact() {
	if !p.initDone {
		return // the options are not known before init
	}
	if p.comp.jitter == 0 {
		p.comp.jitter = jitterFactor()
	}
	now := time.Now()
	reason := autoReason(p.opts, p.backup.Pending(), now, p.comp.jitter)
	if reason == "" || !p.comp.tryStart(reason, now, true) {
		return
	}
	b := p.backup
	p.wg.Add(1)
	runLowPriority(p.ctx, func(ctx context.Context, prio string) {
		defer p.wg.Done()
		p.compact(ctx, b, reason, prio)
	})
}

// autoReason says which automatic trigger is reached ("" if none); each
// trigger is scaled by jitter (jitterFactor).
func autoReason(o options, pend Pending, now time.Time, jitter float64) string {
	jitter = max(jitter, 1)
	scale := func(v int64) int64 { return int64(float64(v) * jitter) }
	every := time.Duration(float64(o.compactEvery) * jitter)
	switch {
	case o.compactChanges > 0 && pend.Changes >= scale(o.compactChanges):
		return fmt.Sprintf("automatic: %d changes since the newest snapshot, %s=%d x%.2f jitter", pend.Changes, optCompactChanges, o.compactChanges, jitter)
	case o.compactBytes > 0 && pend.JournalBytes >= scale(o.compactBytes):
		return fmt.Sprintf("automatic: %d journal bytes since the newest snapshot, %s=%d x%.2f jitter", pend.JournalBytes, optCompactBytes, o.compactBytes, jitter)
	case o.compactEvery > 0 && pend.Changes > 1 && now.Sub(pend.SnapshotTime) >= every:
		// More than one change: the newest is never sealed (a rewind
		// could still replace it), so one alone gives nothing to compact.
		return fmt.Sprintf("automatic: the newest snapshot is %s old, %s=%s x%.2f jitter", now.Sub(pend.SnapshotTime).Round(time.Second), optCompactEvery, o.compactEvery, jitter)
	}
	return ""
}

// compact runs a compaction that tryStart admitted, logs and records its
// result; prio says at what priority it runs. ctx is p.ctx, marked for the
// priority of the store's workers.
func (p *plugin) compact(ctx context.Context, b Backup, reason, prio string) {
	p.out.logf(levelInfo, "Compaction started (%s; %s)", reason, prio)
	out, err := b.Compact(ctx)
	rec := compactRecord{reason: reason, finished: time.Now(), outcome: out, err: err}
	p.comp.finish(rec)
	switch {
	case err != nil && p.ctx.Err() != nil:
		p.out.logf(levelInfo, "Compaction stopped: the plugin is shutting down (%v); the backup is complete without it", err)
	case err != nil:
		p.out.logf(levelWarn, "Compaction failed: %v. Changes are still backed up in the journal; the next automatic compaction is tried in %s.",
			err, retryAfterFailure)
	case out.Manifest == 0:
		p.out.log(levelInfo, "Compaction: nothing to compact")
	default:
		p.out.logf(levelInfo, "Compaction done: manifest %d, snapshot at data_version %d, %d changes sealed, %d bytes added to the store, "+
			"%d bytes of pages read from it, in %s (%s)",
			out.Manifest, out.DataVersion, out.Sealed, out.Added, out.Fetched, out.Duration.Round(time.Millisecond), history.PhaseSummary(out.Phases))
		if out.CacheErr != nil {
			p.out.logf(levelWarn, "Compaction cache not kept: %v; the next compaction reads the whole snapshot from the store", out.CacheErr)
		} else if out.ProofErr != nil {
			p.out.logf(levelInfo, "Compaction cache kept without a proof (%v): the next compaction checks it page by page", out.ProofErr)
		}
	}
}

// unavailable explains why there is no backup to work on.
func (p *plugin) unavailable() string {
	if p.failed != "" {
		return p.failed
	}
	return "the backup is not open yet (it opens at lightningd's init)"
}

// statusReply is backup-status's answer.
type statusReply struct {
	// State is "backing up", or "refusing writes" after a refusal (Error
	// says why; lightningd stops at its next db_write).
	State          string           `json:"state"`
	Error          string           `json:"error,omitempty"`
	Node           string           `json:"node,omitempty"`
	Store          string           `json:"store,omitempty"`
	DataVersion    uint32           `json:"data_version"`
	Manifests      int              `json:"manifests"`
	NewestManifest *manifestAge     `json:"newest_manifest,omitempty"`
	Journal        journalStatus    `json:"journal"`
	Compaction     compactionStatus `json:"compaction"`
	StoredBytes    int64            `json:"stored_bytes"`
	LogicalBytes   int64            `json:"logical_bytes"`
	// FreeBytes is the free space of a file:// store's file system
	// (absent through a store server, whose disk the plugin cannot see).
	FreeBytes *uint64 `json:"free_bytes,omitempty"`
	// FreeThreshold is the low-space warning's threshold at its last
	// check (a day of journal growth, at least backup-free-space-floor),
	// and LowSpace whether free space is below it (warned, not yet
	// recovered): absent when the plugin does not watch (a store server).
	FreeThreshold *uint64 `json:"free_threshold_bytes,omitempty"`
	LowSpace      *bool   `json:"low_space,omitempty"`
}

type manifestAge struct {
	ManifestStatus
	AgeSeconds int64 `json:"age_seconds"`
}

type journalStatus struct {
	// Records and Bytes (SQL bytes) are the changes after the newest
	// restore point, not yet sealed into the store.
	Records int   `json:"records"`
	Bytes   int64 `json:"bytes"`
}

type compactionStatus struct {
	State          string        `json:"state"` // "running" or "idle"
	Reason         string        `json:"reason,omitempty"`
	RunningSeconds float64       `json:"running_seconds,omitempty"`
	Last           *compactLast  `json:"last,omitempty"`
	Auto           autoTriggers  `json:"automatic"`
	Pending        pendingStatus `json:"since_snapshot"`
}

type compactLast struct {
	Reason          string    `json:"reason"`
	Finished        time.Time `json:"finished"`
	Manifest        uint64    `json:"manifest,omitempty"`
	DataVersion     uint32    `json:"data_version,omitempty"`
	SealedChanges   int       `json:"sealed_changes"`
	AddedBytes      int64     `json:"added_bytes"`
	DurationSeconds float64   `json:"duration_seconds"`
	// Phases is where the time went (history.Compact's phases).
	Phases []history.Phase `json:"phases,omitempty"`
	Error  string          `json:"error,omitempty"`
}

type autoTriggers struct {
	Changes      int64  `json:"changes"`
	JournalBytes int64  `json:"journal_bytes"`
	Interval     string `json:"interval"`
}

type pendingStatus struct {
	Changes      int64 `json:"changes"`
	JournalBytes int64 `json:"journal_bytes"`
}

func (c *compactor) status(now time.Time) compactionStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := compactionStatus{State: "idle"}
	if c.running {
		s.State, s.Reason, s.RunningSeconds = "running", c.reason, now.Sub(c.started).Seconds()
	}
	if r := c.last; r != nil {
		s.Last = &compactLast{Reason: r.reason, Finished: r.finished, Manifest: r.outcome.Manifest, DataVersion: r.outcome.DataVersion,
			SealedChanges: r.outcome.Sealed, AddedBytes: r.outcome.Added, DurationSeconds: r.outcome.Duration.Seconds(), Phases: r.outcome.Phases}
		if r.err != nil {
			s.Last.Error = r.err.Error()
		}
	}
	return s
}

// statusRPC is backup-status. What the read loop owns is copied here; the
// slow part (reading manifests, listing the store) runs in the background.
func (p *plugin) statusRPC(req *request) {
	if p.backup == nil {
		p.out.fail(req.ID, codeUnavailable, p.unavailable())
		return
	}
	r := statusReply{State: "backing up", Error: p.failed, Node: p.start.Node, Store: p.start.Store, DataVersion: p.ver.held}
	if p.failed != "" {
		r.State = "refusing writes"
	}
	every := "0 (disabled)"
	if p.opts.compactEvery > 0 {
		every = p.opts.compactEvery.String()
	}
	auto := autoTriggers{Changes: p.opts.compactChanges, JournalBytes: p.opts.compactBytes, Interval: every}
	pend := p.backup.Pending()
	id, b := req.ID, p.backup
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.statusMu.Lock() // one at a time: each reads every manifest
		s, err := b.Status(context.Background())
		p.statusMu.Unlock()
		if err != nil {
			p.out.fail(id, codeUnavailable, fmt.Sprintf("cannot read the backup's status: %v", err))
			return
		}
		now := time.Now()
		r.Manifests, r.StoredBytes, r.LogicalBytes = s.Manifests, s.StoredBytes, s.LogicalBytes
		if s.FreeKnown {
			r.FreeBytes = &s.FreeBytes
		}
		if w := p.space.Load(); w != nil {
			if threshold, low, known := w.state(); known {
				r.FreeThreshold, r.LowSpace = &threshold, &low
			}
		}
		if s.Manifests > 0 {
			r.NewestManifest = &manifestAge{ManifestStatus: s.Newest, AgeSeconds: int64(now.Sub(s.Newest.Created).Seconds())}
		}
		r.Journal = journalStatus{Records: s.JournalRecords, Bytes: s.JournalBytes}
		r.Compaction = p.comp.status(now)
		r.Compaction.Auto = auto
		r.Compaction.Pending = pendingStatus{Changes: pend.Changes, JournalBytes: pend.JournalBytes}
		p.out.reply(id, r)
	}()
}
