package remote

import (
	"fmt"
)

// message is the payload of a request, or of a reply that has structure.
// Each layout of docs/remote-protocol.md is one type with one appendTo and
// one decode function, used by the client and the server alike, so the
// two sides cannot disagree on it. Decoders take hostile input: counts and
// lengths are bounded before anything is allocated, and a payload with
// bytes left over is refused, so every message has exactly one encoding.
// Handshake and error messages are here; objects, chunks and journals have
// their messages_*.go.
type message interface {
	// appendTo appends the payload to b (a buffer reused between frames).
	appendTo(b []byte) []byte
}

// encode returns m's payload in a buffer of its own.
func encode(m message) []byte { return m.appendTo(nil) }

// hello is the client's first frame: who it is and what it speaks.
type hello struct {
	Magic   string
	Version uint16
	Token   string
	Client  string // program and host, for the server's log
}

// appendTo is the client's side of hello.
func (h hello) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.b = append(e.b, h.Magic...)
	e.u16(h.Version)
	e.str(h.Token)
	e.str(h.Client)
	return e.b
}

// decodeHello stops after the version when it is not ProtocolVersion: the
// rest is another version's business, and the caller refuses the version
// with a message of its own.
func decodeHello(p []byte) (hello, error) {
	d := dec{b: p}
	var h hello
	h.Magic = string(d.take(len(magic), "magic"))
	if d.err == nil && h.Magic != magic {
		return h, fmt.Errorf("%w: not a store client (bad magic)", errMalformed)
	}
	h.Version = d.u16()
	if d.err == nil && h.Version != ProtocolVersion {
		return h, nil
	}
	h.Token = d.str(MaxHandshakeFrame)
	h.Client = d.str(MaxHandshakeFrame)
	return h, d.done()
}

// helloOK is the server's answer to an accepted hello: what the token
// allows, so the client knows whether it has chunk requests.
type helloOK struct {
	Version uint16
	Admin   bool
	Label   string
	Nodes   []string
}

// appendTo is the server's side of hello-ok.
func (h helloOK) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.b = append(e.b, magic...)
	e.u16(h.Version)
	e.bool(h.Admin)
	e.str(h.Label)
	e.u16(uint16(len(h.Nodes)))
	for _, n := range h.Nodes {
		e.str(n)
	}
	return e.b
}

// decodeHelloOK grows the node list one decoded name at a time: a count
// the payload does not hold stops at the first truncated name.
func decodeHelloOK(p []byte) (helloOK, error) {
	d := dec{b: p}
	var h helloOK
	if m := string(d.take(len(magic), "magic")); d.err == nil && m != magic {
		return h, fmt.Errorf("%w: the peer is not a store server (bad magic)", errMalformed)
	}
	h.Version = d.u16()
	h.Admin = d.bool()
	h.Label = d.str(MaxHandshakeFrame)
	n := d.u16()
	for i := 0; i < int(n) && d.err == nil; i++ {
		h.Nodes = append(h.Nodes, d.str(MaxHandshakeFrame))
	}
	return h, d.done()
}

// errorReply is the payload of an error frame, the final frame of a failed
// request: a code the client maps back to the error the store tests for
// (Error.Unwrap), and a message for people.
type errorReply struct {
	Code byte
	Msg  string
}

// appendTo is the server's side of the error frame.
func (r errorReply) appendTo(b []byte) []byte {
	e := enc{b: b}
	e.u8(r.Code)
	e.str(r.Msg)
	return e.b
}

// decodeErrorReply is the client's side of the error frame.
func decodeErrorReply(p []byte) (errorReply, error) {
	d := dec{b: p}
	r := errorReply{Code: d.u8(), Msg: d.str(MaxFrame)}
	return r, d.finish("error reply")
}
