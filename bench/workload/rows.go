package workload

import (
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"strings"
)

// Row sizes follow a lightningd routing node: incoming HTLCs carry the 1366-
// byte onion, invoices and payments a 300-500 character bolt11 string, keys
// and hashes are 32 or 33 bytes of random-looking data.
const (
	onionSize = 1366
	hashSize  = 32
	pointSize = 33
)

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// blobLit is an SQL blob literal x'...'.
func blobLit(b []byte) string { return "x'" + hex.EncodeToString(b) + "'" }

// stmt builds one SQL statement with inlined literals and keeps a running
// estimate of the row's stored size.
type stmt struct {
	buf   []byte
	cols  int
	bytes int
}

func newStmt(prefix string, capacity int) *stmt {
	s := &stmt{buf: make([]byte, 0, capacity)}
	s.buf = append(s.buf, prefix...)
	return s
}

func (s *stmt) sep() {
	if s.cols > 0 {
		s.buf = append(s.buf, ", "...)
	}
	s.cols++
}

// i appends an integer value.
func (s *stmt) i(v int64) *stmt {
	s.sep()
	s.buf = strconv.AppendInt(s.buf, v, 10)
	s.bytes += 1 + intSize(v)
	return s
}

// b appends a blob value as x'..'.
func (s *stmt) b(p []byte) *stmt {
	s.sep()
	s.buf = append(s.buf, "x'"...)
	s.buf = hex.AppendEncode(s.buf, p)
	s.buf = append(s.buf, '\'')
	s.bytes += 2 + len(p)
	return s
}

// t appends a text value in single quotes, each quote inside doubled.
func (s *stmt) t(v string) *stmt {
	s.sep()
	s.buf = append(s.buf, '\'')
	if strings.IndexByte(v, '\'') >= 0 {
		v = strings.ReplaceAll(v, "'", "''")
	}
	s.buf = append(s.buf, v...)
	s.buf = append(s.buf, '\'')
	s.bytes += 2 + len(v)
	return s
}

// null appends NULL.
func (s *stmt) null() *stmt {
	s.sep()
	s.buf = append(s.buf, "NULL"...)
	s.bytes++
	return s
}

// raw appends text as is (no value separator).
func (s *stmt) raw(v string) *stmt {
	s.buf = append(s.buf, v...)
	return s
}

func (s *stmt) String() string { return string(s.buf) }

// intSize is the stored size of an integer in a SQLite record.
func intSize(v int64) int {
	switch {
	case v >= 0 && v <= 1:
		return 0
	case v >= -128 && v < 128:
		return 1
	case v >= -32768 && v < 32768:
		return 2
	case v >= -1<<23 && v < 1<<23:
		return 3
	case v >= -1<<31 && v < 1<<31:
		return 4
	case v >= -1<<47 && v < 1<<47:
		return 6
	}
	return 8
}

// bytes returns n random bytes.
func (g *Generator) bytes(n int) []byte {
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], g.rng.Uint64())
	}
	return b[:n]
}

// derive returns size bytes that depend only on the seed, tag and n, so a
// row's key can be recomputed from its number instead of being remembered.
func (g *Generator) derive(tag, n uint64, size int) []byte {
	b := make([]byte, (size+7)&^7)
	x := g.cfg.Seed ^ tag*0x9e3779b97f4a7c15 ^ n*0xbf58476d1ce4e5b9
	for i := 0; i < len(b); i += 8 {
		x += 0x9e3779b97f4a7c15 // splitmix64
		z := x
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		binary.LittleEndian.PutUint64(b[i:], z^z>>31)
	}
	return b[:size]
}

// point is a compressed secp256k1 point: 02 or 03, then 32 bytes.
func (g *Generator) point() []byte {
	p := g.bytes(pointSize)
	p[0] = 2 + p[0]&1
	return p
}

func (g *Generator) between(lo, hi int) int { return lo + g.rng.IntN(hi-lo+1) }

const bech32Chars = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

// bolt11 is an invoice string of 300 to 500 characters.
func (g *Generator) bolt11(msat int64) string {
	n := g.between(300, 500)
	b := make([]byte, 0, n)
	b = append(b, "lnbc"...)
	b = strconv.AppendInt(b, msat/100, 10)
	b = append(b, "n1p"...)
	for len(b) < n {
		x := g.rng.Uint64()
		for k := 0; k < 12 && len(b) < n; k++ {
			b = append(b, bech32Chars[x&31])
			x >>= 5
		}
	}
	return string(b)
}

var words = strings.Fields("coffee tip donation sats lunch invoice order rebalance podcast boost zap " +
	"Alice's Bob's ticket subscription fee refund swap channel liquidity payment for the a of")

// description is a short human text, sometimes with an apostrophe.
func (g *Generator) description() string {
	n := g.between(1, 10)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = words[g.rng.IntN(len(words))]
	}
	return strings.Join(parts, " ")
}

func (g *Generator) msat() int64 { return int64(g.between(1, 5_000_000)) * 1000 }

func (g *Generator) nanos() int64 { return g.now*1_000_000_000 + int64(g.rng.IntN(1_000_000_000)) }

// scid is channel ch's short channel id as lightningd stores it (integer).
func scid(ch int) int64 {
	return int64(700_000+ch*37)<<40 | int64(ch*13%3000)<<16 | int64(ch%2)
}

// fwdChannel is the incoming channel of forward n (derived, not stored).
func (g *Generator) fwdChannel(n int64) int { return int(uint64(n) * 7919 % uint64(g.channels)) }

func (g *Generator) nextUpdated() int64 { g.updIndex++; return g.updIndex }

// account adds a new row's estimated file bytes: the record, the cell and
// b-tree overhead, and its index entries (random-key indexes fill pages
// less than appended ones).
func (g *Generator) account(s *stmt, indexBytes int) {
	g.est += float64(s.bytes+s.cols+12)*1.05 + float64(indexBytes)*1.38
}

func (g *Generator) insertPeer(i int) string {
	s := newStmt("INSERT INTO peers (id, node_id, address, feature_bits, last_known_address) VALUES (", 256)
	s.i(int64(i + 1)).b(g.point()).t("198.51.100." + itoa(int64(i%250)) + ":9735").b(g.bytes(8)).null()
	g.account(s, 50)
	return s.raw(")").String()
}

func (g *Generator) insertChannel(i int) string {
	s := newStmt("INSERT INTO channels (id, peer_id, short_channel_id, scid, full_channel_id, state, funder, channel_flags, minimum_depth, next_index_local, next_index_remote, next_htlc_id, funding_tx_id, funding_tx_outnum, funding_satoshi, our_funding_satoshi, msatoshi_local, fundingkey_remote, revocation_basepoint_remote, payment_basepoint_remote, htlc_basepoint_remote, delayed_payment_basepoint_remote, per_commit_remote, old_per_commit_remote, local_feerate_per_kw, remote_feerate_per_kw, last_tx, last_sig, feerate_base, feerate_ppm) VALUES (", 4096)
	sc := scid(i)
	sat := int64(g.between(100_000, 16_000_000))
	s.i(int64(i + 1)).i(int64(i + 1)).t(itoa(sc>>40) + "x" + itoa(sc>>16&0xffffff) + "x" + itoa(sc&0xffff)).i(sc).b(g.bytes(hashSize))
	s.i(2).i(int64(i % 2)).i(1).i(3).i(1).i(1).i(0).b(g.bytes(hashSize)).i(int64(i % 2)).i(sat).i(sat * (1 - int64(i%2))).i(sat * 500)
	s.b(g.point()).b(g.point()).b(g.point()).b(g.point()).b(g.point()).b(g.point()).b(g.point())
	s.i(253).i(253).b(g.bytes(g.between(300, 700))).b(g.bytes(64)).i(1000).i(int64(g.between(1, 2000)))
	g.account(s, 0)
	return s.raw(")").String()
}

// updateChannel is a commitment update: new indexes, balance, points, signature.
func (g *Generator) updateChannel(ch int) string {
	s := newStmt("UPDATE channels SET next_index_local = next_index_local + 1, next_index_remote = next_index_remote + 1, msatoshi_local = ", 512)
	s.buf = strconv.AppendInt(s.buf, g.msat()*100, 10)
	s.buf = append(s.buf, ", old_per_commit_remote = per_commit_remote, per_commit_remote = "...)
	s.buf = append(s.buf, blobLit(g.point())...)
	s.buf = append(s.buf, ", last_sig = "...)
	s.buf = append(s.buf, blobLit(g.bytes(64))...)
	s.buf = append(s.buf, " WHERE id = "...)
	s.buf = strconv.AppendInt(s.buf, int64(ch+1), 10)
	return s.String()
}

// insert adds a row to table t.
func (g *Generator) insert(t table) string {
	n := g.rows[t].add()
	switch t {
	case tHTLCs:
		return g.insertHTLC(n)
	case tForwards:
		return g.insertForward(n)
	case tInvoices:
		return g.insertInvoice(n)
	case tPayments:
		return g.insertPayment(n)
	case tOutputs:
		return g.insertOutput(n)
	default:
		return g.insertDatastore(n)
	}
}

func (g *Generator) insertHTLC(n int64) string {
	s := newStmt("INSERT INTO channel_htlcs (id, channel_id, channel_htlc_id, direction, origin_htlc, msatoshi, cltv_expiry, payment_hash, payment_key, routing_onion, failuremsg, malformed_onion, hstate, shared_secret, received_time, partid, localfailmsg, we_filled, groupid, min_commit_num, max_commit_num, fail_immediate, fees_msat, updated_index) VALUES (", 3200)
	ch := g.rng.IntN(g.channels)
	g.htlcNext[ch]++
	dir := int64(g.rng.IntN(2))
	s.i(n + 1).i(int64(ch + 1)).i(g.htlcNext[ch]).i(dir)
	if dir == 0 {
		s.null()
	} else {
		s.i(int64(g.rng.IntN(1 << 30)))
	}
	s.i(g.msat()).i(g.height + int64(g.between(40, 2016))).b(g.bytes(hashSize))
	if g.rng.IntN(4) > 0 {
		s.b(g.bytes(hashSize))
	} else {
		s.null()
	}
	if dir == 0 {
		s.b(g.bytes(onionSize))
	} else {
		s.null()
	}
	hstate := int64(9 + 10*dir)
	if g.rng.IntN(10) == 0 {
		hstate = int64(g.between(0, 18))
	}
	s.null().i(0).i(hstate).b(g.bytes(hashSize)).i(g.nanos()).null().null().null().null()
	c := g.htlcNext[ch]
	s.i(c).i(c + 1).i(0).i(int64(g.rng.IntN(2000))).i(g.nextUpdated())
	g.account(s, 60)
	return s.raw(")").String()
}

func (g *Generator) insertForward(n int64) string {
	s := newStmt("INSERT INTO forwards (in_channel_scid, in_htlc_id, out_channel_scid, out_htlc_id, in_msatoshi, out_msatoshi, state, received_time, resolved_time, failcode, forward_style, updated_index) VALUES (", 320)
	m := g.msat()
	s.i(scid(g.fwdChannel(n))).i(n).i(scid(g.rng.IntN(g.channels))).i(int64(g.rng.IntN(1 << 20))).i(m + 1000).i(m)
	if g.rng.IntN(5) == 0 {
		s.i(2).i(g.nanos()).i(g.nanos()).i(0x400f)
	} else {
		s.i(1).i(g.nanos()).i(g.nanos()).null()
	}
	s.i(1).i(g.nextUpdated())
	g.account(s, 45)
	return s.raw(")").String()
}

func (g *Generator) insertInvoice(n int64) string {
	s := newStmt("INSERT INTO invoices (id, state, msatoshi, payment_hash, payment_key, label, expiry_time, pay_index, msatoshi_received, paid_timestamp, bolt11, description, features, updated_index) VALUES (", 1400)
	m := g.msat()
	s.i(n + 1)
	if g.rng.IntN(3) > 0 {
		g.payIndex++
		s.i(1).i(m).b(g.bytes(hashSize)).b(g.bytes(hashSize)).t("inv-" + itoa(n)).i(g.now + 604800).i(g.payIndex).i(m).i(g.now)
	} else {
		s.i(0).i(m).b(g.bytes(hashSize)).b(g.bytes(hashSize)).t("inv-" + itoa(n)).i(g.now + 604800).null().null().null()
	}
	s.t(g.bolt11(m)).t(g.description()).b([]byte{0x02, 0x41, 0x00}).i(g.nextUpdated())
	g.account(s, 120)
	return s.raw(")").String()
}

func (g *Generator) insertPayment(n int64) string {
	s := newStmt("INSERT INTO payments (id, timestamp, status, payment_hash, destination, msatoshi, payment_preimage, path_secrets, route_nodes, route_channels, failonionreply, faildestperm, failindex, failcode, failnode, failupdate, msatoshi_sent, faildetail, description, faildirection, bolt11, total_msat, partid, groupid, completed_at, updated_index) VALUES (", 3000)
	m := g.msat()
	hops := g.between(1, 5)
	status := int64(g.rng.IntN(3)) // pending, failed, complete
	s.i(n + 1).i(g.now).i(status).b(g.bytes(hashSize)).b(g.point()).i(m)
	if status == 2 {
		s.b(g.bytes(hashSize))
	} else {
		s.null()
	}
	s.b(g.bytes(hops * hashSize)).b(g.bytes(hops * pointSize)).b(g.bytes(hops * 8))
	if status == 1 {
		s.b(g.bytes(g.between(200, 300))).i(0).i(int64(g.rng.IntN(hops))).i(0x400f).b(g.point()).b(g.bytes(g.between(130, 140)))
	} else {
		s.null().null().null().null().null().null()
	}
	s.i(m + int64(hops)*1000)
	if status == 1 {
		s.t("WIRE_TEMPORARY_CHANNEL_FAILURE")
	} else {
		s.null()
	}
	s.t(g.description()).null().t(g.bolt11(m)).i(m).i(0).i(1)
	if status == 0 {
		s.null()
	} else {
		s.i(g.now)
	}
	s.i(g.nextUpdated())
	g.account(s, 70)
	return s.raw(")").String()
}

func (g *Generator) insertOutput(n int64) string {
	s := newStmt("INSERT INTO outputs (prev_out_tx, prev_out_index, value, type, status, keyindex, channel_id, peer_id, commitment_point, confirmation_height, spend_height, scriptpubkey, reserved_til) VALUES (", 512)
	s.b(g.derive(1, uint64(n), hashSize)).i(n % 4).i(int64(g.between(546, 10_000_000))).i(int64(g.rng.IntN(3))).i(0).i(n)
	if g.rng.IntN(3) == 0 {
		s.i(int64(g.rng.IntN(g.channels) + 1)).b(g.point()).b(g.point())
	} else {
		s.null().null().null()
	}
	s.i(g.height - int64(g.rng.IntN(1000))).null().b(g.bytes(22 + 12*g.rng.IntN(2))).null()
	g.account(s, 70)
	return s.raw(")").String()
}

// datastoreKey is a plugin's datastore key ("plugin\0name\0n"), as bytes.
func datastoreKey(n int64) []byte { return []byte("bench\x00key\x00" + itoa(n)) }

func (g *Generator) insertDatastore(n int64) string {
	s := newStmt("INSERT INTO datastore (key, data, generation) VALUES (", 1024)
	s.b(datastoreKey(n)).b(g.bytes(g.between(20, 400))).i(0)
	g.account(s, 30)
	return s.raw(")").String()
}

// update changes row n of table t the way lightningd does when an HTLC,
// invoice or payment resolves, a forward settles, an output is spent or a
// plugin rewrites its data.
func (g *Generator) update(t table, n int64) string {
	u := itoa(g.nextUpdated())
	switch t {
	case tHTLCs:
		return "UPDATE channel_htlcs SET hstate = " + itoa(int64(g.between(0, 19))) + ", payment_key = " + blobLit(g.bytes(hashSize)) +
			", updated_index = " + u + " WHERE id = " + itoa(n+1)
	case tForwards:
		return "UPDATE forwards SET state = 1, resolved_time = " + itoa(g.nanos()) + ", updated_index = " + u +
			" WHERE in_channel_scid = " + itoa(scid(g.fwdChannel(n))) + " AND in_htlc_id = " + itoa(n)
	case tInvoices:
		g.payIndex++
		return "UPDATE invoices SET state = 1, msatoshi_received = " + itoa(g.msat()) + ", paid_timestamp = " + itoa(g.now) +
			", pay_index = " + itoa(g.payIndex) + ", updated_index = " + u + " WHERE id = " + itoa(n+1)
	case tPayments:
		return "UPDATE payments SET status = 2, payment_preimage = " + blobLit(g.bytes(hashSize)) + ", completed_at = " + itoa(g.now) +
			", updated_index = " + u + " WHERE id = " + itoa(n+1)
	case tOutputs:
		return "UPDATE outputs SET status = 2, spend_height = " + itoa(g.height) +
			" WHERE prev_out_tx = " + blobLit(g.derive(1, uint64(n), hashSize)) + " AND prev_out_index = " + itoa(n%4)
	default:
		return "UPDATE datastore SET data = " + blobLit(g.bytes(g.between(20, 400))) + ", generation = generation + 1 WHERE key = " + blobLit(datastoreKey(n))
	}
}

// delete removes row n of table t (delforward, delinvoice, delpay, ...).
func (g *Generator) delete(t table, n int64) string {
	switch t {
	case tHTLCs:
		return "DELETE FROM channel_htlcs WHERE id = " + itoa(n+1)
	case tForwards:
		return "DELETE FROM forwards WHERE in_channel_scid = " + itoa(scid(g.fwdChannel(n))) + " AND in_htlc_id = " + itoa(n)
	case tInvoices:
		return "DELETE FROM invoices WHERE id = " + itoa(n+1)
	case tPayments:
		return "DELETE FROM payments WHERE id = " + itoa(n+1)
	case tOutputs:
		return "DELETE FROM outputs WHERE prev_out_tx = " + blobLit(g.derive(1, uint64(n), hashSize)) + " AND prev_out_index = " + itoa(n%4)
	default:
		return "DELETE FROM datastore WHERE key = " + blobLit(datastoreKey(n))
	}
}
