// Package lightningdtest plays lightningd's side of Core Lightning's plugin
// protocol over pipes, so that tests, benchmarks and demonstrations can run
// the real plugin executable exactly as lightningd runs it: started with the
// lightning network directory as working directory and LIGHTNINGD_PLUGIN=1
// in its environment, JSON-RPC 2.0 requests on its stdin, responses and
// notifications read from its stdout as a stream of JSON objects (split or
// joined across reads), string and numeric request ids, log notifications
// collected, and the db_write hook's only success answer being
// {"result": "continue"}.
//
// The driver is strict where lightningd is: anything on stdout that is not a
// JSON object gets the plugin killed, and a response to an id that was never
// sent (or sent with another type) is recorded as a protocol violation
// (Violations), which tests assert to be empty.
package lightningdtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Version is the LIGHTNINGD_VERSION the plugin is started with (the version
// the traces in testdata were recorded from).
const Version = "v26.06"

// DefaultTimeout bounds the wait for one response when Options.Timeout is 0.
// lightningd waits 60 seconds for getmanifest and init, and forever for a
// hook; a test wants an answer sooner than forever.
const DefaultTimeout = 60 * time.Second

var (
	// ErrExited is wrapped by errors about requests the plugin never answered
	// because it exited (or was killed).
	ErrExited = errors.New("plugin exited")
	// ErrTimeout is wrapped when a response did not come within the timeout.
	ErrTimeout = errors.New("no response from plugin")
)

// Options tune Start.
type Options struct {
	// Logf receives the plugin's log notifications and stderr lines and the
	// driver's own notes (nil: discard). Pass t.Logf in tests.
	Logf func(format string, args ...any)
	// Env is added to the plugin's environment (after the inherited one and
	// LIGHTNINGD_PLUGIN / LIGHTNINGD_VERSION).
	Env []string
	// Args are the plugin's command-line arguments (lightningd passes none).
	Args []string
	// Timeout bounds each wait for a response (0: DefaultTimeout).
	Timeout time.Duration
}

// LogLine is one "log" notification of the plugin.
type LogLine struct {
	Level   string    `json:"level"`
	Message string    `json:"message"`
	Time    time.Time `json:"-"`
}

// String is "level: message".
func (l LogLine) String() string { return l.Level + ": " + l.Message }

// Notification is a notification other than "log" that the plugin sent.
type Notification struct {
	Method string
	Params json.RawMessage
}

// RPCError is a JSON-RPC error object answered by the plugin.
type RPCError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Error formats the code and message.
func (e *RPCError) Error() string {
	return fmt.Sprintf("plugin error %d: %s", e.Code, e.Message)
}

// Response is the plugin's answer to one request.
type Response struct {
	// Result is the "result" member (nil when the answer is an error).
	Result json.RawMessage
	// Error is the "error" member (nil on success).
	Error *RPCError
	// RTT is the round trip: from the moment before the request's (last)
	// write to the moment the response was parsed.
	RTT time.Duration
}

// Lightningd is one running plugin process and lightningd's end of its
// pipes. Its methods may be called from several goroutines.
type Lightningd struct {
	cmd     *exec.Cmd
	dir     string
	opts    Options
	stdin   *os.File
	stdout  *os.File
	writeMu sync.Mutex

	exited  chan struct{} // closed when the process has been reaped
	waitErr error
	readers sync.WaitGroup // stdout and stderr readers

	holdMu sync.Mutex
	hold   *sync.Cond
	held   bool

	mu            sync.Mutex
	changed       chan struct{} // closed and replaced on every new log line
	pending       map[string]*Pending
	nextID        int
	stringIDs     bool
	closed        error // set once stdout is done: why no more responses come
	logs          []LogLine
	notifications []Notification
	violations    []string
	stderrTail    []string
	// dumping: the plugin was sent SIGQUIT for not exiting; dump holds
	// what it wrote since (its goroutines).
	dumping bool
	dump    []string
}

// Start runs the plugin executable at path with dir (the lightning network
// directory) as its working directory, the way lightningd does, and starts
// reading its stdout and stderr. Stop it with Close or Kill; cancelling ctx
// kills it too.
func Start(ctx context.Context, path, dir string, opts Options) (*Lightningd, error) {
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	absDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, opts.Args...)
	cmd.Dir = absDir
	cmd.Env = append(os.Environ(), "LIGHTNINGD_PLUGIN=1", "LIGHTNINGD_VERSION="+Version)
	cmd.Env = append(cmd.Env, opts.Env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	err = cmd.Start()
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start plugin %s: %w", path, err)
	}
	l := &Lightningd{
		cmd: cmd, dir: absDir, opts: opts, stdin: inW, stdout: outR,
		exited: make(chan struct{}), changed: make(chan struct{}),
		pending: make(map[string]*Pending),
	}
	l.hold = sync.NewCond(&l.holdMu)
	go func() {
		l.waitErr = cmd.Wait()
		close(l.exited)
	}()
	l.readers.Add(2)
	go l.readStdout(outR)
	go l.readStderr(errR)
	return l, nil
}

// PID is the plugin's process id.
func (l *Lightningd) PID() int { return l.cmd.Process.Pid }

// Dir is the plugin's working directory (absolute).
func (l *Lightningd) Dir() string { return l.dir }

// Exited is closed once the plugin process has exited and been reaped.
func (l *Lightningd) Exited() <-chan struct{} { return l.exited }

// Logs returns the log notifications received so far, in order.
func (l *Lightningd) Logs() []LogLine {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LogLine(nil), l.logs...)
}

// Notifications returns the notifications other than "log" received so far.
func (l *Lightningd) Notifications() []Notification {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Notification(nil), l.notifications...)
}

// Violations returns the protocol violations seen so far: output on stdout
// that is not a JSON object, responses to unknown ids or with the id's type
// changed, responses without "jsonrpc": "2.0" or with neither or both of
// result and error, requests sent by the plugin on stdout.
func (l *Lightningd) Violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.violations...)
}

// Stderr returns the last lines the plugin wrote to stderr.
func (l *Lightningd) Stderr() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.stderrTail...)
}

// WaitLog waits until a log line for which match is true has arrived (also
// one that arrived before the call) and returns it; ok is false after
// timeout or once the plugin's stdout is closed.
func (l *Lightningd) WaitLog(match func(LogLine) bool, timeout time.Duration) (LogLine, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		l.mu.Lock()
		for ; seen < len(l.logs); seen++ {
			if match(l.logs[seen]) {
				ll := l.logs[seen]
				l.mu.Unlock()
				return ll, true
			}
		}
		ch, done := l.changed, l.closed != nil
		l.mu.Unlock()
		if done {
			return LogLine{}, false
		}
		select {
		case <-ch:
		case <-deadline.C:
			return LogLine{}, false
		}
	}
}

func (l *Lightningd) violation(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.mu.Lock()
	l.violations = append(l.violations, msg)
	l.mu.Unlock()
	l.opts.Logf("lightningdtest: protocol violation: %s", msg)
}

// readStdout parses the plugin's stdout as a stream of JSON objects,
// wherever the reads split or join them.
func (l *Lightningd) readStdout(r *os.File) {
	defer l.readers.Done()
	defer r.Close()
	dec := json.NewDecoder(gatedReader{l, r})
	dec.UseNumber()
	var end error
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			end = fmt.Errorf("%w (stdout closed)", ErrExited)
			break
		}
		if err != nil {
			// lightningd kills a plugin that writes anything but JSON.
			l.violation("stdout is not a stream of JSON objects: %v", err)
			end = fmt.Errorf("%w: killed for writing something other than JSON to stdout: %v", ErrExited, err)
			l.cmd.Process.Kill()
			io.Copy(io.Discard, r)
			break
		}
		l.handle(raw, time.Now())
	}
	l.mu.Lock()
	l.closed = end
	pend := l.pending
	l.pending = map[string]*Pending{}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	for _, p := range pend {
		p.finish(Response{}, time.Time{}, end)
	}
}

type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

func (l *Lightningd) handle(raw json.RawMessage, at time.Time) {
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		l.violation("stdout carries a JSON value that is not an object: %.80s", raw)
		return
	}
	var m message
	if err := json.Unmarshal(raw, &m); err != nil {
		l.violation("undecodable message %.200s: %v", raw, err)
		return
	}
	if m.Method != "" {
		if m.ID != nil {
			l.violation("plugin sent request %q with id %s on stdout", m.Method, m.ID)
			return
		}
		l.notify(m)
		return
	}
	key, err := canonicalID(m.ID)
	if err != nil {
		l.violation("response without a valid id: %.200s", raw)
		return
	}
	l.mu.Lock()
	p := l.pending[key]
	delete(l.pending, key)
	l.mu.Unlock()
	if p == nil {
		l.violation("response to id %s, which is not a pending request (ids must be echoed unchanged, type included): %.200s", m.ID, raw)
		return
	}
	if m.JSONRPC != "2.0" {
		l.violation("response to %s (id %s) lacks \"jsonrpc\": \"2.0\"", p.Method, m.ID)
	}
	var resp Response
	switch {
	case m.Result != nil && m.Error == nil:
		resp.Result = m.Result
	case m.Error != nil && m.Result == nil:
		resp.Error = &RPCError{}
		if err := json.Unmarshal(m.Error, resp.Error); err != nil {
			l.violation("response to %s (id %s) has a malformed error object: %s", p.Method, m.ID, m.Error)
			resp.Error.Message = string(m.Error)
		}
	default:
		l.violation("response to %s (id %s) must have exactly one of result and error: %.200s", p.Method, m.ID, raw)
		resp.Result = m.Result
	}
	p.finish(resp, at, nil)
}

func (l *Lightningd) notify(m message) {
	if m.Method != "log" {
		l.mu.Lock()
		l.notifications = append(l.notifications, Notification{Method: m.Method, Params: m.Params})
		l.mu.Unlock()
		return
	}
	var ll LogLine
	if err := json.Unmarshal(m.Params, &ll); err != nil || ll.Message == "" {
		l.violation("malformed log notification: %s", m.Params)
		return
	}
	switch ll.Level {
	case "io", "debug", "info", "unusual", "warn", "error", "broken":
	default:
		l.violation("log notification with unknown level %q", ll.Level)
	}
	ll.Time = time.Now()
	l.opts.Logf("plugin[%d] %s: %s", l.PID(), ll.Level, ll.Message)
	l.mu.Lock()
	l.logs = append(l.logs, ll)
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *Lightningd) readStderr(r *os.File) {
	defer l.readers.Done()
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		l.opts.Logf("plugin[%d] stderr: %s", l.PID(), line)
		l.mu.Lock()
		l.stderrTail = append(l.stderrTail, line)
		if len(l.stderrTail) > 50 {
			l.stderrTail = l.stderrTail[1:]
		}
		if l.dumping && len(l.dump) < maxDumpLines {
			l.dump = append(l.dump, line)
		}
		l.mu.Unlock()
	}
	io.Copy(io.Discard, r)
}

// canonicalID is the map key of a request id: its JSON re-encoded, so that
// "7" and 7 differ but spacing and escaping do not matter.
func canonicalID(id json.RawMessage) (string, error) {
	if len(id) == 0 {
		return "", errors.New("no id")
	}
	dec := json.NewDecoder(bytes.NewReader(id))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	switch v.(type) {
	case string, json.Number:
	default:
		return "", fmt.Errorf("id %s is neither a string nor a number", id)
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// HoldOutput stops (hold true) or resumes reading the plugin's stdout, as a
// lightningd too busy to read would: once the pipe is full, the plugin's
// writes block. Kill and Close resume reading.
func (l *Lightningd) HoldOutput(hold bool) {
	l.holdMu.Lock()
	l.held = hold
	l.holdMu.Unlock()
	l.hold.Broadcast()
}

// Unread returns the number of bytes the plugin wrote to its stdout that
// the driver has not read yet, and the pipe's capacity (FIONREAD and
// F_GETPIPE_SZ; Linux).
func (l *Lightningd) Unread() (unread, capacity int, err error) {
	rc, err := l.stdout.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var ioErr, fcErr error
	if err := rc.Control(func(fd uintptr) {
		unread, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
		capacity, fcErr = unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0)
	}); err != nil {
		return 0, 0, err
	}
	return unread, capacity, errors.Join(ioErr, fcErr)
}

type gatedReader struct {
	l *Lightningd
	r io.Reader
}

// Read waits while the output is held, before reading and before handing
// over what it read (the read may have been waiting when the hold began).
func (g gatedReader) Read(p []byte) (int, error) {
	g.wait()
	n, err := g.r.Read(p)
	g.wait()
	return n, err
}

func (g gatedReader) wait() {
	g.l.holdMu.Lock()
	for g.l.held {
		g.l.hold.Wait()
	}
	g.l.holdMu.Unlock()
}

// Kill sends SIGKILL to the plugin and waits until it has exited and its
// output has been read. Requests in flight fail with ErrExited.
func (l *Lightningd) Kill() {
	l.cmd.Process.Signal(syscall.SIGKILL)
	<-l.exited
	l.stdin.Close()
	l.HoldOutput(false)
	l.readers.Wait()
}

// Close closes the plugin's stdin, as lightningd's exit does, and waits for
// the plugin to exit (killing it after the timeout). It returns an error if
// the plugin did not exit by itself or exited with a failure status.
func (l *Lightningd) Close() error {
	l.stdin.Close() // a write blocked on a full pipe fails, it does not hold this up
	l.HoldOutput(false)
	var err error
	select {
	case <-l.exited:
		err = l.waitErr
		if err != nil {
			err = fmt.Errorf("plugin exited after its stdin was closed: %w%s", err, l.stderrNote())
		}
	case <-time.After(l.opts.Timeout):
		// SIGQUIT first: a Go plugin writes every goroutine's stack
		// and exits, which says what held it up.
		l.mu.Lock()
		l.dumping = true
		l.mu.Unlock()
		l.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-l.exited:
		case <-time.After(5 * time.Second):
			l.cmd.Process.Kill()
			<-l.exited
		}
		l.readers.Wait()
		l.mu.Lock()
		dump := strings.Join(l.dump, "\n")
		l.mu.Unlock()
		return fmt.Errorf("plugin did not exit within %v of its stdin being closed; killed it; its goroutines:\n%s", l.opts.Timeout, dump)
	}
	l.readers.Wait()
	return err
}

// maxDumpLines bounds the goroutine dump kept from a plugin that did not
// exit.
const maxDumpLines = 2000

func (l *Lightningd) stderrNote() string {
	tail := l.Stderr()
	if len(tail) == 0 {
		return ""
	}
	if len(tail) > 5 {
		tail = tail[len(tail)-5:]
	}
	return "; stderr: " + strings.Join(tail, " | ")
}

// Memory is the plugin's memory use as the kernel reports it.
type Memory struct {
	// RSS is the resident set size now (VmRSS), in bytes.
	RSS int64
	// Peak is the highest resident set size so far (VmHWM), in bytes.
	Peak int64
}

// Memory reads VmRSS and VmHWM from /proc/PID/status (Linux only).
func (l *Lightningd) Memory() (Memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", l.PID()))
	if err != nil {
		return Memory{}, err
	}
	var m Memory
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return Memory{}, fmt.Errorf("unexpected /proc status line %q", line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Memory{}, err
		}
		if k == "VmRSS" {
			m.RSS = n << 10
		} else {
			m.Peak = n << 10
		}
	}
	if m.RSS == 0 {
		return Memory{}, errors.New("no VmRSS in /proc status (has the plugin exited?)")
	}
	return m, nil
}
