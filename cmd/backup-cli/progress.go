package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/clnbackup/backup/internal/units"
	"golang.org/x/term"
)

// progressBar draws one updating line on the command's error output when
// that is a terminal, and does nothing otherwise (logs, pipes and
// in-process callers stay clean). A nil bar is valid and draws nothing.
type progressBar struct {
	w     io.Writer
	label string
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

// newProgress returns a bar drawing on w, or nil (no progress) unless w is
// a terminal: only an *os.File can be one, so a buffer or a pipe given by
// a caller never receives the control sequences.
func newProgress(w io.Writer, label string) *progressBar {
	if f, ok := w.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &progressBar{w: w, label: label}
}

// fn returns the callback for an operation counted in bytes (nil when
// hidden).
func (p *progressBar) fn() func(done, total int64) {
	if p == nil {
		return nil
	}
	return func(done, total int64) { p.update("", done, total, true) }
}

// stage returns the callback of one stage of an operation with several,
// counted in objects or, if bytes, in bytes (nil when hidden).
func (p *progressBar) stage(name string, bytes bool) func(done, total int64) {
	if p == nil {
		return nil
	}
	return func(done, total int64) { p.update(name, done, total, bytes) }
}

func (p *progressBar) update(stage string, done, total int64, bytes bool) {
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
	amount := fmt.Sprintf("%d/%d", done, total)
	if bytes {
		amount = units.Bytes(done) + " / " + units.Bytes(total)
	}
	if stage != "" {
		amount = stage + " " + amount
	}
	fmt.Fprintf(p.w, "\r\033[K%s %5.1f%% %s", p.label, pct, amount)
	p.drawn = true
}

// done ends the progress line.
func (p *progressBar) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
