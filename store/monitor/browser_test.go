package monitor_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/store/monitor"
)

// TestPageInBrowser renders the status page in a real headless browser
// (chromium, installed by .ci/run; skipped when there is none, never
// mocked): the DOM it builds names both nodes, marks bob stale, and the
// page needs nothing from outside (no request but the page itself).
func TestPageInBrowser(t *testing.T) {
	t.Parallel()
	var browser string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		t.Skip("no headless browser on PATH (chromium): .ci/run installs one")
	}
	f := newFixture(t)
	// Loopback without a token, as `server --http 127.0.0.1:PORT` serves.
	h := monitor.New(monitor.Options{Store: f.st, Stats: f.srv.Stats, Errorf: t.Logf})
	var mu sync.Mutex
	var paths []string
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir="+t.TempDir(), "--dump-dom", hs.URL+"/")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s --dump-dom: %v", browser, err)
	}
	dom := string(out)
	for _, want := range []string{`id="node-alice"`, `id="node-bob"`, `class="stale"`, "STALE"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q:\n%s", want, dom)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range paths {
		if p != "/" && p != "/favicon.ico" {
			t.Errorf("the page made the browser fetch %s: it must need nothing but itself", p)
		}
	}
}
