package remote

// Regression tests of the denial-of-service findings of security issue #12
// (2: CPU bomb, 3: connection slots, 4: memory, 7: chunk kinds, 9: log
// injection, 10: revocation), each replayed against a real server process
// while a well-behaved node (dave) keeps appending; and the benchmark of
// the same attacks against the server before and after (TestAttackBaseline,
// run with ATTACK_BASELINE_BIN: docs/benchmark.md, "Server under attack").

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clnbackup/backup/chunker"
	"github.com/clnbackup/backup/manifest"
	"github.com/clnbackup/backup/store/chunk"
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
)

// bystanderMax bounds the slowest append of the well-behaved node during
// an attack: generous (the machine is shared), yet far below the seconds
// the attacks cost before.
const bystanderMax = 2 * time.Second

// call sends a request on c and returns its final frame (OK or Error),
// skipping stream frames; a closed connection is returned as err.
func (c *rawConn) call(typ byte, p []byte) (byte, []byte, error) {
	c.t.Helper()
	if err := writeFrame(c.bw, typ, p); err != nil {
		return 0, nil, err
	}
	if err := c.bw.Flush(); err != nil {
		return 0, nil, err
	}
	for {
		typ, p, err := c.read()
		if err != nil || typ == msgOK || typ == msgError {
			return typ, p, err
		}
	}
}

// reply describes a final frame, for logs and checks.
func reply(typ byte, p []byte, err error) string {
	switch {
	case err != nil:
		return "connection closed: " + err.Error()
	case typ == msgError:
		e := decodeError(p)
		return fmt.Sprintf("error %d: %s", e.Code, e.Msg)
	}
	return msgName(typ)
}

// bomb is a zstd frame of about 600 bytes that inflates to chunk.MaxSize
// zeros, and their id.
func bomb(t testing.TB) (chunker.ID, []byte) {
	t.Helper()
	c, err := chunk.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	enc, err := c.Encoder()
	if err != nil {
		t.Fatal(err)
	}
	defer c.PutEncoder(enc)
	zeros := make([]byte, chunk.MaxSize)
	return chunker.Sum(zeros), enc.EncodeAll(zeros, nil)
}

// attackBomb is finding 2's request: 600 copies of the bomb in one
// put-bodies, under alice's token.
func attackBomb(t *testing.T, ps *procServer) string {
	id, z := bomb(t)
	bodies := make([]chunk.Body, 600)
	for i := range bodies {
		bodies[i] = chunk.Body{ID: id, Kind: chunk.KindPage, Raw: chunk.MaxSize, Body: z}
	}
	c := dialRaw(t, ps.addr)
	c.nc.SetDeadline(time.Now().Add(time.Minute))
	c.login(atkAlice)
	return reply(c.call(msgPutBodies, encode(putBodiesRequest{Bodies: bodies})))
}

// attackIdleSockets is finding 3's: n sockets from 127.0.0.2 that never
// say hello; meanwhile a client from 127.0.0.1 tries to log in as carol.
// It reports what that client got.
func attackIdleSockets(t *testing.T, ps *procServer, n int) string {
	var idle []net.Conn
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	for range n {
		nc, err := d.Dial("tcp", ps.addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, nc)
	}
	defer func() {
		for _, nc := range idle {
			nc.Close()
		}
	}()
	time.Sleep(200 * time.Millisecond) // the server has accepted them
	c := dialRaw(t, ps.addr)
	c.hello(ProtocolVersion, atkCarol)
	typ, p, err := c.read()
	if err == nil && typ == msgHelloOK {
		return "a new client is served"
	}
	return "a new client is refused: " + reply(typ, p, err)
}

// bigRecord is a journal-append payload of about size bytes for node:
// one statement, or (empty) as many empty statements as fit.
func bigRecord(node string, size int, empty bool) []byte {
	r := journal.Record{Version: 1}
	if empty {
		r.Statements = make([]string, (size-64)/4)
	} else {
		r.Statements = []string{strings.Repeat("x", size-64)}
	}
	return encode(journalWriteRequest{Node: node, Expected: 1, Record: r})
}

// attackBigFrames is finding 4's: conns connections of alice each send a
// journal-append frame of size bytes at once.
func attackBigFrames(t *testing.T, ps *procServer, conns, size int) string {
	return sendBigFrames(t, ps, conns, bigRecord("alice", size, false))
}

// sendBigFrames sends the journal-append payload p on conns connections
// of alice at once.
func sendBigFrames(t *testing.T, ps *procServer, conns int, p []byte) string {
	var wg sync.WaitGroup
	replies := make([]string, conns)
	for i := range conns {
		c := dialRaw(t, ps.addr)
		c.nc.SetDeadline(time.Now().Add(2 * time.Minute))
		c.login(atkAlice)
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = reply(c.call(msgJAppend, p))
		}()
	}
	wg.Wait()
	return fmt.Sprintf("%d × %d MiB: first reply: %s", conns, len(p)>>20, replies[0])
}

// attackEmptyStatements is finding 4's second: a 64 MiB journal-append of
// empty statements to alice's open journal.
func attackEmptyStatements(t *testing.T, ps *procServer) string {
	return sendEmptyStatements(t, ps, bigRecord("alice", MaxRecordFrame-(64<<10), true))
}

// sendEmptyStatements sends the journal-append payload p on a connection
// of alice that opened her journal.
func sendEmptyStatements(t *testing.T, ps *procServer, p []byte) string {
	c := dialRaw(t, ps.addr)
	c.nc.SetDeadline(time.Now().Add(2 * time.Minute))
	c.login(atkAlice)
	if typ, p, err := c.call(msgJOpen, encode(nodeRequest{Node: "alice"})); err != nil || typ != msgOK {
		t.Fatalf("open alice's journal: %s", reply(typ, p, err))
	}
	return reply(c.call(msgJAppend, p))
}

// initNode makes node on the server with its token.
func initNode(t *testing.T, ps *procServer, token, node string) {
	t.Helper()
	if _, err := history.Init(ctx, ps.open(t, token), node, "", nil); err != nil {
		t.Fatalf("init %s: %v", node, err)
	}
}

// TestAttackCPUBomb (finding 2): decompression bombs cost the server
// bounded CPU: repeated and stored bodies are skipped before decompressing,
// a body never inflates past its declared size, and a request declares at
// most chunk.MaxBatchRaw bytes; dave keeps appending.
func TestAttackCPUBomb(t *testing.T) {
	ps := startProcServer(t)
	id, z := bomb(t)
	fake := func(i int) chunker.ID { return chunker.ID{0xbb, byte(i), byte(i >> 8)} }
	many := func(n int, body func(i int) chunk.Body) []chunk.Body {
		out := make([]chunk.Body, n)
		for i := range out {
			out[i] = body(i)
		}
		return out
	}
	tests := []struct {
		name   string
		bodies []chunk.Body
		code   byte // 0: OK
	}{
		{"600 copies of a bomb", many(600, func(int) chunk.Body { return chunk.Body{ID: id, Kind: chunk.KindPage, Raw: chunk.MaxSize, Body: z} }), 0},
		{"the same again (stored)", many(600, func(int) chunk.Body { return chunk.Body{ID: id, Kind: chunk.KindPage, Raw: chunk.MaxSize, Body: z} }), 0},
		{"600 bombs under other ids", many(600, func(i int) chunk.Body {
			return chunk.Body{ID: fake(i), Kind: chunk.KindPage, Raw: chunk.MaxSize, Body: z}
		}), codeBadChunk},
		{"4 bombs under other ids", many(4, func(i int) chunk.Body {
			return chunk.Body{ID: fake(i), Kind: chunk.KindPage, Raw: chunk.MaxSize, Body: z}
		}), codeBadChunk},
		{"600 bombs declaring 4 KiB", many(600, func(i int) chunk.Body { return chunk.Body{ID: fake(i), Kind: chunk.KindPage, Raw: 4096, Body: z} }), codeBadChunk},
	}
	reqs := make([][]byte, len(tests))
	for i, tc := range tests {
		reqs[i] = encode(putBodiesRequest{Bodies: tc.bodies})
	}
	c := dialRaw(t, ps.addr)
	c.nc.SetDeadline(time.Now().Add(time.Minute))
	c.login(atkAlice)
	b := startBystander(t, ps, 10*time.Millisecond)
	before := ps.usage()
	for i, tc := range tests {
		for range 3 {
			typ, p, err := c.call(msgPutBodies, reqs[i])
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if got := byte(0); typ == msgError {
				if got = decodeError(p).Code; got != tc.code {
					t.Fatalf("%s: %s, want code %d", tc.name, reply(typ, p, err), tc.code)
				}
			} else if tc.code != 0 {
				t.Fatalf("%s: accepted, want code %d", tc.name, tc.code)
			}
		}
	}
	after := ps.usage()
	cpu := after.CPU - before.CPU
	p50, p99 := b.check(bystanderMax)
	t.Logf("15 bomb requests: server cpu %v (was 8.3 s for one before), %v; dave's appends p50 %v p99 %v", cpu, after, p50, p99)
	if cpu > 2*time.Second {
		t.Errorf("bomb requests cost the server %v of CPU", cpu)
	}
}

// TestAttackIdleSockets (finding 3): sockets that never log in, from one
// address, hold a few handshake slots at most; a node token holds at most
// its share of connections; clients on other tokens still log in, and
// refusals are logged a line a minute per address.
func TestAttackIdleSockets(t *testing.T) {
	t.Parallel()
	ps := startProcServer(t)
	b := startBystander(t, ps, 10*time.Millisecond)
	if got := attackIdleSockets(t, ps, 300); got != "a new client is served" {
		t.Fatalf("300 idle sockets from another address: %s", got)
	}
	// alice opens as many connections as she may, and more.
	var held, refused int
	for range 100 {
		c := dialRaw(t, ps.addr)
		c.hello(ProtocolVersion, atkAlice)
		typ, p, err := c.read()
		switch {
		case err == nil && typ == msgHelloOK:
			held++
		case err == nil && typ == msgError && decodeError(p).Code == codeBusy:
			refused++
		default:
			t.Fatalf("alice's connection: %s", reply(typ, p, err))
		}
	}
	if held > 32 {
		t.Fatalf("alice holds %d connections, over the default --max-conns-per-token 32", held)
	}
	// carol still logs in and works.
	st := ps.open(t, atkCarol)
	if _, err := history.Init(ctx, st, "carol", "", nil); err != nil {
		t.Fatalf("carol's list while alice holds %d connections: %v", held, err)
	}
	p50, p99 := b.check(bystanderMax)
	lines := strings.Count(ps.log(), "connection from 127.0.0.2:")
	t.Logf("300 idle sockets, 100 of alice's (%d held, %d refused): %d log lines for 127.0.0.2's refusals; dave's appends p50 %v p99 %v; server %v", held, refused, lines, p50, p99, ps.usage())
	if lines > 3 {
		t.Errorf("%d log lines for the refusals of one address in a few seconds, want one (rate-limited)", lines)
	}
}

// TestAttackMemory (finding 4): big frames on many connections, and a
// journal-append of 64 MiB of empty statements, leave the server's memory
// bounded by its --max-memory budget; dave keeps appending.
func TestAttackMemory(t *testing.T) {
	ps := startProcServer(t, "--max-memory", "64")
	initNode(t, ps, atkAlice, "alice")
	big := bigRecord("alice", 32<<20, false)
	empty := bigRecord("alice", MaxRecordFrame-(64<<10), true)
	b := startBystander(t, ps, 10*time.Millisecond)
	start := ps.usage()
	got := sendBigFrames(t, ps, 4, big)
	frames := ps.usage()
	if !strings.Contains(got, "not open") {
		t.Errorf("big frames to a journal not open: %s", got)
	}
	got = sendEmptyStatements(t, ps, empty)
	after := ps.usage()
	if !strings.Contains(got, "statement count") {
		t.Errorf("64 MiB of empty statements: %s, want the statement count refused", got)
	}
	p50, p99 := b.check(bystanderMax)
	t.Logf("start %v; after 4 × 32 MiB frames %v (was 870 MB for 4 × 64 MiB); after 64 MiB of empty statements %v (was 1.29 GB of strings); dave's appends p50 %v p99 %v", start, frames, after, p50, p99)
	// 64 MiB of budget, one 64 MiB frame read, the runtime's slack.
	const bound = 320 << 20
	if after.PeakRSS > bound {
		t.Errorf("peak RSS %d MB under big frames, over %d MB", after.PeakRSS>>20, bound>>20)
	}
}

// TestAttackChunkKind (finding 7): alice cannot make carol's verify fail
// by storing carol's bytes first under another kind: a kind the content
// denies is refused, and verify judges a chunk by its role in carol's
// manifest, not by the kind its first writer declared.
func TestAttackChunkKind(t *testing.T) {
	t.Parallel()
	ps := startProcServer(t)
	b := startBystander(t, ps, 20*time.Millisecond)
	st := ps.open(t, atkCarol)
	if _, err := history.Init(ctx, st, "carol", "", nil); err != nil {
		t.Fatal(err)
	}
	n, err := history.OpenNode(ctx, st, "carol")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for v := uint32(1); v <= 3; v++ {
		if _, err := n.Journal().Append(journal.Record{Version: v, Statements: []string{fmt.Sprintf("UPDATE vars SET intval=%d WHERE name='data_version';", v)}}); err != nil {
			t.Fatal(err)
		}
	}
	// What carol's seal will store: every record but the newest version's.
	admin := ps.open(t, atkAdmin)
	var recs []journal.Record
	if err := admin.ReadJournal(ctx, "carol", 0, func(r journal.Record) error {
		if r.Version < 3 {
			recs = append(recs, r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	changeBytes := journal.EncodeChunk(recs)
	codec, err := chunk.NewCodec()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	enc, err := codec.Encoder()
	if err != nil {
		t.Fatal(err)
	}
	defer codec.PutEncoder(enc)
	body := func(kind chunk.Kind, data []byte) chunk.Body {
		return chunk.Body{ID: chunker.Sum(data), Kind: kind, Raw: uint32(len(data)), Body: enc.EncodeAll(data, nil)}
	}
	c := dialRaw(t, ps.addr)
	c.login(atkAlice)
	// A list declared a change chunk: its content says otherwise.
	list := manifest.EncodeList([]chunker.ID{{1}})
	if typ, p, err := c.call(msgPutBodies, encode(putBodiesRequest{Bodies: []chunk.Body{body(chunk.KindChange, list)}})); err != nil || typ != msgError || decodeError(p).Code != codeBadChunk {
		t.Fatalf("a list declared a change chunk: %s, want refused", reply(typ, p, err))
	}
	// carol's change chunk, first stored by alice as a page (any bytes
	// may be one).
	poisoned := body(chunk.KindPage, changeBytes)
	if typ, p, err := c.call(msgPutBodies, encode(putBodiesRequest{Bodies: []chunk.Body{poisoned}})); err != nil || typ != msgOK {
		t.Fatalf("alice stores carol's change bytes as a page: %s", reply(typ, p, err))
	}
	if _, err := n.Seal(ctx); err != nil {
		t.Fatalf("carol's seal: %v", err)
	}
	m, err := st.LatestManifest(ctx, "carol")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Changes) != 1 || m.Changes[0].ID != poisoned.ID {
		t.Fatalf("carol's seal stored changes %+v, not the chunk alice stored first (%s): the test does not poison", m.Changes, poisoned.ID.Short())
	}
	rep, err := history.Verify(ctx, admin, history.VerifyOptions{Node: "carol"})
	if err != nil {
		t.Fatalf("verify carol: %v", err)
	}
	if !rep.OK() {
		t.Errorf("carol's verify after alice stored her change chunk as a page: %+v", rep.Problems)
	}
	time.Sleep(300 * time.Millisecond) // dave appends meanwhile
	p50, p99 := b.check(bystanderMax)
	t.Logf("dave's appends p50 %v p99 %v", p50, p99)
}

// TestAttackLogInjection (finding 9): the client's self-description is
// logged quoted: a newline in it cannot forge a log line.
func TestAttackLogInjection(t *testing.T) {
	t.Parallel()
	ps := startProcServer(t)
	b := startBystander(t, ps, 20*time.Millisecond)
	const forged = "FORGED connection 10.0.0.1:1 opened: token admin"
	for _, token := range []string{atkAlice, strings.Repeat("ee", 20)} {
		c := dialRaw(t, ps.addr)
		c.frame(msgHello, encode(hello{Magic: magic, Version: ProtocolVersion, Token: token, Client: "plugin\n" + forged + "\r\n" + forged}))
		c.read()
		c.nc.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(ps.log(), "unknown token") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, line := range strings.Split(ps.log(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "FORGED") {
			t.Errorf("forged log line: %q", line)
		}
	}
	if !strings.Contains(ps.log(), `client "plugin\n`+forged) || !strings.Contains(ps.log(), `unknown token from client "plugin\n`+forged) {
		t.Errorf("the client string is not logged quoted:\n%s", ps.log())
	}
	time.Sleep(300 * time.Millisecond) // dave appends meanwhile
	b.check(bystanderMax)
}

// TestAttackRevocation (finding 10): removing a token from the auth file
// (SIGHUP) closes its live sessions at once, and those of a token whose
// nodes shrank; other tokens' sessions go on.
func TestAttackRevocation(t *testing.T) {
	t.Parallel()
	ps := startProcServer(t)
	b := startBystander(t, ps, 10*time.Millisecond)
	alice := dialRaw(t, ps.addr)
	alice.login(atkAlice)
	carol := dialRaw(t, ps.addr)
	carol.login(atkCarol)
	bob := dialRaw(t, ps.addr)
	bob.login(atkBob)
	// alice's token removed, carol's moved to another node, bob's kept.
	edited := strings.Replace(authLines(), atkAlice+" alice\n", "", 1)
	edited = strings.Replace(edited, atkCarol+" carol\n", atkCarol+" carol2\n", 1)
	if err := os.WriteFile(ps.auth, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	ps.signal(syscall.SIGHUP)
	for _, c := range []struct {
		name string
		c    *rawConn
	}{{"alice (revoked)", alice}, {"carol (nodes changed)", carol}} {
		c.c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.c.read(); err == nil || !(err == io.EOF || isReset(err) || strings.Contains(err.Error(), "EOF")) {
			t.Errorf("%s: session not closed on reload: %v", c.name, err)
		}
	}
	if typ, p, err := bob.call(msgJRead, encode(journalReadRequest{Node: "bob"})); err != nil || (typ == msgError && decodeError(p).Code == codeBusy) {
		t.Errorf("bob's session after the reload: %s", reply(typ, p, err))
	}
	again := dialRaw(t, ps.addr)
	again.hello(ProtocolVersion, atkAlice)
	again.expectError("alice logging in again", codeDenied, true)
	time.Sleep(300 * time.Millisecond) // dave appends after the reload too
	p50, p99 := b.check(bystanderMax)
	t.Logf("dave's appends p50 %v p99 %v", p50, p99)
}

// TestAttackBaseline is the benchmark of docs/benchmark.md, "Server under
// attack": each attack against the server built from this tree and the one
// at ATTACK_BASELINE_BIN (a backup-cli built from another commit), one
// server process each, with the server's CPU time and peak RSS. Skipped
// without ATTACK_BASELINE_BIN.
func TestAttackBaseline(t *testing.T) {
	base := os.Getenv("ATTACK_BASELINE_BIN")
	if base == "" {
		t.Skip("set ATTACK_BASELINE_BIN to a backup-cli built from the commit to compare with")
	}
	patterns := []struct {
		name string
		run  func(t *testing.T, ps *procServer) string
	}{
		{"CPU bomb: 600 × 562-byte bomb in one put-bodies", attackBomb},
		{"256 idle sockets without a token", func(t *testing.T, ps *procServer) string { return attackIdleSockets(t, ps, 256) }},
		{"big frames: 16 connections × 64 MiB journal-append", func(t *testing.T, ps *procServer) string {
			return attackBigFrames(t, ps, 16, MaxRecordFrame-(64<<10))
		}},
		{"64 MiB journal-append of empty statements", attackEmptyStatements},
	}
	var table []string
	for _, p := range patterns {
		for _, bin := range []struct{ name, path string }{{"before", base}, {"after", serverBinary(t)}} {
			t.Run(p.name+"/"+bin.name, func(t *testing.T) {
				ps := startProcServerBin(t, bin.path)
				initNode(t, ps, atkAlice, "alice")
				b := startBystander(t, ps, 20*time.Millisecond)
				start := ps.usage()
				began := time.Now()
				note := p.run(t, ps)
				took := time.Since(began)
				end := ps.usage()
				lat := b.finish()
				worst := time.Duration(0)
				if len(lat) > 0 {
					worst = lat[len(lat)-1]
				}
				if len(note) > 90 {
					note = note[:90] + "…"
				}
				table = append(table, fmt.Sprintf("| %s | %s | %.2f s | %.0f MB | %.1f s | %d / %v | %s |", p.name, bin.name,
					(end.CPU-start.CPU).Seconds(), float64(end.PeakRSS)/1e6, took.Seconds(), len(b.errs), worst.Round(time.Millisecond), note))
			})
		}
	}
	t.Logf("\n| attack | server | server CPU | peak RSS | attack took | dave: failed appends / slowest | outcome |\n|---|---|---|---|---|---|---|\n%s", strings.Join(table, "\n"))
}

// startProcServerBin is startProcServer running the backup-cli at bin.
func startProcServerBin(t *testing.T, bin string, extra ...string) *procServer {
	t.Helper()
	ps := newProcServer(t, extra...)
	ps.bin = bin
	ps.start()
	t.Cleanup(ps.kill)
	return ps
}
