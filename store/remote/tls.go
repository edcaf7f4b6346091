package remote

// TLS for socket: URLs. The protocol inside is unchanged: TLS only wraps
// the byte stream, after the TCP or SOCKS5 connection and before the
// hello. A client either pins the server's key (tls=FINGERPRINT, the
// SHA-256 of the key's SubjectPublicKeyInfo: a self-signed server needs no
// CA, and renewing the certificate with the same key keeps the pin) or
// verifies it against the system's roots (tls=system). A server listening
// with TLS tells a plaintext client so, and a plaintext server a TLS
// client, instead of leaving either waiting.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clnbackup/backup/internal/secretfile"
)

// tlsRecordHandshake is the first byte of a TLS ClientHello (a handshake
// record); a store client's first byte is msgHello.
const tlsRecordHandshake = 0x16

// Fingerprint is the pin of a certificate's key: the SHA-256 of its
// SubjectPublicKeyInfo in lowercase hex, what clients put after tls=. It
// is of the key, not the certificate, so that a certificate renewed with
// the same key keeps every client's pin.
func Fingerprint(cert *x509.Certificate) string {
	h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(h[:])
}

// CertFingerprint is the Fingerprint of a key pair's leaf certificate.
func CertFingerprint(c tls.Certificate) (string, error) {
	leaf := c.Leaf
	if leaf == nil {
		if len(c.Certificate) == 0 {
			return "", errors.New("the key pair holds no certificate")
		}
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return "", fmt.Errorf("parse the certificate: %w", err)
		}
	}
	return Fingerprint(leaf), nil
}

// ServerTLSConfig is the server side's TLS configuration for a key pair:
// TLS 1.3 only (every client is this program).
func ServerTLSConfig(c tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS13}
}

// Names of the key pair in a --tls-self-signed directory.
const (
	SelfSignedKey  = "key.pem"
	SelfSignedCert = "cert.pem"
)

// selfSignedValidity is how long a made certificate is valid: pinning
// clients do not look at its dates, and a server should not stop working
// because nobody renewed it.
const selfSignedValidity = 100 * 365 * 24 * time.Hour

// LoadOrCreateSelfSigned returns the key pair kept in dir, making it the
// first time (an ECDSA P-256 key, mode 0600, and a self-signed certificate
// for it): the server keeps one identity, and with it the clients' pins,
// across restarts. made reports that it was just made. A key file other
// users can read is refused.
func LoadOrCreateSelfSigned(dir string) (c tls.Certificate, made bool, err error) {
	keyPath, certPath := filepath.Join(dir, SelfSignedKey), filepath.Join(dir, SelfSignedCert)
	_, kerr := os.Stat(keyPath)
	_, cerr := os.Stat(certPath)
	switch {
	case kerr == nil && cerr == nil:
		c, err = LoadKeyPair(certPath, keyPath)
		return c, false, err
	case errors.Is(kerr, fs.ErrNotExist) && errors.Is(cerr, fs.ErrNotExist):
	case kerr == nil || cerr == nil:
		return tls.Certificate{}, false, fmt.Errorf("TLS directory %s holds only one of %s and %s: restore the missing one from a backup, or remove both to make a new key (every client then needs the new fingerprint)", dir, SelfSignedKey, SelfSignedCert)
	default:
		return tls.Certificate{}, false, fmt.Errorf("TLS directory %s: %w", dir, errors.Join(kerr, cerr))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, false, fmt.Errorf("make TLS directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("make a TLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("make a TLS certificate serial: %w", err)
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "backup-cli server " + host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if host != "" {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("make a TLS certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("encode the TLS key: %w", err)
	}
	// The key first, exclusively: two servers started at once on the same
	// directory do not end up with different keys on disk.
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return tls.Certificate{}, false, err
	}
	if err := writeNew(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyPath)
		return tls.Certificate{}, false, err
	}
	c, err = LoadKeyPair(certPath, keyPath)
	return c, true, err
}

// writeNew writes a file that must not exist yet, durably.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// LoadKeyPair reads a PEM certificate (chain) and its key, refusing a key
// file other users can read.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	if err := secretfile.Check(keyFile, "the store server's TLS private key"); err != nil {
		return tls.Certificate{}, err
	}
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load TLS key pair %s, %s: %w (give a PEM certificate and its PEM key)", certFile, keyFile, err)
	}
	return c, nil
}

// NewListener wraps a listener for Serve: with cfg, connections speak TLS
// (the handshake runs in the session, under its handshake timeout, not in
// Accept); without, plaintext. Either way a client speaking the other is
// answered with an error it can show and the session ends with an error
// that says what happened (in the server's log).
func NewListener(l net.Listener, cfg *tls.Config) net.Listener {
	return &sniffListener{Listener: l, cfg: cfg}
}

type sniffListener struct {
	net.Listener
	cfg *tls.Config
}

func (l *sniffListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: nc, cfg: l.cfg}, nil
}

// sniffConn looks at the first byte the client sends before the session
// reads or writes anything else.
type sniffConn struct {
	net.Conn // the TCP connection: deadlines, addresses, Close
	cfg      *tls.Config
	once     sync.Once
	sniffed  atomic.Bool   // sniff has run
	inner    io.ReadWriter // TLS or the TCP connection again
	err      error
}

func (c *sniffConn) Read(p []byte) (int, error) {
	c.once.Do(c.sniff)
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.inner.Read(p)
	if tc, ok := c.inner.(*tls.Conn); ok && err != nil && !tc.ConnectionState().HandshakeComplete {
		err = transportError{kind: "TLS handshake", err: err}
	}
	return n, err
}

// transportError is a connection that failed below the protocol: the
// client spoke TLS to a plaintext port or the reverse, or the TLS handshake
// failed (a client refusing the server's key). The server logs these apart
// from other failed logins, so that a port probe's log line does not hide
// them.
type transportError struct {
	kind string // what failed, the class of the log's rate limit
	err  error
}

func (e transportError) Error() string { return e.err.Error() }
func (e transportError) Unwrap() error { return e.err }

func (c *sniffConn) Write(p []byte) (int, error) {
	if c.cfg == nil && !c.sniffed.Load() {
		// A plaintext server may answer before reading (the busy
		// refusal): it needs nothing from the client for that.
		return c.Conn.Write(p)
	}
	c.once.Do(c.sniff)
	if c.err != nil {
		return 0, c.err
	}
	return c.inner.Write(p)
}

func (c *sniffConn) sniff() {
	defer c.sniffed.Store(true)
	var first [1]byte
	if _, err := io.ReadFull(c.Conn, first[:]); err != nil {
		c.err = err
		return
	}
	pre := &prefixConn{Conn: c.Conn, first: first[0], pending: true}
	switch {
	case c.cfg != nil && first[0] == tlsRecordHandshake:
		c.inner = tls.Server(pre, c.cfg)
	case c.cfg == nil && first[0] != tlsRecordHandshake:
		c.inner = pre
	case c.cfg != nil:
		c.refuse("this store server requires TLS: add tls=FINGERPRINT to the store URL (socket:HOST:PORT?tls=FINGERPRINT; the fingerprint is in the server's log), or tls=system for a certificate from a public CA")
		what := "a plaintext store client"
		if first[0] != msgHello {
			what = fmt.Sprintf("a client that does not speak TLS (first byte 0x%02x)", first[0])
		}
		c.err = transportError{kind: "plaintext on the TLS port", err: fmt.Errorf("%s connected to this TLS port: the client's URL needs tls=FINGERPRINT (this server's, as logged at start)", what)}
	default:
		c.refuse("this store server does not use TLS: remove tls= from the store URL, or start the server with --tls-self-signed DIR (or --tls-cert and --tls-key)")
		c.err = transportError{kind: "TLS on the plaintext port", err: errors.New("a TLS client (its first bytes are a TLS ClientHello) connected to this plaintext port: remove tls= from the client's URL, or restart the server with --tls-self-signed DIR")}
	}
}

// refuse answers a client speaking the wrong protocol with an error frame
// (a plaintext client shows its message; a TLS client sees a record that
// is not TLS and says the server is plaintext), then reads what else the
// client sent for a moment, so that closing does not reset the connection
// before the client has read the answer.
func (c *sniffConn) refuse(msg string) {
	c.Conn.SetDeadline(time.Now().Add(2 * time.Second))
	bw := bufio.NewWriter(c.Conn)
	writeFrame(bw, msgError, encodeError(codeBadRequest, msg))
	bw.Flush()
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c.Conn, 64<<10))
}

// prefixConn gives back the byte sniffConn read.
type prefixConn struct {
	net.Conn
	first   byte
	pending bool
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if c.pending && len(p) > 0 {
		c.pending = false
		p[0] = c.first
		return 1, nil
	}
	return c.Conn.Read(p)
}

// tlsError is a TLS failure no retry can fix (a wrong pin, an untrusted
// certificate, a server that does not speak TLS): it is reported at once.
type tlsError struct{ err error }

func (e tlsError) Error() string { return e.err.Error() }
func (e tlsError) Unwrap() error { return e.err }

// ErrTLS is wrapped by TLS failures that retrying cannot fix.
var ErrTLS = errors.New("TLS failure")

func (e tlsError) Is(target error) bool { return target == ErrTLS }

// startTLS runs the client's TLS handshake on nc as cl.u.TLS asks.
func (cl *Client) startTLS(ctx context.Context, nc net.Conn) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(cl.u.Addr)
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: host}
	pin := cl.u.TLS
	if pin != "system" {
		// The pin replaces the chain and the name: the key is the identity.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return tlsError{errors.New("the server presented no certificate")}
			}
			if got := Fingerprint(cs.PeerCertificates[0]); got != pin {
				return tlsError{fmt.Errorf("the store server presented a TLS key with fingerprint %s, but the URL pins tls=%s: if the server's key was replaced on purpose, put its new fingerprint (in the server's log) after tls= in the URL (backend_url in backup.lock for the plugin); otherwise the connection may be intercepted: do not use it", got, pin)}
			}
			return nil
		}
	}
	rec := &recordConn{Conn: nc}
	tc := tls.Client(rec, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, cl.tlsFailure(err, rec.first)
	}
	rec.first, rec.done = nil, true
	return clientTLSConn{Conn: tc, raw: nc}, nil
}

// clientTLSConn closes the TCP connection without TLS's close_notify,
// whose write may wait seconds on a stalled server: connections are
// dropped on a stall, and closing the client must not hang.
type clientTLSConn struct {
	*tls.Conn
	raw net.Conn
}

func (c clientTLSConn) Close() error { return c.raw.Close() }

// recordConn keeps the first bytes the server sent, so that a plaintext
// server's error frame, which the TLS handshake rejects, can be shown.
type recordConn struct {
	net.Conn
	first []byte
	done  bool // the handshake is over: nothing more to keep
}

func (c *recordConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.done {
		return n, err
	}
	if keep := frameHeaderSize + MaxHandshakeFrame - len(c.first); keep > 0 {
		c.first = append(c.first, p[:min(n, keep)]...)
	}
	return n, err
}

// plaintextAnswer is the message of a store server's error frame at the
// start of first, or "".
func plaintextAnswer(first []byte) string {
	if len(first) < frameHeaderSize || first[0] != msgError {
		return ""
	}
	n := binary.BigEndian.Uint32(first[1:frameHeaderSize])
	if uint64(len(first)-frameHeaderSize) < uint64(n) {
		return ""
	}
	return decodeError(first[frameHeaderSize : frameHeaderSize+int(n)]).Msg
}

// tlsFailure says what a failed handshake means and what to do; failures
// a retry may fix (a lost connection, a timeout) stay retriable.
func (cl *Client) tlsFailure(err error, first []byte) error {
	var te tlsError
	if errors.As(err, &te) {
		return te
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		msg := ""
		if m := plaintextAnswer(first); m != "" {
			msg = " (it says: " + m + ")"
		}
		return tlsError{fmt.Errorf("TLS handshake: the server answered without TLS%s: it is a store server started without --tls-self-signed or --tls-cert, or not a store server; remove tls= from the URL to connect in plaintext (only on loopback or through a tunnel), or start the server with TLS", msg)}
	}
	var ve *tls.CertificateVerificationError
	if errors.As(err, &ve) {
		return tlsError{fmt.Errorf("TLS handshake: the server's certificate does not verify against this system's roots for %s (%v): a self-signed server (--tls-self-signed) is reached with tls=FINGERPRINT, the fingerprint from the server's log, not tls=system", cl.u.Addr, ve.Err)}
	}
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return tlsError{fmt.Errorf("TLS handshake: the server refused it (%w): check that client and server are of the same release", err)}
	}
	return fmt.Errorf("TLS handshake: %w", err)
}
