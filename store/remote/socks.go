package remote

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// dialSOCKS5 connects to addr (HOST:PORT) through the SOCKS5 proxy at
// proxy (RFC 1928, CONNECT, no authentication). Host names, .onion ones
// included, are sent to the proxy unresolved (address type 3), so Tor
// resolves them.
func dialSOCKS5(ctx context.Context, proxy, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("bad port in %q", addr)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", proxy)
	if err != nil {
		return nil, fmt.Errorf("connect to SOCKS5 proxy %s: %w", proxy, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	err = socks5Connect(nc, host, port)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("SOCKS5 proxy %s: connect to %s: %w", proxy, addr, err)
	}
	nc.SetDeadline(time.Time{})
	return nc, nil
}

func socks5Connect(rw io.ReadWriter, host string, port int) error {
	// Greeting: version 5, one method, "no authentication".
	if _, err := rw.Write([]byte{5, 1, 0}); err != nil {
		return err
	}
	var rep [2]byte
	if _, err := io.ReadFull(rw, rep[:]); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if rep[0] != 5 {
		return fmt.Errorf("not a SOCKS5 proxy (version %d)", rep[0])
	}
	if rep[1] != 0 {
		return errors.New("the proxy requires authentication, which is not supported (use a proxy without authentication, e.g. Tor's SocksPort)")
	}
	req := []byte{5, 1, 0}
	if ip := net.ParseIP(host); ip != nil {
		if ip4 := ip.To4(); ip4 != nil {
			req = append(append(req, 1), ip4...)
		} else {
			req = append(append(req, 4), ip.To16()...)
		}
	} else {
		if len(host) > 255 {
			return fmt.Errorf("host name %q too long for SOCKS5", host)
		}
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, uint16(port))
	if _, err := rw.Write(req); err != nil {
		return err
	}
	var head [4]byte
	if _, err := io.ReadFull(rw, head[:]); err != nil {
		return fmt.Errorf("reply: %w", err)
	}
	if head[1] != 0 {
		return fmt.Errorf("the proxy refused the connection: %s", socksReply(head[1]))
	}
	var skip int
	switch head[3] {
	case 1:
		skip = 4
	case 4:
		skip = 16
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(rw, l[:]); err != nil {
			return err
		}
		skip = int(l[0])
	default:
		return fmt.Errorf("reply with unknown address type %d", head[3])
	}
	_, err := io.ReadFull(rw, make([]byte, skip+2))
	return err
}

func socksReply(code byte) string {
	switch code {
	case 1:
		return "general failure"
	case 2:
		return "connection not allowed by ruleset"
	case 3:
		return "network unreachable"
	case 4:
		return "host unreachable"
	case 5:
		return "connection refused"
	case 6:
		return "TTL expired"
	case 7:
		return "command not supported"
	case 8:
		return "address type not supported"
	}
	return fmt.Sprintf("error %d", code)
}

// DialPlain connects to addr (HOST:PORT), through the SOCKS5 proxy at proxy
// unless it is "": a plain TCP connection, for the peers that speak
// another protocol at a socket: URL (the Python backup plugin's backup
// server, which backup-cli import reads).
func DialPlain(ctx context.Context, addr, proxy string) (net.Conn, error) {
	if proxy != "" {
		return dialSOCKS5(ctx, proxy, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}
