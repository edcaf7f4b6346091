package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// progressBar draws one updating line on stderr when stderr is a terminal,
// and does nothing otherwise (logs and pipes stay clean).
type progressBar struct {
	label string
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

func newProgress(label string) *progressBar {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return &progressBar{label: label}
}

// update is a history.Progress.
func (p *progressBar) update(done, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond && done < total {
		return
	}
	p.last = time.Now()
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	fmt.Fprintf(os.Stderr, "\r%s %5.1f%% %s / %s  ", p.label, pct, formatBytes(done), formatBytes(total))
	p.drawn = true
}

// fn returns the callback to pass to long operations (nil when hidden).
func (p *progressBar) fn() func(done, total int64) {
	if p == nil {
		return nil
	}
	return p.update
}

// done ends the progress line.
func (p *progressBar) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
