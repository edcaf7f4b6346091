package remote

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/backend"
	"github.com/clnbackup/backup/store/history"
)

// rawConn is a hand-driven connection to the server.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, nc: nc, br: bufio.NewReader(nc), bw: bufio.NewWriter(nc)}
}

func (c *rawConn) frame(typ byte, p []byte) {
	c.t.Helper()
	if err := writeFrame(c.bw, typ, p); err != nil {
		c.t.Fatal(err)
	}
	if err := c.bw.Flush(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawConn) raw(b []byte) {
	c.t.Helper()
	c.nc.Write(b) // the server may have closed already
}

// read returns the next frame, or the read error.
func (c *rawConn) read() (byte, []byte, error) {
	return readFrame(c.br, func(byte) int { return MaxRecordFrame }, nil)
}

// expectError reads an error frame with code, then (when closed) EOF.
func (c *rawConn) expectError(what string, code byte, closed bool) string {
	c.t.Helper()
	typ, p, err := c.read()
	if err != nil {
		c.t.Fatalf("%s: no error frame: %v", what, err)
	}
	if typ != msgError {
		c.t.Fatalf("%s: got %s frame, want error", what, msgName(typ))
	}
	e := decodeError(p)
	if e.Code != code {
		c.t.Fatalf("%s: error code %d (%s), want %d", what, e.Code, e.Msg, code)
	}
	if closed {
		if _, _, err := c.read(); !errors.Is(err, io.EOF) && !isReset(err) {
			c.t.Fatalf("%s: connection not closed after the error: %v", what, err)
		}
	}
	return e.Msg
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

func (c *rawConn) hello(version uint16, token string) {
	c.t.Helper()
	c.frame(msgHello, encode(hello{Magic: magic, Version: version, Token: token, Client: "raw test"}))
}

func (c *rawConn) login(token string) {
	c.t.Helper()
	c.hello(ProtocolVersion, token)
	typ, p, err := c.read()
	if err != nil || typ != msgHelloOK {
		c.t.Fatalf("login: %s %v", msgName(typ), err)
	}
	if _, err := decodeHelloOK(p); err != nil {
		c.t.Fatal(err)
	}
}

// TestBadInput sends the server garbage of every kind while a well-behaved
// client keeps working.
func TestBadInput(t *testing.T) {
	ts := newTestServer(t, testAuth(t))
	if _, err := history.Init(ctx, ts.st, "alice", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := history.Init(ctx, ts.st, "bob", "", nil); err != nil {
		t.Fatal(err)
	}
	// A good client works throughout.
	good := ts.dial(t, tokAlice).Objects()
	stop := make(chan struct{})
	var goodOps atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := good.Get(ctx, "nodes/alice/node.json", 0, -1); err != nil {
				t.Errorf("good client: %v", err)
				return
			}
			goodOps.Add(1)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
		if goodOps.Load() == 0 {
			t.Error("the good client got nothing done")
		}
	}()

	t.Run("RandomBytes", func(t *testing.T) {
		rng := rand.New(rand.NewSource(1))
		for i := 0; i < 20; i++ {
			c := dialRaw(t, ts.addr)
			b := make([]byte, 1+rng.Intn(3000))
			rng.Read(b)
			c.raw(b)
			// Whatever it answers, it ends the connection.
			for {
				if _, _, err := c.read(); err != nil {
					break
				}
			}
		}
	})
	t.Run("OversizedHandshake", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.raw([]byte{msgHello, 0xff, 0xff, 0xff, 0xff})
		c.expectError("oversized hello", codeBadRequest, true)
	})
	t.Run("TruncatedFrame", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.raw([]byte{msgHello, 0, 0, 1, 0, 'C', 'L', 'N'})
		c.nc.(*net.TCPConn).CloseWrite()
		if _, _, err := c.read(); err == nil {
			t.Fatal("truncated hello answered")
		}
	})
	t.Run("WrongVersion", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.hello(ProtocolVersion+1, tokAlice)
		msg := c.expectError("wrong version", codeBadVersion, true)
		if !strings.Contains(msg, "version") {
			t.Fatalf("message %q", msg)
		}
	})
	t.Run("UnknownToken", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.hello(ProtocolVersion, strings.Repeat("x", 40))
		c.expectError("unknown token", codeDenied, true)
	})
	t.Run("UnknownTypeKeepsConnection", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.login(tokAlice)
		c.frame(0x3e, []byte("whatever"))
		c.expectError("unknown type", codeBadRequest, false)
		c.frame(msgStat, []byte{0, 0, 0, 1, 'x', 0xff}) // trailing byte
		c.expectError("malformed stat", codeBadRequest, false)
		c.frame(msgStat, encode(nameRequest{Name: store.ConfigObject}))
		if typ, _, err := c.read(); err != nil || typ != msgOK {
			t.Fatalf("stat after bad requests: %s %v", msgName(typ), err)
		}
	})
	t.Run("OversizedRequest", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.login(tokAlice)
		var h [5]byte
		h[0] = msgStat
		binary.BigEndian.PutUint32(h[1:], MaxFrame+1)
		c.raw(h[:])
		c.expectError("oversized stat", codeBadRequest, true)
		c = dialRaw(t, ts.addr)
		c.login(tokAlice)
		h[0] = msgJAppend
		binary.BigEndian.PutUint32(h[1:], 0xffffffff)
		c.raw(h[:])
		c.expectError("oversized append", codeBadRequest, true)
	})
	t.Run("LargeLengthFewBytes", func(t *testing.T) {
		// A record frame announcing 60 MiB and sending a little: the
		// server holds only what arrived, then drops the connection.
		for i := 0; i < 10; i++ {
			c := dialRaw(t, ts.addr)
			c.login(tokAlice)
			var h [5]byte
			h[0] = msgJAppend
			binary.BigEndian.PutUint32(h[1:], 60<<20)
			c.raw(h[:])
			c.raw(make([]byte, 1000))
			c.nc.Close()
		}
	})
	t.Run("OtherNodesWrite", func(t *testing.T) {
		c := dialRaw(t, ts.addr)
		c.login(tokAlice)
		c.frame(msgPut, encode(putRequest{Name: "nodes/bob/manifests/00000000000000000002", Size: 3}))
		c.frame(msgData, []byte("abc"))
		msg := c.expectError("write bob's manifest", codeDenied, false)
		if !strings.Contains(msg, `node "bob"`) {
			t.Fatalf("message %q", msg)
		}
		c.frame(msgJOpen, encode(nodeRequest{Node: "bob"}))
		c.expectError("open bob's journal", codeDenied, false)
		if _, err := ts.st.Objects().Stat(ctx, "nodes/bob/manifests/00000000000000000002"); !errors.Is(err, backend.ErrNotFound) {
			t.Fatalf("denied put stored: %v", err)
		}
	})
	t.Run("SilentClient", func(t *testing.T) {
		ts2 := newTestServer(t, testAuth(t))
		ts2.opt.HandshakeTimeout = 200 * time.Millisecond
		ts2.stop()
		ts2.start()
		c := dialRaw(t, ts2.addr)
		start := time.Now()
		if _, _, err := c.read(); err == nil {
			t.Fatal("silent client got a frame")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("silent client held for %s", d)
		}
	})
	t.Run("MaxConns", func(t *testing.T) {
		ts2 := newTestServer(t, nil)
		ts2.opt.MaxConns = 1
		ts2.stop()
		ts2.start()
		c := dialRaw(t, ts2.addr)
		c.login("")
		// The limit counts authenticated connections: the second is
		// refused once it says hello.
		c2 := dialRaw(t, ts2.addr)
		c2.hello(ProtocolVersion, "")
		c2.expectError("second connection", codeBusy, true)
	})
}

// TestClientRefusesOtherVersion: a server answering with another protocol
// version is refused with a clear error.
func TestClientRefusesOtherVersion(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		br, bw := bufio.NewReader(nc), bufio.NewWriter(nc)
		readFrame(br, frameLimit, nil)
		writeFrame(bw, msgHelloOK, encode(helloOK{Version: ProtocolVersion + 1, Admin: true}))
		bw.Flush()
	}()
	u, _ := store.ParseURL("socket:" + l.Addr().String())
	_, err = Dial(ctx, u, store.Options{})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("dial a server of another version: %v", err)
	}
}

// TestMemoryBoundedUnderLargeFrames: many clients announcing the largest
// frames and sending little hold the server's memory to what arrived, not
// to what was announced.
func TestMemoryBoundedUnderLargeFrames(t *testing.T) {
	ts := newTestServer(t, testAuth(t))
	if _, err := history.Init(ctx, ts.st, "alice", "", nil); err != nil {
		t.Fatal(err)
	}
	const conns = 40
	ts.opt.MaxConnsPerToken = conns + 1 // all on alice's token
	ts.stop()
	ts.start()
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	var cs []*rawConn
	for i := 0; i < conns; i++ {
		c := dialRaw(t, ts.addr)
		c.login(tokAlice)
		var h [5]byte
		h[0] = msgJAppend
		binary.BigEndian.PutUint32(h[1:], MaxRecordFrame) // announced: the largest frame
		c.raw(h[:])
		c.raw(make([]byte, 100<<10)) // sent: 100 KiB
		cs = append(cs, c)
	}
	time.Sleep(200 * time.Millisecond) // let the server read what was sent
	grew := int64(heap()) - int64(before)
	t.Logf("%d connections announcing %d MiB frames each: server heap grew %.1f MiB", conns, MaxRecordFrame>>20, float64(grew)/(1<<20))
	if announced := int64(conns) * int64(MaxRecordFrame); grew > 64<<20 || grew > announced/20 {
		t.Fatalf("heap grew %d bytes for %d bytes announced", grew, announced)
	}
	for _, c := range cs {
		c.nc.Close()
	}
	// The server still serves a well-behaved client.
	st := ts.open(t, tokAlice)
	if _, err := st.LatestManifest(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
}

// TestClientBoundsGet: a server that answers a bounded get, or a whole
// read, with more bytes than were asked for or than the object can have
// (here: data frames without end) is refused as soon as it passes the
// bound; the client never holds more.
func TestClientBoundsGet(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var sent atomic.Int64
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				br, bw := bufio.NewReader(nc), bufio.NewWriter(nc)
				readFrame(br, frameLimit, nil)
				writeFrame(bw, msgHelloOK, encode(helloOK{Version: ProtocolVersion, Admin: true}))
				bw.Flush()
				for {
					if _, _, err := readFrame(br, frameLimit, nil); err != nil {
						return
					}
					for range 1 << 10 { // up to 1 GiB, far past any bound
						if writeFrame(bw, msgData, make([]byte, 1<<20)) != nil || bw.Flush() != nil {
							return
						}
						sent.Add(1 << 20)
					}
				}
			}()
		}
	}()
	u, _ := store.ParseURL("socket:" + l.Addr().String())
	cl, err := DialClient(ctx, u, store.Options{RetryFor: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got, err := cl.Objects().Get(ctx, "packs/index/x", 0, 100)
	if err == nil || !strings.Contains(err.Error(), "more than the 100 bytes asked for") {
		t.Fatalf("get 100 bytes from a server sending without end: %d bytes, %v", len(got), err)
	}
	if got != nil {
		t.Fatalf("get returned %d bytes with its error", len(got))
	}
	t.Logf("refused after the server sent %d MiB: %v", sent.Load()>>20, err)
	sent.Store(0)
	got, err = cl.Objects().(backend.WholeReader).ReadWhole(ctx, "nodes/a/manifests/00000000000000000001", 3<<20)
	if !errors.Is(err, backend.ErrTooLarge) || got != nil {
		t.Fatalf("read whole with a 3 MiB bound from a server sending without end: %d bytes, %v", len(got), err)
	}
	t.Logf("whole read refused after the server sent %d MiB: %v", sent.Load()>>20, err)
}
