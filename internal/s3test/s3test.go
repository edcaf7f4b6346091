// Package s3test starts a real S3-compatible server (versitygw, POSIX
// backend) on loopback for tests of s3:// stores: no mock of a server we can
// run. Without versitygw installed a test is skipped with how to install it,
// except under CI (CI=true), where that is a failure.
package s3test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Install is how to get the server the tests need.
const Install = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// Access and Secret are the keys of every test server.
const (
	Access = "testaccess"
	Secret = "testsecret1234"
)

// Server is a running versitygw on loopback.
type Server struct {
	t    testing.TB
	bin  string
	Dir  string // the POSIX directory it keeps buckets in
	Addr string // HOST:PORT
	mu   sync.Mutex
	cmd  *exec.Cmd
}

// binary finds versitygw on PATH or in GOPATH/bin.
func binary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	p := filepath.Join(gopath, "bin", "versitygw")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("versitygw not found on PATH or in %s", filepath.Dir(p))
	}
	return p, nil
}

// Start starts a server for the test and stops it when the test ends. It
// skips the test (fails it under CI=true) when versitygw is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: CI must install it (%s)", err, Install)
		}
		t.Skipf("%v: install it with `%s` to run the s3:// tests", err, Install)
	}
	s := &Server{t: t, bin: bin, Dir: t.TempDir()}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	l.Close()
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server again (after Kill or Stop) on the same port and
// directory, and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.RestartErr(); err != nil {
		s.t.Fatal(err)
	}
}

// RestartErr is Restart for a goroutine other than the test's (which must
// not call t.Fatal): it returns what went wrong.
func (s *Server) RestartErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	log, err := os.OpenFile(filepath.Join(s.Dir, "..", "versitygw.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(s.bin, "--port", s.Addr, "--access", Access, "--secret", Secret, "posix", s.Dir)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY_ID="+Access, "ROOT_SECRET_ACCESS_KEY="+Secret)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start versitygw: %w", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + s.Addr + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(filepath.Join(s.Dir, "..", "versitygw.log"))
			return fmt.Errorf("versitygw on %s did not answer in 20s: %v\n%s", s.Addr, err, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill SIGKILLs the server (no clean shutdown) and waits for it to exit.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
	s.cmd = nil
}

// Stop ends the server.
func (s *Server) Stop() { s.Kill() }

// Env sets the AWS credentials of the server in the test's environment.
func (s *Server) Env(t testing.TB) {
	t.Setenv("AWS_ACCESS_KEY_ID", Access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", Secret)
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
}

// CredentialsFile writes the server's keys to a new credentials file (AWS's
// format, mode 0600) and returns its path.
func (s *Server) CredentialsFile(t testing.TB) string {
	p := filepath.Join(t.TempDir(), "s3-credentials")
	data := fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", Access, Secret)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var bucketSeq struct {
	sync.Mutex
	n int
}

// URL returns the s3:// URL of a new bucket name on the server (init
// creates the bucket), with prefix (may be "").
func (s *Server) URL(prefix string) string {
	bucketSeq.Lock()
	bucketSeq.n++
	n := bucketSeq.n
	bucketSeq.Unlock()
	name := fmt.Sprintf("b%d-%s", n, sanitize(s.t.Name()))
	if len(name) > 40 {
		name = name[:40]
	}
	u := "s3://" + name
	if prefix != "" {
		u += "/" + prefix
	}
	return u + "?endpoint=" + s.Addr + "&tls=false&path-style=true&region=us-east-1"
}

func sanitize(s string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(s) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	return b.String()
}
