package s3

import (
	"io"
	"net/http"
	"sync/atomic"
)

// Stats counts the requests a backend made and the bytes it moved, by kind
// (List is LIST requests, Other is POST and region lookups),
// so that the cost of an operation on a provider that bills per request is
// measured (backup-cli list, docs/object-storage.md).
type Stats struct {
	Put, Get, Head, List, Delete, Other int64
	// BytesUp and BytesDown are request and response body bytes.
	BytesUp, BytesDown int64
}

// Requests is the total number of requests.
func (s Stats) Requests() int64 { return s.Put + s.Get + s.Head + s.List + s.Delete + s.Other }

// Sub is the requests made between two readings.
func (s Stats) Sub(o Stats) Stats {
	return Stats{Put: s.Put - o.Put, Get: s.Get - o.Get, Head: s.Head - o.Head, List: s.List - o.List,
		Delete: s.Delete - o.Delete, Other: s.Other - o.Other, BytesUp: s.BytesUp - o.BytesUp, BytesDown: s.BytesDown - o.BytesDown}
}

// Stats returns the counts since the backend was made.
func (b *Backend) Stats() Stats { return b.stats.read() }

// counter is an http.RoundTripper that counts what passes through it.
type counter struct {
	next                             *http.Transport
	put, get, head, list, del, other atomic.Int64
	up, down                         atomic.Int64
}

func newCounter(next *http.Transport) *counter { return &counter{next: next} }

func (c *counter) RoundTrip(req *http.Request) (*http.Response, error) {
	q := req.URL.Query()
	switch req.Method {
	case http.MethodPut:
		c.put.Add(1)
	case http.MethodGet:
		switch {
		case q.Has("list-type") || q.Has("prefix"):
			c.list.Add(1) // billed with PUT by most providers
		case q.Has("location"):
			c.other.Add(1) // the bucket's region, asked once when not given
		default:
			c.get.Add(1)
		}
	case http.MethodHead:
		c.head.Add(1)
	case http.MethodDelete:
		c.del.Add(1)
	default:
		c.other.Add(1)
	}
	if req.ContentLength > 0 {
		c.up.Add(req.ContentLength)
	}
	resp, err := c.next.RoundTrip(req)
	if err == nil && resp.Body != nil {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.down}
	}
	return resp, err
}

func (c *counter) read() Stats {
	return Stats{Put: c.put.Load(), Get: c.get.Load(), Head: c.head.Load(), List: c.list.Load(), Delete: c.del.Load(),
		Other: c.other.Load(), BytesUp: c.up.Load(), BytesDown: c.down.Load()}
}

func (c *counter) closeIdle() { c.next.CloseIdleConnections() }

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	k, err := b.ReadCloser.Read(p)
	b.n.Add(int64(k))
	return k, err
}
