package monitor

import (
	"github.com/clnbackup/backup/store/history"
	"github.com/clnbackup/backup/store/journal"
	"github.com/prometheus/client_golang/prometheus"
)

// desc declares one metric; every metric is documented in docs/metrics.md.
func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("clnbackup_"+name, help, labels, nil)
}

// The metrics, per node (label node) from history.Status, then the store's,
// then the store server's counters.
var (
	descUp             = desc("status_up", "1 when the store's status could be taken at the last scrape, 0 when it failed (the server logs why)")
	descStatusTime     = desc("status_timestamp_seconds", "When the status served was taken (it is reused for a few seconds)")
	descLastChange     = desc("node_last_change_timestamp_seconds", "When the node's data last changed as far as the store knows (newest journal record, sealed change or snapshot)", "node")
	descWriterAlive    = desc("node_writer_alive", "1 when a writer holds the node's lease and refreshes it, else 0", "node")
	descStale          = desc("node_stale", "1 when the node has had no live writer for longer than --http-stale (or never had one), else 0", "node")
	descBacklogRecords = desc("node_journal_backlog_records", "Journal records not sealed into a restore point yet", "node")
	descBacklogBytes   = desc("node_journal_backlog_bytes", "Bytes of the journal records not sealed into a restore point yet", "node")
	descSnapshotAge    = desc("node_snapshot_age_seconds", "Age of the node's newest snapshot, by the store's clock", "node")
	descStoredBytes    = desc("node_stored_bytes", "Bytes writing the node's restore points added to the store (after deduplication)", "node")
	descLogicalBytes   = desc("node_logical_bytes", "Size of all the node's restore points' databases", "node")
	descRestorePoints  = desc("node_restore_points", "Number of the node's restore points (manifests)", "node")
	descNodeErrors     = desc("node_unreadable", "1 when some of the node's objects could not be read (backup-cli status shows which), else 0", "node")
	descStoreBytes     = desc("store_stored_bytes", "Bytes the store holds (packs, objects, journal files)")
	descStoreFree      = desc("store_free_bytes", "Space left on the store's file system")
	descAccepted       = desc("server_connections_accepted_total", "Client connections that logged in")
	descRefused        = desc("server_connections_refused_total", "Client connections refused, by reason (a limit, or a failed login)", "reason")
	descConns          = desc("server_connections", "Client connections open now, by state (authenticated, handshake)", "state")
	descRequests       = desc("server_requests_total", "Requests served, by type", "type")
	descErrors         = desc("server_errors_total", "Error replies sent, by code", "code")
	descBytesIn        = desc("server_received_bytes_total", "Protocol bytes read from clients")
	descBytesOut       = desc("server_sent_bytes_total", "Protocol bytes written to clients")
	descJournalSyncs   = desc("journal_fdatasyncs_total", "fdatasyncs of journal files (segments and group commit's write-ahead log) made by this process")
)

// collector turns the cached status and the server's counters into
// metrics at each scrape.
type collector struct{ h *Handler }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descStatusTime, descLastChange, descWriterAlive, descStale, descBacklogRecords, descBacklogBytes,
		descSnapshotAge, descStoredBytes, descLogicalBytes, descRestorePoints, descNodeErrors, descStoreBytes, descStoreFree,
		descAccepted, descRefused, descConns, descRequests, descErrors, descBytesIn, descBytesOut, descJournalSyncs} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	st, taken, err := c.h.status()
	if err != nil {
		gauge(descUp, 0)
	} else {
		gauge(descUp, 1)
		gauge(descStatusTime, float64(taken.UnixMilli())/1000)
		stale := map[string]bool{}
		for _, n := range st.Stale(c.h.opt.Stale) {
			stale[n.Name] = true
		}
		for _, n := range st.Nodes {
			if !n.LastChange.IsZero() {
				gauge(descLastChange, float64(n.LastChange.UnixMilli())/1000, n.Name)
			}
			gauge(descWriterAlive, b2f(n.Writer.State == history.WriterLive), n.Name)
			gauge(descStale, b2f(stale[n.Name]), n.Name)
			gauge(descBacklogRecords, float64(n.Backlog.Records), n.Name)
			gauge(descBacklogBytes, float64(n.Backlog.Bytes), n.Name)
			if !n.Snapshot.IsZero() {
				gauge(descSnapshotAge, st.At.Sub(n.Snapshot).Seconds(), n.Name)
			}
			gauge(descStoredBytes, float64(n.AddedBytes), n.Name)
			gauge(descLogicalBytes, float64(n.LogicalBytes), n.Name)
			gauge(descRestorePoints, float64(n.RestorePoints), n.Name)
			gauge(descNodeErrors, b2f(len(n.Errors) > 0), n.Name)
		}
		if st.SizeKnown {
			gauge(descStoreBytes, float64(st.StoredBytes))
		}
		if st.FreeKnown {
			gauge(descStoreFree, float64(st.FreeBytes))
		}
	}
	if c.h.opt.Stats == nil {
		return
	}
	s := c.h.opt.Stats()
	counter(descAccepted, s.Accepted)
	for reason, n := range s.Refused {
		counter(descRefused, n, reason)
	}
	gauge(descConns, float64(s.Authenticated), "authenticated")
	gauge(descConns, float64(s.Handshaking), "handshake")
	for typ, n := range s.Requests {
		counter(descRequests, n, typ)
	}
	for code, n := range s.Errors {
		counter(descErrors, n, code)
	}
	counter(descBytesIn, s.BytesIn)
	counter(descBytesOut, s.BytesOut)
	counter(descJournalSyncs, int64(journal.Fdatasyncs()))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
