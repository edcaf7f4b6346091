package remote

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clnbackup/backup/store"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

func change(i int) journal.Record {
	return journal.Record{Version: uint32(i + 1), Statements: []string{fmt.Sprintf("INSERT INTO t VALUES (%d)", i), "UPDATE vars SET intval = intval + 1"}}
}

// checkJournal reads the node's journal on the server's store: exactly the
// records given, in order, each once.
func checkJournal(t *testing.T, st *store.Store, node string, want []journal.Record) {
	t.Helper()
	var got []journal.Record
	if err := st.ReadJournal(ctx, node, 0, func(r journal.Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("server journal holds %d records, %d were acknowledged", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Seq != uint64(i+1) || g.Seq != w.Seq || g.Version != w.Version || !slices.Equal(g.Statements, w.Statements) {
			t.Fatalf("record %d: server has seq %d version %d %q, acknowledged seq %d version %d %q", i, g.Seq, g.Version, g.Statements, w.Seq, w.Version, w.Statements)
		}
	}
}

// TestReconnectExactlyOnce appends while the server is restarted (gently
// and abruptly) and while acknowledgements are lost: every acknowledged
// append is in the server's journal exactly once.
func TestReconnectExactlyOnce(t *testing.T) {
	ts := newTestServer(t, testAuth(t))
	if _, err := history.Init(ctx, ts.st, "alice", "", nil); err != nil {
		t.Fatal(err)
	}
	var writes, dropped atomic.Int64
	ts.dropAck = func() bool {
		if writes.Add(1)%9 == 0 {
			dropped.Add(1)
			return true
		}
		return false
	}
	ts.stop()
	ts.start()
	st := ts.open(t, tokAlice)
	j, err := st.OpenJournal(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	// Every 25 appends the server is restarted, gently or abruptly, while
	// the appends go on.
	kick := make(chan int)
	var restarts atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := range kick {
			if k%2 == 0 {
				ts.stop()
			} else {
				ts.kill()
			}
			time.Sleep(time.Duration(k%3) * 40 * time.Millisecond)
			ts.start()
			restarts.Add(1)
		}
	}()
	stop := make(chan struct{})
	go func() {
		<-stop
		close(kick)
	}()
	var acked []journal.Record
	const n = 300
	for i := 0; i < n; i++ {
		r, err := j.Append(change(i))
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("append %d: %v", i, err)
		}
		if want := uint64(len(acked) + 1); r.Seq != want {
			t.Fatalf("append %d got seq %d, want %d", i, r.Seq, want)
		}
		acked = append(acked, r)
		if i%25 == 0 {
			select {
			case kick <- i / 25:
			default:
			}
		}
		if i%50 == 0 {
			// A Replace survives reconnects too.
			rr := change(i)
			rr.Statements = append(rr.Statements, "-- replaced")
			if r, err = j.Replace(rr); err != nil {
				t.Fatalf("replace %d: %v", i, err)
			}
			acked = append(acked, r)
		}
	}
	close(stop)
	wg.Wait()
	if last, _ := j.Last(); last.Seq != acked[len(acked)-1].Seq {
		t.Fatalf("Last seq %d", last.Seq)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	ts.stop()
	t.Logf("%d appends, %d restarts, %d acknowledgements dropped", len(acked), restarts.Load(), dropped.Load())
	if restarts.Load() == 0 || dropped.Load() == 0 {
		t.Fatal("no restarts or dropped acknowledgements happened")
	}
	// A Replace is a record of its own in the journal's physical log;
	// ReadJournal returns the logical view, where it replaced the record
	// before it.
	var logical []journal.Record
	for _, r := range acked {
		if len(r.Statements) == 3 {
			logical = logical[:len(logical)-1]
		}
		logical = append(logical, r)
	}
	for i := range logical {
		logical[i].Seq = 0
	}
	var got []journal.Record
	if err := ts.st.ReadJournal(ctx, "alice", 0, func(r journal.Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(logical) {
		t.Fatalf("server journal holds %d records, want %d", len(got), len(logical))
	}
	seqs := map[uint64]bool{}
	for i := range got {
		if seqs[got[i].Seq] {
			t.Fatalf("seq %d twice", got[i].Seq)
		}
		seqs[got[i].Seq] = true
		if got[i].Version != logical[i].Version || !slices.Equal(got[i].Statements, logical[i].Statements) {
			t.Fatalf("record %d: %d %q, want %d %q", i, got[i].Version, got[i].Statements, logical[i].Version, logical[i].Statements)
		}
	}
}

// TestServerDownTooLong: an append fails once the server was unreachable
// for RetryFor, saying so; once it is back, appends continue.
func TestServerDownTooLong(t *testing.T) {
	ts := newTestServer(t, testAuth(t))
	if _, err := history.Init(ctx, ts.st, "alice", "", nil); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, ts.socketURL(), store.Options{Token: tokAlice, RetryFor: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	j, err := st.OpenJournal(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var acked []journal.Record
	r, err := j.Append(change(0))
	if err != nil {
		t.Fatal(err)
	}
	acked = append(acked, r)
	ts.kill()
	start := time.Now()
	_, err = j.Append(change(1))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("append with the server down: %v", err)
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 5*time.Second {
		t.Fatalf("gave up after %s", d)
	}
	t.Logf("error: %v", err)
	ts.start()
	r, err = j.Append(change(1))
	if err != nil {
		t.Fatalf("append after the server is back: %v", err)
	}
	acked = append(acked, r)
	j.Close()
	checkJournal(t, ts.st, "alice", acked)
}

// blackhole is a TCP proxy that can stop forwarding without closing: a
// server that accepted the connection and then went silent (a hung host, a
// dead network path without resets).
type blackhole struct {
	l      net.Listener
	silent atomic.Bool
}

func newBlackhole(t *testing.T, to string) *blackhole {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	b := &blackhole{l: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if err != nil {
						dst.Close()
						return
					}
					if !b.silent.Load() {
						dst.Write(buf[:n])
					}
				}
			}
			go pipe(s, c)
			go pipe(c, s)
		}
	}()
	return b
}

// TestSilentServer: an append to a server that stops answering (but keeps
// the connection open) is not waited on forever: the connection counts as
// lost after the stall timeout, and the append fails once the retry period
// is over, so the plugin can refuse the db_write.
func TestSilentServer(t *testing.T) {
	old := stallTimeout
	stallTimeout = 300 * time.Millisecond
	defer func() { stallTimeout = old }()
	ts := newTestServer(t, testAuth(t))
	if _, err := history.Init(ctx, ts.st, "alice", "", nil); err != nil {
		t.Fatal(err)
	}
	bh := newBlackhole(t, ts.addr)
	st, err := store.Open(ctx, "socket:"+bh.l.Addr().String(), store.Options{Token: tokAlice, RetryFor: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	j, err := st.OpenJournal(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(change(0)); err != nil {
		t.Fatal(err)
	}
	bh.silent.Store(true)
	began := time.Now()
	_, err = j.Append(change(1))
	took := time.Since(began)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("append to a silent server: %v, want ErrUnreachable", err)
	}
	if took > 5*time.Second {
		t.Fatalf("append to a silent server took %v", took)
	}
	t.Logf("append to a silent server failed after %v: %v", took, err)
}
