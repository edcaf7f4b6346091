package plugin

// An in-process lightningd for the tests: Run over io.Pipe pairs, every
// message it writes checked to be one JSON-RPC 2.0 object followed by
// "\n\n", and nothing else.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clnbackup/backup/replay"
	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
)

var bg = context.Background()

const waitLimit = 60 * time.Second

// outMsg is one message the plugin wrote.
type outMsg struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   *rpcError       `json:"error"`
	raw     []byte
}

type logLine struct{ Level, Message string }

// pipeRun is one plugin.Run driven over pipes.
type pipeRun struct {
	t      testing.TB
	in     *io.PipeWriter
	status chan int
	read   chan struct{} // closed when the output ends

	mu      sync.Mutex
	msgs    []outMsg
	logs    []logLine
	waiters map[string]chan outMsg // raw id -> reply
	bad     []string               // protocol violations
	nextID  int
}

// startRun starts plugin.Run on the lightning directory dir.
func startRun(t testing.TB, dir string, cfg Config) *pipeRun {
	t.Helper()
	cfg.Dir = dir
	if cfg.LockWait == 0 {
		cfg.LockWait = -1
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	r := &pipeRun{t: t, in: inW, status: make(chan int, 1), read: make(chan struct{}), waiters: map[string]chan outMsg{}}
	go func() {
		st := Run(inR, outW, cfg)
		inR.Close()
		outW.Close()
		r.status <- st
	}()
	go r.readOutput(outR)
	t.Cleanup(func() { r.stop() })
	return r
}

// readOutput splits the plugin's output on "\n\n" and checks every message.
func (r *pipeRun) readOutput(out io.Reader) {
	defer close(r.read)
	br := bufio.NewReader(out)
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return
		}
		if err != nil {
			r.violation("output ends inside a message: %q", line)
			return
		}
		if b, err := br.ReadByte(); err != nil || b != '\n' {
			r.violation("message not followed by \"\\n\\n\": %q", line)
			return
		}
		r.accept(bytes.TrimSuffix(line, []byte("\n")))
	}
}

func (r *pipeRun) violation(format string, args ...any) {
	r.mu.Lock()
	r.bad = append(r.bad, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *pipeRun) accept(raw []byte) {
	var m outMsg
	if !bytes.HasPrefix(raw, []byte("{")) || !json.Valid(raw) || json.Unmarshal(raw, &m) != nil {
		r.violation("not a JSON object: %q", raw)
		return
	}
	m.raw = append([]byte(nil), raw...)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	switch {
	case m.JSONRPC != "2.0":
		r.bad = append(r.bad, fmt.Sprintf("jsonrpc is not 2.0: %s", raw))
	case m.Method == "log" && len(m.ID) == 0:
		var l logLine
		if err := json.Unmarshal(m.Params, &l); err != nil || l.Message == "" ||
			!strings.Contains(" debug info warn error ", " "+l.Level+" ") {
			r.bad = append(r.bad, fmt.Sprintf("bad log notification: %s", raw))
		}
		r.logs = append(r.logs, l)
	case m.Method == "" && len(m.ID) > 0:
		if (len(m.Result) == 0) == (m.Error == nil) {
			r.bad = append(r.bad, fmt.Sprintf("response needs exactly one of result and error: %s", raw))
		}
		ch, ok := r.waiters[string(m.ID)]
		if !ok {
			r.bad = append(r.bad, fmt.Sprintf("response to an id never sent (or sent twice): %s", raw))
			return
		}
		delete(r.waiters, string(m.ID))
		ch <- m
	default:
		r.bad = append(r.bad, fmt.Sprintf("unexpected message: %s", raw))
	}
}

// expect registers a reply waiter for the raw id; call before sending.
func (r *pipeRun) expect(id string) chan outMsg {
	ch := make(chan outMsg, 1)
	r.mu.Lock()
	r.waiters[id] = ch
	r.mu.Unlock()
	return ch
}

// write sends raw bytes to the plugin's stdin.
func (r *pipeRun) write(s string) {
	r.t.Helper()
	if _, err := io.WriteString(r.in, s); err != nil {
		r.t.Fatalf("write to plugin: %v", err)
	}
}

func (r *pipeRun) wait(ch chan outMsg, what string) outMsg {
	r.t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitLimit):
		r.t.Fatalf("no reply to %s", what)
		return outMsg{}
	}
}

// encodeRequest encodes a request with the raw id.
func encodeRequest(id, method string, params any) string {
	p, err := json.Marshal(params)
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%s,"method":%q,"params":%s}`, id, method, p) + "\n\n"
}

// callID sends a request with a given raw id and waits for the reply.
func (r *pipeRun) callID(id, method string, params any) outMsg {
	r.t.Helper()
	ch := r.expect(id)
	r.write(encodeRequest(id, method, params))
	return r.wait(ch, method)
}

// call sends a request with a fresh string id and waits for the reply.
func (r *pipeRun) call(method string, params any) outMsg {
	r.t.Helper()
	r.mu.Lock()
	r.nextID++
	id := fmt.Sprintf(`"cln:%s#%d"`, method, r.nextID)
	r.mu.Unlock()
	return r.callID(id, method, params)
}

func (r *pipeRun) dbWrite(version uint32, writes ...string) outMsg {
	r.t.Helper()
	if writes == nil {
		writes = []string{}
	}
	return r.call("db_write", map[string]any{"data_version": version, "writes": writes})
}

// mustContinue sends a db_write and fails unless it is acknowledged.
func (r *pipeRun) mustContinue(version uint32, writes ...string) {
	r.t.Helper()
	m := r.dbWrite(version, writes...)
	if string(m.Result) != `{"result":"continue"}` {
		r.t.Fatalf("db_write %d: got %s, want continue", version, m.raw)
	}
}

// mustRefuse sends a db_write and fails unless it is refused with an error
// whose message contains want; it returns the message.
func (r *pipeRun) mustRefuse(version uint32, want string, writes ...string) string {
	r.t.Helper()
	m := r.dbWrite(version, writes...)
	if m.Error == nil || !strings.Contains(m.Error.Message, want) {
		r.t.Fatalf("db_write %d: got %s, want an error containing %q", version, m.raw, want)
	}
	return m.Error.Message
}

func (r *pipeRun) init(options map[string]any) {
	r.t.Helper()
	if options == nil {
		options = map[string]any{}
	}
	m := r.call("init", map[string]any{"options": options, "configuration": map[string]any{"lightning-dir": "x", "startup": true}})
	if string(m.Result) != `{}` {
		r.t.Fatalf("init: got %s, want {}", m.raw)
	}
}

// logsWith returns the log lines containing s.
func (r *pipeRun) logsWith(s string) []logLine {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []logLine
	for _, l := range r.logs {
		if strings.Contains(l.Message, s) {
			out = append(out, l)
		}
	}
	return out
}

// waitLog waits for a log line containing s.
func (r *pipeRun) waitLog(s string) logLine {
	r.t.Helper()
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if l := r.logsWith(s); len(l) > 0 {
			return l[0]
		}
	}
	r.t.Fatalf("no log line containing %q; logs:\n%s", s, r.allLogs())
	return logLine{}
}

func (r *pipeRun) allLogs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, l := range r.logs {
		fmt.Fprintf(&b, "  [%s] %s\n", l.Level, l.Message)
	}
	return b.String()
}

// stop closes the plugin's stdin (lightningd exiting), waits for Run and
// checks its output; it returns Run's status.
func (r *pipeRun) stop() int {
	r.t.Helper()
	r.in.Close()
	var st int
	select {
	case st = <-r.status:
		r.status <- st // stop may be called again (Cleanup)
	case <-time.After(waitLimit):
		r.t.Fatalf("Run did not return after stdin closed")
	}
	<-r.read
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.bad {
		r.t.Errorf("plugin output: %s", b)
	}
	r.bad = nil
	if len(r.waiters) > 0 {
		r.t.Errorf("%d requests never answered", len(r.waiters))
		r.waiters = map[string]chan outMsg{}
	}
	return st
}

// newLightningDir makes a store with the node (an empty database, or a
// snapshot of db) and a lightning directory whose backup.lock names it.
func newLightningDir(t testing.TB, node, db string) (dir, url string) {
	t.Helper()
	base := t.TempDir()
	url = "file://" + filepath.Join(base, "store")
	st, _, err := store.Create(bg, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := history.Init(bg, st, node, db, nil); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(base, "lightning")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeLock(t, dir, map[string]string{"backend_url": url, "node": node})
	return dir, url
}

func writeLock(t testing.TB, dir string, content any) {
	t.Helper()
	data, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, LockName), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// restoreNewest restores the node's newest state and compares it with want
// table by table.
func restoreNewest(t testing.TB, url, node, want string) {
	t.Helper()
	st, err := store.Open(bg, url, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dest := filepath.Join(t.TempDir(), "restored.sqlite3")
	if _, err := history.Restore(bg, st, history.RestoreOptions{Node: node, Dest: dest}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	diff, err := replay.Diff(dest, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(diff) > 0 {
		t.Fatalf("restored database differs from %s:\n%s", want, strings.Join(diff, "\n"))
	}
}
