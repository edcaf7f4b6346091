package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestProgressOnlyOnTerminal: a bar is drawn only on a terminal, and on
// the writer it was given.
func TestProgressOnlyOnTerminal(t *testing.T) {
	t.Parallel()
	if newProgress(&bytes.Buffer{}, "x") != nil {
		t.Error("progress on a buffer")
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if newProgress(f, "x") != nil {
		t.Error("progress on a regular file")
	}
	if tty := openPTY(t); tty != nil && newProgress(tty, "x") == nil {
		t.Error("no progress on a terminal")
	}
	var b bytes.Buffer
	p := &progressBar{w: &b, label: "restore"}
	p.fn()(512, 1024)
	p.done()
	if want := "\r\033[Krestore  50.0% 512 B / 1.0 KiB\r\033[K"; b.String() != want {
		t.Errorf("drawn %q, want %q", b.String(), want)
	}
}

// openPTY opens the terminal side of a new pseudo-terminal, or returns nil
// (after logging why) where there is none.
func openPTY(t *testing.T) *os.File {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Logf("no pseudo-terminal: %v", err)
		return nil
	}
	t.Cleanup(func() { ptmx.Close() })
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Logf("unlock pseudo-terminal: %v", err)
		return nil
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Logf("pseudo-terminal number: %v", err)
		return nil
	}
	tty, err := os.OpenFile(filepath.Join("/dev/pts", strconv.Itoa(n)), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Logf("open pseudo-terminal: %v", err)
		return nil
	}
	t.Cleanup(func() { tty.Close() })
	return tty
}
