package lightningdtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Request is one JSON-RPC request for SendJoined.
type Request struct {
	Method string
	Params any
}

// Pending is a request that was sent; Wait returns its response.
type Pending struct {
	// Method is the request's method.
	Method string
	// ID is the request's id as sent (a JSON string or number).
	ID json.RawMessage

	l    *Lightningd
	done chan struct{}
	sent time.Time // guarded by l.mu
	resp Response
	err  error
}

func (p *Pending) finish(resp Response, at time.Time, err error) {
	p.l.mu.Lock()
	if !at.IsZero() && !p.sent.IsZero() {
		resp.RTT = at.Sub(p.sent)
	}
	p.l.mu.Unlock()
	p.resp, p.err = resp, err
	close(p.done)
}

// Done is closed once the response arrived or the plugin's stdout closed.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait waits for the response (at most the Options' timeout). The error
// reports transport failures only (plugin exited, timeout); an error
// answered by the plugin is in Response.Error.
func (p *Pending) Wait() (Response, error) {
	t := time.NewTimer(p.l.opts.Timeout)
	defer t.Stop()
	select {
	case <-p.done:
		if p.err != nil {
			return Response{}, fmt.Errorf("%s (id %s): %w%s", p.Method, p.ID, p.err, p.l.stderrNote())
		}
		return p.resp, nil
	case <-t.C:
		return Response{}, fmt.Errorf("%s (id %s): %w within %v", p.Method, p.ID, ErrTimeout, p.l.opts.Timeout)
	}
}

// Continued waits for the answer to a db_write and reports whether it was
// {"result": "continue"}, the only answer on which lightningd commits. Any
// other answer, an error included, is a refusal: lightningd would log it and
// exit without committing. err is set only when no answer came.
func (p *Pending) Continued() (bool, error) {
	resp, err := p.Wait()
	if err != nil {
		return false, err
	}
	if resp.Error == nil {
		var r struct {
			Result string `json:"result"`
		}
		if json.Unmarshal(resp.Result, &r) == nil && r.Result == "continue" {
			return true, nil
		}
		p.l.opts.Logf("lightningdtest: plugin returned an invalid response to the db_write hook (id %s): %s; lightningd would exit", p.ID, resp.Result)
		return false, nil
	}
	p.l.opts.Logf("lightningdtest: plugin refused db_write (id %s): %v; lightningd would exit", p.ID, resp.Error)
	return false, nil
}

// newPending registers a request and returns it with its encoding
// (terminated by "\n\n", as lightningd writes). Ids count up per plugin;
// once the manifest allowed non-numeric ids, every other id is a string
// such as "cln:db_write#12", as lightningd's are.
func (l *Lightningd) newPending(method string, params any) (*Pending, []byte, error) {
	if params == nil {
		params = map[string]any{}
	}
	l.mu.Lock()
	if l.closed != nil {
		err := l.closed
		l.mu.Unlock()
		return nil, nil, fmt.Errorf("%s: %w%s", method, err, l.stderrNote())
	}
	l.nextID++
	n := l.nextID
	id := json.RawMessage(strconv.Itoa(n))
	if l.stringIDs && n%2 == 0 {
		id, _ = json.Marshal("cln:" + method + "#" + strconv.Itoa(n))
	}
	p := &Pending{Method: method, ID: id, l: l, done: make(chan struct{})}
	l.pending[string(id)] = p
	l.mu.Unlock()
	msg, err := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Method  string          `json:"method"`
		Params  any             `json:"params"`
	}{"2.0", id, method, params})
	if err != nil {
		l.forget(p)
		return nil, nil, fmt.Errorf("encode %s: %w", method, err)
	}
	return p, append(msg, '\n', '\n'), nil
}

func (l *Lightningd) forget(ps ...*Pending) {
	l.mu.Lock()
	for _, p := range ps {
		delete(l.pending, string(p.ID))
	}
	l.mu.Unlock()
}

// write writes chunks to the plugin's stdin, pausing between them, and
// stamps the requests' send time just before the last chunk.
func (l *Lightningd) write(ps []*Pending, chunks [][]byte, pause time.Duration) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	for i, c := range chunks {
		if i > 0 && pause > 0 {
			time.Sleep(pause)
		}
		if i == len(chunks)-1 {
			now := time.Now()
			l.mu.Lock()
			for _, p := range ps {
				p.sent = now
			}
			l.mu.Unlock()
		}
		if _, err := l.stdin.Write(c); err != nil {
			l.forget(ps...)
			return fmt.Errorf("write to plugin: %w: %v%s", ErrExited, err, l.stderrNote())
		}
	}
	return nil
}

// Send sends one request in one write.
func (l *Lightningd) Send(method string, params any) (*Pending, error) {
	p, msg, err := l.newPending(method, params)
	if err != nil {
		return nil, err
	}
	if err := l.write([]*Pending{p}, [][]byte{msg}, 0); err != nil {
		return nil, err
	}
	return p, nil
}

// SendJoined sends several requests in a single write, so that the plugin
// reads them together.
func (l *Lightningd) SendJoined(reqs ...Request) ([]*Pending, error) {
	var ps []*Pending
	var buf []byte
	for _, r := range reqs {
		p, msg, err := l.newPending(r.Method, r.Params)
		if err != nil {
			l.forget(ps...)
			return nil, err
		}
		ps = append(ps, p)
		buf = append(buf, msg...)
	}
	if err := l.write(ps, [][]byte{buf}, 0); err != nil {
		return nil, err
	}
	return ps, nil
}

// SendSplit sends one request in two writes: the first cut bytes, a pause
// (so that the plugin reads the first part alone), then the rest. A cut
// outside the message splits it in the middle.
func (l *Lightningd) SendSplit(method string, params any, cut int, pause time.Duration) (*Pending, error) {
	p, msg, err := l.newPending(method, params)
	if err != nil {
		return nil, err
	}
	if cut <= 0 || cut >= len(msg) {
		cut = len(msg) / 2
	}
	if err := l.write([]*Pending{p}, [][]byte{msg[:cut], msg[cut:]}, pause); err != nil {
		return nil, err
	}
	return p, nil
}

// Call sends a request and waits for its result; an error answered by the
// plugin is returned as *RPCError.
func (l *Lightningd) Call(method string, params any) (json.RawMessage, error) {
	p, err := l.Send(method, params)
	if err != nil {
		return nil, err
	}
	resp, err := p.Wait()
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	return resp.Result, nil
}

// DBWriteParams are the db_write hook's parameters.
type DBWriteParams struct {
	DataVersion uint32   `json:"data_version"`
	Writes      []string `json:"writes"`
}

// DBWrite calls the db_write hook and waits for the answer. continued is
// false when the plugin refused (any answer but {"result": "continue"}):
// lightningd would exit without committing. err means no answer came.
func (l *Lightningd) DBWrite(version uint32, writes []string) (continued bool, err error) {
	continued, _, err = l.DBWriteTimed(version, writes)
	return continued, err
}

// DBWriteTimed is DBWrite that also returns the round trip, measured from
// just before the write of the request to the parse of the response.
func (l *Lightningd) DBWriteTimed(version uint32, writes []string) (continued bool, rtt time.Duration, err error) {
	p, err := l.Send("db_write", DBWriteParams{DataVersion: version, Writes: writes})
	if err != nil {
		return false, 0, err
	}
	continued, err = p.Continued()
	if err != nil {
		return false, 0, err // no answer: p.resp may still be written
	}
	return continued, p.resp.RTT, nil
}

// Manifest is the plugin's answer to getmanifest.
type Manifest struct {
	Options       []ManifestOption `json:"options"`
	RPCMethods    []RPCMethod      `json:"rpcmethods"`
	Hooks         []ManifestHook   `json:"hooks"`
	Subscriptions []string         `json:"subscriptions"`
	Dynamic       bool             `json:"dynamic"`
	NonNumericIDs bool             `json:"nonnumericids"`
	// Raw is the whole answer.
	Raw json.RawMessage `json:"-"`
}

// ManifestOption is one command-line option the plugin registers.
type ManifestOption struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Default     any    `json:"default"`
	Description string `json:"description"`
	Deprecated  bool   `json:"deprecated"`
}

// RPCMethod is one JSON-RPC method the plugin adds to lightningd.
type RPCMethod struct {
	Name        string `json:"name"`
	Usage       string `json:"usage"`
	Description string `json:"description"`
}

// ManifestHook is one hook the plugin registers (an object with a name, or
// a bare name as old plugins wrote it).
type ManifestHook struct {
	Name   string   `json:"name"`
	Before []string `json:"before,omitempty"`
	After  []string `json:"after,omitempty"`
}

// UnmarshalJSON accepts {"name": ...} and a bare string.
func (h *ManifestHook) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*h = ManifestHook{Name: s}
		return nil
	}
	type plain ManifestHook
	return json.Unmarshal(b, (*plain)(h))
}

// HasHook reports whether the manifest registers hook name.
func (m Manifest) HasHook(name string) bool {
	for _, h := range m.Hooks {
		if h.Name == name {
			return true
		}
	}
	return false
}

// Method returns the RPC method called name.
func (m Manifest) Method(name string) (RPCMethod, bool) {
	for _, r := range m.RPCMethods {
		if r.Name == name {
			return r, true
		}
	}
	return RPCMethod{}, false
}

// GetManifest sends getmanifest (with numeric id, as lightningd does) and
// checks what lightningd checks: every method has a name and a usage. From
// then on, ids alternate between strings and numbers if the manifest set
// "nonnumericids".
func (l *Lightningd) GetManifest() (Manifest, error) {
	res, err := l.Call("getmanifest", map[string]any{"allow-deprecated-apis": false})
	if err != nil {
		return Manifest{}, fmt.Errorf("getmanifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(res, &m); err != nil {
		return Manifest{}, fmt.Errorf("getmanifest: malformed manifest %.300s: %w", res, err)
	}
	m.Raw = res
	for _, r := range m.RPCMethods {
		if r.Name == "" {
			return m, fmt.Errorf("getmanifest: rpc method %+v lacks a name", r)
		}
	}
	var probe struct {
		RPCMethods []map[string]json.RawMessage `json:"rpcmethods"`
	}
	if json.Unmarshal(res, &probe) == nil {
		for _, r := range probe.RPCMethods {
			if _, ok := r["usage"]; !ok {
				return m, fmt.Errorf("getmanifest: rpc method %s has no \"usage\" (lightningd refuses such a manifest)", r["name"])
			}
		}
	}
	l.mu.Lock()
	l.stringIDs = m.NonNumericIDs
	l.mu.Unlock()
	return m, nil
}

// ErrDisabled is wrapped by Init's error when the plugin answered
// {"disable": reason}.
var ErrDisabled = errors.New("plugin disabled itself")

// Init sends init with the given plugin options and lightningd's
// configuration (lightning-dir: the working directory, rpc-file
// "lightning-rpc", startup true, network regtest).
func (l *Lightningd) Init(options map[string]any) error {
	if options == nil {
		options = map[string]any{}
	}
	res, err := l.Call("init", map[string]any{
		"options": options,
		"configuration": map[string]any{
			"lightning-dir": l.dir,
			"rpc-file":      "lightning-rpc",
			"startup":       true,
			"network":       "regtest",
		},
	})
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	var r struct {
		Disable *string `json:"disable"`
	}
	if json.Unmarshal(res, &r) == nil && r.Disable != nil {
		return fmt.Errorf("init: %w: %s", ErrDisabled, *r.Disable)
	}
	return nil
}
