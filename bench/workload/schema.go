package workload

import "errors"

var errNotPopulated = errors.New("workload: Populate must run first")

// schema is lightningd's schema for the tables the workload fills (columns
// as in a current lightningd database, somewhat trimmed), plus a few tables
// that stay empty in most nodes, as many of lightningd's do.
var schema = []string{
	"CREATE TABLE version (version INTEGER)",
	"CREATE TABLE vars (  name TEXT, val TEXT, intval INTEGER, blobval BLOB, PRIMARY KEY (name))",
	"CREATE TABLE peers (  id INTEGER, node_id BLOB UNIQUE, address TEXT, feature_bits BLOB DEFAULT NULL, last_known_address BLOB DEFAULT NULL, PRIMARY KEY (id))",
	"CREATE TABLE channels (  id INTEGER,  peer_id INTEGER REFERENCES peers(id) ON DELETE CASCADE,  short_channel_id TEXT,  scid INTEGER,  full_channel_id BLOB DEFAULT NULL,  state INTEGER,  funder INTEGER,  channel_flags INTEGER,  minimum_depth INTEGER,  next_index_local INTEGER,  next_index_remote INTEGER,  next_htlc_id INTEGER,  funding_tx_id BLOB,  funding_tx_outnum INTEGER,  funding_satoshi INTEGER,  our_funding_satoshi INTEGER DEFAULT 0,  msatoshi_local INTEGER,  fundingkey_remote BLOB,  revocation_basepoint_remote BLOB,  payment_basepoint_remote BLOB,  htlc_basepoint_remote BLOB,  delayed_payment_basepoint_remote BLOB,  per_commit_remote BLOB,  old_per_commit_remote BLOB,  local_feerate_per_kw INTEGER,  remote_feerate_per_kw INTEGER,  last_tx BLOB,  last_sig BLOB,  feerate_base INTEGER,  feerate_ppm INTEGER,  htlc_maximum_msat INTEGER DEFAULT 2100000000000000,  htlc_minimum_msat INTEGER DEFAULT 0,  PRIMARY KEY (id))",
	"CREATE TABLE channel_htlcs (  id INTEGER,  channel_id INTEGER REFERENCES channels(id) ON DELETE CASCADE,  channel_htlc_id INTEGER,  direction INTEGER,  origin_htlc INTEGER,  msatoshi INTEGER,  cltv_expiry INTEGER,  payment_hash BLOB,  payment_key BLOB,  routing_onion BLOB,  failuremsg BLOB,  malformed_onion INTEGER,  hstate INTEGER,  shared_secret BLOB, received_time INTEGER, partid INTEGER, localfailmsg BLOB, we_filled INTEGER, groupid INTEGER, min_commit_num INTEGER default 0, max_commit_num INTEGER default NULL, fail_immediate INTEGER DEFAULT 0, fees_msat INTEGER DEFAULT 0, updated_index INTEGER DEFAULT 0,  PRIMARY KEY (id),  UNIQUE (channel_id, channel_htlc_id, direction))",
	"CREATE TABLE invoices (  id INTEGER,  state INTEGER,  msatoshi INTEGER,  payment_hash BLOB,  payment_key BLOB,  label TEXT, expiry_time INTEGER, pay_index INTEGER, msatoshi_received INTEGER, paid_timestamp INTEGER, bolt11 TEXT, description TEXT, features BLOB DEFAULT '', updated_index INTEGER DEFAULT 0,  PRIMARY KEY (id),  UNIQUE (label),  UNIQUE (payment_hash))",
	"CREATE TABLE payments ( id INTEGER,  timestamp INTEGER,  status INTEGER,  payment_hash BLOB,  destination BLOB,  msatoshi INTEGER,  payment_preimage BLOB,  path_secrets BLOB,  route_nodes BLOB,  route_channels BLOB,  failonionreply BLOB,  faildestperm INTEGER,  failindex INTEGER,  failcode INTEGER,  failnode BLOB,  failupdate BLOB,  msatoshi_sent INTEGER,  faildetail TEXT,  description TEXT,  faildirection INTEGER,  bolt11 TEXT,  total_msat INTEGER,  partid INTEGER,  groupid INTEGER NOT NULL DEFAULT 0,  completed_at INTEGER DEFAULT NULL,  updated_index INTEGER DEFAULT 0,  PRIMARY KEY (id),  UNIQUE (payment_hash,  partid,  groupid))",
	"CREATE TABLE forwards (in_channel_scid INTEGER, in_htlc_id INTEGER, out_channel_scid INTEGER, out_htlc_id INTEGER, in_msatoshi INTEGER, out_msatoshi INTEGER, state INTEGER, received_time INTEGER, resolved_time INTEGER, failcode INTEGER, forward_style INTEGER, updated_index INTEGER DEFAULT 0, PRIMARY KEY(in_channel_scid, in_htlc_id))",
	"CREATE TABLE outputs (  prev_out_tx BLOB, prev_out_index INTEGER, value INTEGER, type INTEGER, status INTEGER, keyindex INTEGER, channel_id INTEGER, peer_id BLOB, commitment_point BLOB, confirmation_height INTEGER, spend_height INTEGER, scriptpubkey BLOB, reserved_til INTEGER DEFAULT NULL, option_anchor_outputs INTEGER DEFAULT 0, csv_lock INTEGER DEFAULT 1, PRIMARY KEY (prev_out_tx, prev_out_index))",
	"CREATE TABLE datastore (  key BLOB,  data BLOB,  generation INTEGER,  PRIMARY KEY (key))",
	"CREATE TABLE shachains (  id INTEGER, min_index INTEGER, num_valid INTEGER, PRIMARY KEY (id))",
	"CREATE TABLE offers (  offer_id BLOB, bolt12 TEXT, label TEXT, status INTEGER, force_paths INTEGER DEFAULT 0, PRIMARY KEY (offer_id))",
	"CREATE TABLE runes (id INTEGER, rune TEXT, last_used_nsec INTEGER DEFAULT NULL, PRIMARY KEY (id))",
	"CREATE TABLE htlc_sigs (channelid INTEGER REFERENCES channels(id) ON DELETE CASCADE, signature BLOB, inflight_tx_id BLOB, inflight_tx_outnum INTEGER)",
	"CREATE UNIQUE INDEX invoices_pay_index ON invoices(pay_index)",
	"CREATE INDEX invoice_update_idx ON invoices (updated_index)",
	"CREATE INDEX payments_update_idx ON payments (updated_index)",
	"CREATE INDEX forwards_updated_idx ON forwards (updated_index)",
	"CREATE INDEX channel_htlcs_speedup_unresolved_idx ON channel_htlcs(channel_id, direction) WHERE hstate NOT IN (9, 19)",
	"CREATE INDEX channel_htlcs_updated_idx ON channel_htlcs (updated_index)",
	"CREATE INDEX output_height_idx ON outputs (confirmation_height, spend_height)",
	"CREATE INDEX channel_idx ON htlc_sigs (channelid)",
}

// Schema returns the CREATE TABLE and CREATE INDEX statements of the
// workload's database, in the order the first hook runs them: vars (with
// lightningd's data_version row), peers, channels, channel_htlcs, invoices,
// payments, forwards, outputs, datastore, a few tables that stay empty, and
// lightningd's indexes on them. The caller owns the returned slice.
func Schema() []string {
	return append([]string(nil), schema...)
}

// schemaStatements is the first hook's content: the schema and the vars rows
// lightningd creates, including data_version = 0 (the hook's bump makes it 1).
func (g *Generator) schemaStatements() []string {
	stmts := Schema()
	stmts = append(stmts,
		"INSERT INTO version VALUES (260)",
		"INSERT INTO vars (name, intval) VALUES ('next_pay_index', 1)",
		"INSERT INTO vars (name, intval) VALUES ('bip32_max_index', 0)",
		"INSERT INTO vars (name, intval) VALUES ('last_processed_block', "+itoa(g.height)+")",
		"INSERT INTO vars (name, blobval) VALUES ('genesis_hash', "+blobLit(g.bytes(32))+")",
		"INSERT INTO vars (name, intval) VALUES ('data_version', 0);",
		"INSERT INTO vars (name, intval) VALUES ('coin_moves_count', 0);",
	)
	g.est += 8 * 4096 // page 1, vars, empty tables and index roots
	g.est += float64(len(schema)) * 4096
	return stmts
}
