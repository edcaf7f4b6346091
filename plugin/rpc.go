package plugin

// The JSON-RPC 2.0 wire format as lightningd speaks it to plugins: requests
// and notifications come in on stdin, responses and notifications go out on
// stdout, each one JSON object followed by "\n\n".

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// JSON-RPC error codes the plugin answers with.
const (
	codeInvalidRequest = -32600 // not a valid request object
	codeMethodNotFound = -32601 // a method this plugin does not have
	codeRefused        = 1      // db_write refused: lightningd stops without committing
	codeUnavailable    = 2      // the backup could not be opened (backup-status, backup-compact)
)

// request is one message from lightningd. ID is kept raw so that it is echoed
// byte for byte, whether lightningd sent a number or a string; it is empty
// for a notification.
type request struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// isNotification reports whether lightningd expects no answer.
func (r *request) isNotification() bool { return len(r.ID) == 0 }

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *rpcError) Error() string { return fmt.Sprintf("JSON-RPC error %d: %s", e.Code, e.Message) }

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

type notification struct {
	JSONRPC string `json:"jsonrpc"`
	Method  string `json:"method"`
	Params  any    `json:"params"`
}

// Log levels of lightningd's log notification (debug, info, warn and error
// map to lightningd's DEBUG, INFO, UNUSUAL and **BROKEN**).
const (
	levelDebug = "debug"
	levelInfo  = "info"
	levelWarn  = "warn"
	levelError = "error"
)

type logParams struct {
	Level   string `json:"level"`
	Message string `json:"message"`
}

// writer is the only thing that writes to stdout. Every message is encoded
// completely before one Write call under the mutex, so messages from the
// read loop and from background goroutines never interleave. After a failed
// write (lightningd is gone) every later send fails with the same error.
type writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
	err error
}

// continueTail completes the answer to a db_write after the raw id.
const continueTail = `,"result":{"result":"continue"}}` + "\n\n"

func newWriter(w io.Writer) *writer { return &writer{w: w} }

// send encodes v as one message. HTML escaping is off so that an id is
// echoed byte for byte (json.Marshal would rewrite '<' inside a raw id).
func (w *writer) send(v any) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Reset()
	enc := json.NewEncoder(&w.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the object with "\n"
		return fmt.Errorf("encode message: %w", err)
	}
	w.buf.WriteByte('\n')
	return w.flush()
}

// sendContinue answers a db_write with {"result":"continue"} without going
// through reflection: it is the reply on lightningd's critical path.
func (w *writer) sendContinue(id json.RawMessage) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Reset()
	w.buf.WriteString(`{"jsonrpc":"2.0","id":`)
	w.buf.Write(id)
	w.buf.WriteString(continueTail)
	return w.flush()
}

// flush writes the buffer; called with mu held.
func (w *writer) flush() error {
	if w.err != nil {
		return w.err
	}
	if _, err := w.w.Write(w.buf.Bytes()); err != nil {
		w.err = fmt.Errorf("write to lightningd: %w", err)
	}
	if w.buf.Cap() > 1<<20 {
		w.buf = bytes.Buffer{} // do not keep a large status reply's buffer
	}
	return w.err
}

// failed returns the error of a failed write, if any.
func (w *writer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// reply answers a request with a result.
func (w *writer) reply(id json.RawMessage, result any) error {
	return w.send(response{JSONRPC: "2.0", ID: id, Result: result})
}

// fail answers a request with an error.
func (w *writer) fail(id json.RawMessage, code int, msg string) error {
	return w.send(response{JSONRPC: "2.0", ID: id, Error: &rpcError{Code: code, Message: msg}})
}

// log sends a line to lightningd's log.
func (w *writer) log(level, msg string) error {
	return w.send(notification{JSONRPC: "2.0", Method: "log", Params: logParams{Level: level, Message: msg}})
}

// logf formats a line for lightningd's log.
func (w *writer) logf(level, format string, args ...any) error {
	return w.log(level, fmt.Sprintf(format, args...))
}
