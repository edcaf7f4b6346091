package legacy

import (
	"bufio"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"time"
)

// The Python plugin's backup server (its `backup-cli server URL HOST:PORT`,
// reached at `socket:HOST:PORT`) keeps a v1 file and lets a client read it
// back: REQ_METADATA answers the header's versions, RESTORE streams the
// entries as CHANGE and SNAPSHOT frames (u32 version, then the zlib-compressed
// payload) up to the header's version, then DONE. Fetch turns that stream
// back into a v1 file, which is then read (and checked) like any other.

// Frame types of the legacy socket protocol that Fetch sends or reads.
const (
	sockChange      byte = 0x01
	sockSnapshot    byte = 0x02
	sockReqMetadata byte = 0x04
	sockRestore     byte = 0x05
	sockNack        byte = 0x07
	sockMetadata    byte = 0x08
	sockDone        byte = 0x09
)

// MaxFetch bounds the file Fetch writes by default: a hostile or broken
// server (a zlib bomb, an endless stream) fills no disk beyond it.
const MaxFetch = 64 << 30

// FetchOptions tune Fetch.
type FetchOptions struct {
	// Timeout bounds every wait for the server (60s if 0): the legacy
	// server serves one client at a time and leaves the others waiting.
	Timeout time.Duration
	// MaxBytes bounds the file written (MaxFetch if 0).
	MaxBytes int64
	// Progress, if not nil, is called with the bytes written so far.
	Progress func(written int64)
}

// Metadata is the REQ_METADATA answer: the server's header versions.
type Metadata struct {
	Protocol, Version, PrevVersion uint32
	VersionCount                   uint64
}

// Fetch reads the backup the legacy server at conn keeps into the new v1
// file dest (mode 0600, fsynced), for Restore or an import to read. The
// server's bytes are untrusted: frames of unknown types, short payloads,
// bodies that do not decompress or exceed opts.MaxBytes, and silence beyond
// opts.Timeout are errors, and dest is removed on error. Fetch closes conn.
func Fetch(ctx context.Context, conn net.Conn, dest string, opts FetchOptions) (md Metadata, err error) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if opts.Timeout <= 0 {
		opts.Timeout = time.Minute
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = MaxFetch
	}
	out, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Metadata{}, fmt.Errorf("legacy fetch: %w", err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("legacy fetch: %w", cerr)
		}
		if err != nil {
			os.Remove(dest)
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%v)", ctx.Err(), err)
			}
		}
	}()
	f := &fetcher{conn: conn, r: bufio.NewReader(deadlineReader{conn, opts.Timeout}), out: out, opts: opts, off: HeaderSize}
	if md, err = f.metadata(); err != nil {
		return Metadata{}, err
	}
	if err := f.restore(); err != nil {
		return Metadata{}, err
	}
	if err := f.writeHeader(md); err != nil {
		return Metadata{}, err
	}
	return md, nil
}

// deadlineReader pushes the read deadline on before every read, so a slow
// but live server is waited for and a silent one is not.
type deadlineReader struct {
	conn    net.Conn
	timeout time.Duration
}

func (d deadlineReader) Read(p []byte) (int, error) {
	d.conn.SetReadDeadline(time.Now().Add(d.timeout))
	return d.conn.Read(p)
}

// fetcher writes the entries of a RESTORE answer to out.
type fetcher struct {
	conn net.Conn
	r    *bufio.Reader
	out  *os.File
	opts FetchOptions
	// off is where the next entry goes; last where the last one started.
	off, last int64
}

// send writes one empty request frame.
func (f *fetcher) send(typ byte) error {
	var h [5]byte
	h[0] = typ
	f.conn.SetWriteDeadline(time.Now().Add(f.opts.Timeout))
	if _, err := f.conn.Write(h[:]); err != nil {
		return fmt.Errorf("legacy backup server: send request: %w", err)
	}
	return nil
}

// header reads a frame header.
func (f *fetcher) header() (byte, uint32, error) {
	var h [5]byte
	if _, err := io.ReadFull(f.r, h[:]); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return 0, 0, fmt.Errorf("legacy backup server: no answer within %s (it serves one client at a time: stop lightningd, whose plugin holds it, and try again): %w", f.opts.Timeout, err)
		}
		return 0, 0, fmt.Errorf("legacy backup server: read answer: %w", err)
	}
	return h[0], binary.BigEndian.Uint32(h[1:]), nil
}

func (f *fetcher) metadata() (Metadata, error) {
	if err := f.send(sockReqMetadata); err != nil {
		return Metadata{}, err
	}
	typ, n, err := f.header()
	if err != nil {
		return Metadata{}, err
	}
	if typ != sockMetadata || n != 20 {
		return Metadata{}, fmt.Errorf("legacy backup server: answered the metadata request with a frame of type 0x%02x and %d bytes, not METADATA (20 bytes): is this the Python backup plugin's server?", typ, n)
	}
	var b [20]byte
	if _, err := io.ReadFull(f.r, b[:]); err != nil {
		return Metadata{}, fmt.Errorf("legacy backup server: read metadata: %w", err)
	}
	md := Metadata{Protocol: binary.BigEndian.Uint32(b[0:]), Version: binary.BigEndian.Uint32(b[4:]),
		PrevVersion: binary.BigEndian.Uint32(b[8:]), VersionCount: binary.BigEndian.Uint64(b[12:])}
	if md.Protocol != 1 {
		return Metadata{}, fmt.Errorf("legacy backup server: protocol %d (this reader knows 1)", md.Protocol)
	}
	return md, nil
}

// restore asks for the entries and writes each as it arrives.
func (f *fetcher) restore() error {
	if err := f.send(sockRestore); err != nil {
		return err
	}
	for entries := 0; ; entries++ {
		typ, n, err := f.header()
		if err != nil {
			return err
		}
		switch typ {
		case sockDone:
			if n != 0 {
				return fmt.Errorf("legacy backup server: DONE frame with %d bytes", n)
			}
			if entries == 0 {
				return errors.New("legacy backup server: the backup holds no entries")
			}
			return nil
		case sockChange, sockSnapshot:
			if err := f.entry(typ, n); err != nil {
				return fmt.Errorf("legacy backup server: entry %d: %w", entries+1, err)
			}
		case sockNack:
			return errors.New("legacy backup server: refused the restore request (NACK)")
		default:
			return fmt.Errorf("legacy backup server: unexpected frame of type 0x%02x in the restore answer", typ)
		}
	}
}

// entry decompresses one CHANGE or SNAPSHOT frame of n bytes into the file
// as a v1 entry: its header is written once the payload's size is known.
func (f *fetcher) entry(typ byte, n uint32) error {
	frame := &io.LimitedReader{R: f.r, N: int64(n)}
	var vb [4]byte
	if _, err := io.ReadFull(frame, vb[:]); err != nil {
		return fmt.Errorf("frame of %d bytes too short for its version: %w", n, err)
	}
	zr, err := zlib.NewReader(bufio.NewReader(frame))
	if err != nil {
		return fmt.Errorf("payload is not zlib-compressed: %w", err)
	}
	room := min(f.opts.MaxBytes-f.off-EntryHeaderSize, math.MaxUint32)
	if room < 0 {
		return fmt.Errorf("the backup exceeds the %d-byte limit of a fetch", f.opts.MaxBytes)
	}
	body := io.NewOffsetWriter(f.out, f.off+EntryHeaderSize)
	size, err := io.Copy(body, io.LimitReader(zr, room+1))
	if err != nil {
		return fmt.Errorf("decompress payload: %w", err)
	}
	if size > room {
		return fmt.Errorf("payload decompresses to more than %d bytes (the limit of a v1 entry, or of the %d-byte fetch)", room, f.opts.MaxBytes)
	}
	if err := zr.Close(); err != nil {
		return fmt.Errorf("decompress payload: %w", err)
	}
	if _, err := io.Copy(io.Discard, frame); err != nil {
		return fmt.Errorf("read frame: %w", err)
	}
	var h [EntryHeaderSize]byte
	binary.BigEndian.PutUint32(h[0:], uint32(size))
	copy(h[4:8], vb[:])
	h[8] = typ // the frame types of CHANGE and SNAPSHOT are the entry types
	if _, err := f.out.WriteAt(h[:], f.off); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	f.last, f.off = f.off, f.off+EntryHeaderSize+size
	if f.opts.Progress != nil {
		f.opts.Progress(f.off)
	}
	return nil
}

// writeHeader writes the file header from the server's metadata, with the
// offsets of the entries as written, and makes the file durable.
func (f *fetcher) writeHeader(md Metadata) error {
	b := make([]byte, HeaderSize)
	binary.BigEndian.PutUint32(b[0:], FileVersion)
	binary.BigEndian.PutUint32(b[4:], md.Version)
	binary.BigEndian.PutUint64(b[8:], uint64(f.off))
	binary.BigEndian.PutUint32(b[16:], md.PrevVersion)
	binary.BigEndian.PutUint64(b[20:], uint64(f.last))
	binary.BigEndian.PutUint64(b[28:], md.VersionCount)
	if _, err := f.out.WriteAt(b, 0); err != nil {
		return fmt.Errorf("legacy fetch: write header: %w", err)
	}
	if err := f.out.Sync(); err != nil {
		return fmt.Errorf("legacy fetch: %w", err)
	}
	return nil
}
