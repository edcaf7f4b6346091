package history

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
)

// ForgetPolicy says which restore points to keep. Its rules add up: a
// manifest is kept when any rule keeps it. The zero policy keeps everything.
// Buckets (hours, days, ISO weeks) are in UTC, so the result does not depend
// on where forget runs.
type ForgetPolicy struct {
	// Last keeps the Last newest manifests.
	Last int `json:"keep_last,omitempty"`
	// Hourly, Daily and Weekly keep the newest manifest of each of the last
	// N hours, days or weeks that have manifests.
	Hourly int `json:"keep_hourly,omitempty"`
	Daily  int `json:"keep_daily,omitempty"`
	Weekly int `json:"keep_weekly,omitempty"`
	// Within keeps the manifests created within this duration of the
	// node's newest manifest (not of now: a node that stopped writing keeps
	// its last restore points however long it has been stopped).
	Within time.Duration `json:"keep_within_ns,omitempty"`
}

// IsZero reports whether the policy has no rule (and so keeps everything).
func (p ForgetPolicy) IsZero() bool { return p == ForgetPolicy{} }

// String lists the rules as the command-line flags that set them.
func (p ForgetPolicy) String() string {
	var s []string
	for _, r := range []struct {
		n    int
		flag string
	}{{p.Last, "last"}, {p.Hourly, "hourly"}, {p.Daily, "daily"}, {p.Weekly, "weekly"}} {
		if r.n > 0 {
			s = append(s, fmt.Sprintf("--keep-%s %d", r.flag, r.n))
		}
	}
	if p.Within > 0 {
		s = append(s, "--keep-within "+FormatDuration(p.Within))
	}
	if len(s) == 0 {
		return "no keep rule"
	}
	return strings.Join(s, " ")
}

// ForgetDecision is what Forget decided for one manifest, and why.
type ForgetDecision struct {
	Node     string    `json:"node"`
	Manifest uint64    `json:"manifest"`
	Created  time.Time `json:"created"`
	// Version is the data_version the restore point restores to.
	Version uint32   `json:"data_version"`
	Keep    bool     `json:"keep"`
	Reasons []string `json:"reasons"`
}

// ForgetOptions choose the nodes and the policy.
type ForgetOptions struct {
	// Node limits forget to one node ("": every node).
	Node   string
	Policy ForgetPolicy
	// DryRun decides and reports, and deletes nothing.
	DryRun bool
	// Progress, if set, is told about manifests read.
	Progress Progress
}

// ForgetReport is what Forget decided and did.
type ForgetReport struct {
	// Time is the store clock when forget ran.
	Time      time.Time        `json:"time"`
	Policy    ForgetPolicy     `json:"policy"`
	DryRun    bool             `json:"dry_run"`
	Decisions []ForgetDecision `json:"decisions"`
	Kept      int              `json:"kept"`
	// Dropped counts the manifests the policy drops; Deleted those
	// actually deleted (0 in a dry run).
	Dropped int `json:"dropped"`
	Deleted int `json:"deleted"`
}

// Forget applies a retention policy to the manifests of every node (or of
// opts.Node) and deletes the manifests it drops. It never drops a node's
// newest manifest: the journal's records build on it, and it is the
// newest state. A manifest it cannot read is kept (it cannot be judged; run
// backup-cli verify). Only manifest objects are deleted: backup-cli gc
// reclaims the chunks no remaining manifest names. Forget may run while the
// plugins write: a manifest committed after the listing is newer than every
// manifest considered, and so is never dropped.
func Forget(ctx context.Context, st *store.Store, opts ForgetOptions) (ForgetReport, error) {
	rep := ForgetReport{Time: st.Now().UTC(), Policy: opts.Policy, DryRun: opts.DryRun, Decisions: []ForgetDecision{}}
	if err := opts.Policy.check(); err != nil {
		return rep, err
	}
	nodes := []string{opts.Node}
	if opts.Node != "" {
		if _, err := st.Node(ctx, opts.Node); err != nil {
			return rep, err
		}
	} else {
		var err error
		if nodes, err = st.Nodes(ctx); err != nil {
			return rep, err
		}
	}
	seqs := map[string][]uint64{}
	var total, done int64
	for _, n := range nodes {
		s, err := st.ManifestSeqs(ctx, n)
		if err != nil {
			return rep, err
		}
		seqs[n] = s
		total += int64(len(s))
	}
	for _, n := range nodes {
		var ds []ForgetDecision
		err := eachManifest(ctx, st, n, seqs[n], func(seq uint64, m *manifest.Manifest, err error) error {
			done++
			opts.Progress.report(done, total)
			d := ForgetDecision{Node: n, Manifest: seq}
			switch {
			case errors.Is(err, backend.ErrNotFound):
				return nil // deleted since the listing (another forget)
			case err != nil:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				d.Keep, d.Reasons = true, []string{"manifest unreadable, kept (run backup-cli verify): " + err.Error()}
			default:
				d.Created, d.Version = m.Created, m.LastVersion()
			}
			ds = append(ds, d)
			return nil
		})
		if err != nil {
			return rep, err
		}
		decide(opts.Policy, ds)
		rep.Decisions = append(rep.Decisions, ds...)
	}
	for _, d := range rep.Decisions {
		if d.Keep {
			rep.Kept++
		} else {
			rep.Dropped++
		}
	}
	if opts.DryRun {
		return rep, nil
	}
	return rep, deleteDropped(ctx, st, &rep)
}

// deleteDropped deletes the manifests rep drops, manifestReaders at a time
// (each delete is a round trip, and a year of history drops hundreds per
// node). Their order does not matter: no restore point needs another
// manifest, and the newest, which the journal builds on, is never dropped.
func deleteDropped(ctx context.Context, st *store.Store, rep *ForgetReport) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var deleted atomic.Int64
	var wg sync.WaitGroup
	slots := make(chan struct{}, manifestReaders)
	for _, d := range rep.Decisions {
		if d.Keep {
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := st.DeleteManifest(ctx, d.Node, d.Manifest); err != nil {
				cancel(err)
				return
			}
			deleted.Add(1)
		})
	}
	wg.Wait()
	rep.Deleted = int(deleted.Load())
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("forget: %w (%d manifests deleted before it stopped; run forget again)", err, rep.Deleted)
	}
	return nil
}

func (p ForgetPolicy) check() error {
	if p.Last < 0 || p.Hourly < 0 || p.Daily < 0 || p.Weekly < 0 || p.Within < 0 {
		return fmt.Errorf("forget: keep rules must not be negative (%+v)", p)
	}
	return nil
}

// decide fills in Keep and Reasons for one node's manifests, given in
// increasing sequence order. Unreadable manifests (already kept) take no
// part in the rules.
func decide(p ForgetPolicy, ds []ForgetDecision) {
	if len(ds) == 0 {
		return
	}
	// The newest manifest by sequence number, readable or not.
	newest := &ds[len(ds)-1]
	if !newest.Keep {
		newest.Keep = true
		newest.Reasons = append(newest.Reasons, "newest manifest (the journal builds on it)")
	}
	if p.IsZero() {
		for i := range ds {
			if !ds[i].Keep {
				ds[i].Keep = true
				ds[i].Reasons = append(ds[i].Reasons, "no keep rule given: keeping everything")
			}
		}
		return
	}
	type bucket struct {
		left int
		last string
		name string
		key  func(time.Time) string
	}
	buckets := []*bucket{
		{left: p.Hourly, name: "hourly", key: func(t time.Time) string { return t.Format("2006-01-02 15:00") }},
		{left: p.Daily, name: "daily", key: func(t time.Time) string { return t.Format("2006-01-02") }},
		{left: p.Weekly, name: "weekly", key: func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
	}
	var newestTime time.Time
	for i := len(ds) - 1; i >= 0; i-- {
		if !ds[i].Created.IsZero() {
			newestTime = ds[i].Created
			break
		}
	}
	last := 0
	for i := len(ds) - 1; i >= 0; i-- { // newest first
		d := &ds[i]
		if d.Created.IsZero() {
			continue // unreadable
		}
		keep := func(reason string) {
			d.Keep = true
			d.Reasons = append(d.Reasons, reason)
		}
		if last < p.Last {
			last++
			keep(fmt.Sprintf("last %d", p.Last))
		}
		t := d.Created.UTC()
		for _, b := range buckets {
			if b.left <= 0 {
				continue
			}
			if k := b.key(t); k != b.last {
				b.last = k
				b.left--
				keep(fmt.Sprintf("%s (%s)", b.name, k))
			}
		}
		if p.Within > 0 && newestTime.Sub(d.Created) <= p.Within {
			keep("within " + FormatDuration(p.Within) + " of the newest")
		}
		if !d.Keep {
			d.Reasons = append(d.Reasons, "matches no keep rule")
		}
	}
}

// ParseDuration parses a retention or grace duration: Go durations ("36h",
// "90m", "1h30m") plus days and weeks ("7d", "2w", "1w3d12h"). A day is 24
// hours. Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	in := s
	if s == "" {
		return 0, errors.New("empty duration: write e.g. 36h, 7d or 2w")
	}
	var total time.Duration
	add := func(d time.Duration) error {
		if d < 0 || total > math.MaxInt64-d {
			return fmt.Errorf("duration %q is out of range", in)
		}
		total += d
		return nil
	}
	for s != "" {
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '.') {
			i++
		}
		j := i
		for j < len(s) && !(s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
			j++
		}
		num, unit := s[:i], s[i:j]
		if num == "" || unit == "" {
			return 0, fmt.Errorf("invalid duration %q: write a number and a unit (w, d, h, m, s), e.g. 36h, 7d or 2w", in)
		}
		s = s[j:]
		var per time.Duration
		switch unit {
		case "w":
			per = 7 * 24 * time.Hour
		case "d":
			per = 24 * time.Hour
		default:
			d, err := time.ParseDuration(num + unit)
			if err != nil {
				return 0, fmt.Errorf("invalid duration %q: %q: use the units w, d, h, m, s", in, num+unit)
			}
			if err := add(d); err != nil {
				return 0, err
			}
			continue
		}
		n, err := strconv.ParseFloat(num, 64)
		if err != nil || n*float64(per) >= math.MaxInt64 {
			return 0, fmt.Errorf("invalid duration %q: %q", in, num+unit)
		}
		if err := add(time.Duration(n * float64(per))); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// FormatDuration writes d in the largest units that keep it exact: "2w",
// "7d", "36h" ("1d12h" would be just as valid input), else Go's form.
func FormatDuration(d time.Duration) string {
	day := 24 * time.Hour
	switch {
	case d > 0 && d%(7*day) == 0:
		return fmt.Sprintf("%dw", d/(7*day))
	case d > 0 && d%day == 0:
		return fmt.Sprintf("%dd", d/day)
	case d > 0 && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.String()
}
