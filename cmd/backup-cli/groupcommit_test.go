package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/journal"
)

// TestGroupCommitKill9: nodes append through a backup-cli server with
// group commit until the server is killed with SIGKILL; every append the
// server acknowledged is then in the node's journal, in order, with the
// next seq continuing after it (the write-ahead log is replayed).
func TestGroupCommitKill9(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	auth := filepath.Join(tmp, "auth")
	const nodes = 6
	tokens := make([]string, nodes)
	for i := range tokens {
		var tok struct {
			Token string `json:"token"`
		}
		out := mustRun(t, "server", "add-token", "--json", "--auth", auth, "--node", fmt.Sprintf("n%d", i))
		if err := json.Unmarshal([]byte(out), &tok); err != nil {
			t.Fatalf("add-token: %s (%v)", out, err)
		}
		tokens[i] = tok.Token
	}
	dir := filepath.Join(tmp, "store")
	srv, addr, logs := startGroupCommitServer(t, auth, dir)

	acked := make([][]journal.Record, nodes)
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acked[i] = appendUntilFailure(ctx, t, addr, tokens[i], fmt.Sprintf("n%d", i))
		}()
	}
	// Kill once every node has some acknowledged appends in flight.
	time.Sleep(1500 * time.Millisecond)
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	wg.Wait()

	// Any process opening the store replays the log a dead server left
	// (here one without group commit, as backup-cli verify would).
	st, err := store.Open(context.Background(), "file://"+dir, store.Options{})
	if err != nil {
		t.Fatalf("open store after kill -9: %v\n%s", err, logs.String())
	}
	defer st.Close()
	for i := range nodes {
		node := fmt.Sprintf("n%d", i)
		if len(acked[i]) < 3 {
			t.Fatalf("node %s: only %d appends acknowledged before the kill", node, len(acked[i]))
		}
		var got []journal.Record
		if err := st.ReadJournal(context.Background(), node, 0, func(r journal.Record) error { got = append(got, r); return nil }); err != nil {
			t.Fatalf("node %s: read journal: %v", node, err)
		}
		if len(got) < len(acked[i]) {
			t.Fatalf("node %s: %d records in the journal, %d acknowledged", node, len(got), len(acked[i]))
		}
		for k, a := range acked[i] {
			if g := got[k]; g.Seq != a.Seq || g.Version != a.Version || strings.Join(g.Statements, ";") != strings.Join(a.Statements, ";") {
				t.Fatalf("node %s: record %d is seq %d version %d, acknowledged seq %d version %d", node, k, g.Seq, g.Version, a.Seq, a.Version)
			}
		}
		j, err := st.OpenJournal(context.Background(), node)
		if err != nil {
			t.Fatalf("node %s: reopen journal: %v", node, err)
		}
		if next := j.NextSeq(); next != uint64(len(got))+1 {
			t.Errorf("node %s: next seq %d after %d records", node, next, len(got))
		}
		j.Close()
	}
}

// startGroupCommitServer starts backup-cli server (group commit is its
// default) and waits until it listens.
func startGroupCommitServer(t *testing.T, auth, dir string) (*exec.Cmd, string, *syncBuffer) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	srv := exec.Command(cliBin.get(t), "server", "--auth", auth, "file://"+dir, addr)
	logs := &syncBuffer{}
	srv.Stderr = logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill() })
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return srv, addr, logs
		}
		if i > 500 {
			t.Fatalf("server did not start: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// appendUntilFailure appends a node's changes through the server until an
// append fails, and returns the acknowledged ones as stored.
func appendUntilFailure(ctx context.Context, t *testing.T, addr, token, node string) []journal.Record {
	st, err := store.Open(ctx, "socket:"+addr, store.Options{Token: token, RetryFor: 200 * time.Millisecond})
	if err != nil {
		t.Errorf("node %s: open store: %v", node, err)
		return nil
	}
	defer st.Close()
	j, err := st.OpenJournal(ctx, node)
	if err != nil {
		t.Errorf("node %s: open journal: %v", node, err)
		return nil
	}
	defer j.Close()
	var acked []journal.Record
	for v := uint32(1); ctx.Err() == nil; v++ {
		r, err := j.Append(journal.Record{Version: v, Statements: []string{
			fmt.Sprintf("INSERT INTO forwards VALUES (%d, '%s %s')", v, node, strings.Repeat("x", int(v%7)*100)),
		}})
		if err != nil {
			return acked
		}
		acked = append(acked, r)
	}
	return acked
}
