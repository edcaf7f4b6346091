package remote

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
)

// socksProxy is a minimal SOCKS5 proxy (no authentication, CONNECT only)
// that records the targets it was asked for.
type socksProxy struct {
	l       net.Listener
	mu      sync.Mutex
	targets []string
}

func startSOCKS(t *testing.T) *socksProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &socksProxy{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *socksProxy) serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 262)
	if _, err := io.ReadFull(c, buf[:2]); err != nil || buf[0] != 5 {
		return
	}
	if _, err := io.ReadFull(c, buf[:buf[1]]); err != nil {
		return
	}
	c.Write([]byte{5, 0})
	if _, err := io.ReadFull(c, buf[:4]); err != nil || buf[1] != 1 {
		return
	}
	var host string
	switch buf[3] {
	case 1:
		io.ReadFull(c, buf[:4])
		host = net.IP(buf[:4]).String()
	case 3:
		io.ReadFull(c, buf[:1])
		n := int(buf[0])
		io.ReadFull(c, buf[:n])
		host = "domain:" + string(buf[:n])
	case 4:
		io.ReadFull(c, buf[:16])
		host = net.IP(buf[:16]).String()
	}
	io.ReadFull(c, buf[:2])
	port := binary.BigEndian.Uint16(buf[:2])
	p.mu.Lock()
	p.targets = append(p.targets, fmt.Sprintf("%s:%d", host, port))
	p.mu.Unlock()
	dialHost := host
	if len(host) > 7 && host[:7] == "domain:" {
		dialHost = host[7:]
	}
	up, err := net.Dial("tcp", net.JoinHostPort(dialHost, strconv.Itoa(int(port))))
	if err != nil {
		c.Write([]byte{5, 5, 0, 1, 0, 0, 0, 0, 0, 0})
		return
	}
	defer up.Close()
	c.Write([]byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0})
	go io.Copy(up, c)
	io.Copy(c, up)
}

// TestSOCKS5 reaches the server through a SOCKS5 proxy, with the host
// name sent unresolved (as a .onion would be).
func TestSOCKS5(t *testing.T) {
	ts := newTestServer(t, testAuth(t))
	if _, err := history.Init(ctx, ts.st, "alice", "", nil); err != nil {
		t.Fatal(err)
	}
	p := startSOCKS(t)
	_, port, _ := net.SplitHostPort(ts.addr)
	url := "socket:localhost:" + port + "?proxy=socks5:" + p.l.Addr().String()
	st, err := store.Open(ctx, url, store.Options{Token: tokAlice})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	nodes, err := st.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0] != "alice" {
		t.Fatalf("nodes through the proxy: %v, %v", nodes, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.targets) == 0 || p.targets[0] != "domain:localhost:"+port {
		t.Fatalf("proxy saw %v", p.targets)
	}
	// A proxy that is not there fails with a message naming it.
	u, _ := store.ParseURL("socket:localhost:" + port + "?proxy=socks5:127.0.0.1:1")
	if _, err := Dial(ctx, u, store.Options{Token: tokAlice}); err == nil {
		t.Fatal("dial through a missing proxy worked")
	} else {
		t.Log(err)
	}
}
