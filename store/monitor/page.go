package monitor

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/clnbackup/backup/store/history"
)

// pageTmpl is the status page: one table, styled inline, no scripts, so it
// works from a terminal browser and behind strict proxies.
var pageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>backup-cli server: {{.Store}}</title>
<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}th,td{border:1px solid #999;padding:.2em .6em;text-align:left}
tr.stale td{background:#fdd}.num{text-align:right}</style></head>
<body><h1>Store {{.Store}}</h1>
{{if .Err}}<p class="error"><strong>The store's status could not be taken:</strong> {{.Err}}</p>{{else}}
<p>Status taken {{.At}} (reused for {{.CacheFor}}). A node is <strong>stale</strong> when it has had no live writer for over {{.Stale}}, or never had one.
{{if .Stored}} Stored: {{.Stored}}.{{end}}{{if .Free}} Free: {{.Free}}.{{end}}</p>
<table><thead><tr><th>Node</th><th>Writer</th><th>Last change</th><th>Backlog</th><th>Snapshot age</th><th>Stored</th><th></th></tr></thead><tbody>
{{range .Nodes}}<tr class="{{if .Stale}}stale{{else}}ok{{end}}" id="node-{{.Name}}"><td>{{.Name}}</td><td>{{.Writer}}</td><td>{{.LastChange}}</td>
<td class="num">{{.Backlog}}</td><td class="num">{{.SnapshotAge}}</td><td class="num">{{.Stored}}</td><td>{{if .Stale}}<strong>STALE</strong>{{end}}{{range .Errors}} {{.}}{{end}}</td></tr>
{{else}}<tr><td colspan="7">No nodes yet.</td></tr>{{end}}
</tbody></table>{{end}}
<p><a href="/metrics">Prometheus metrics</a></p></body></html>
`))

// pageRow is one node on the status page, its figures already in words.
type pageRow struct {
	Name, Writer, LastChange, Backlog, SnapshotAge, Stored string
	Stale                                                  bool
	Errors                                                 []string
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	st, taken, err := h.status()
	data := struct {
		Store, At, Stale, CacheFor, Stored, Free string
		Err                                      error
		Nodes                                    []pageRow
	}{Store: h.opt.Store.Location(), At: taken.UTC().Format(time.RFC3339), Stale: h.opt.Stale.String(), CacheFor: h.opt.CacheFor.String(), Err: err}
	if st.SizeKnown {
		data.Stored = size(st.StoredBytes)
	}
	if st.FreeKnown {
		data.Free = size(int64(st.FreeBytes))
	}
	stale := map[string]bool{}
	for _, n := range st.Stale(h.opt.Stale) {
		stale[n.Name] = true
	}
	for _, n := range st.Nodes {
		row := pageRow{Name: n.Name, Writer: writerText(st, n), LastChange: "-", SnapshotAge: "-", Stored: size(n.AddedBytes),
			Backlog: fmt.Sprintf("%d records, %s", n.Backlog.Records, size(n.Backlog.Bytes)), Stale: stale[n.Name], Errors: n.Errors}
		if !n.LastChange.IsZero() {
			row.LastChange = fmt.Sprintf("%s (%s ago, %s)", n.LastChange.UTC().Format(time.RFC3339), age(st.At.Sub(n.LastChange)), n.LastChangeFrom)
		}
		if !n.Snapshot.IsZero() {
			row.SnapshotAge = age(st.At.Sub(n.Snapshot))
		}
		data.Nodes = append(data.Nodes, row)
	}
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, data); err != nil {
		http.Error(w, "render the status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write(buf.Bytes())
}

// writerText says a node's writer state as status does.
func writerText(st history.StoreStatus, n history.NodeStatus) string {
	switch n.Writer.State {
	case history.WriterLive:
		return fmt.Sprintf("live, refreshed %s ago", age(st.At.Sub(n.Writer.LastRefresh)))
	case history.WriterExpired, history.WriterDead:
		return fmt.Sprintf("%s %s ago", n.Writer.State, age(st.At.Sub(n.Writer.StaleSince)))
	}
	return "none"
}

func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return d.Round(time.Second).String()
}

// size prints bytes in binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
