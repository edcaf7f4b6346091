// Package plugin is the Core Lightning side of the backup: the JSON-RPC 2.0
// protocol lightningd speaks with a plugin over its stdin and stdout, and the
// db_write version rules.
//
// lightningd calls the db_write hook with the SQL of every transaction before
// it commits it, and waits for the answer. The plugin answers
// {"result":"continue"} only once the change is durable in the node's
// journal, and refuses (a JSON-RPC error, upon which lightningd exits without
// committing) whenever the backup and the database could drift apart: no
// backup.lock, a store it cannot open, a node another plugin is writing, a
// data_version that does not follow what the backup holds, or a failed write.
// That refusal is the only way the plugin stops lightningd; it never kills
// processes.
//
// Nothing but JSON-RPC messages is ever written to stdout, and the plugin
// logs only through lightningd's log notification. Storage is reached only
// through the Backup interface (OpenStore implements it over the store).
package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clnbackup/backup/internal/version"
	"github.com/clnbackup/backup/store/journal"
)

// Config adapts Run to its environment; the zero Config is the real plugin.
type Config struct {
	// Dir is the lightning network directory, where backup.lock is read
	// ("" = the working directory, which lightningd sets to it). Relative
	// file:// URLs in backup.lock are resolved against the working
	// directory.
	Dir string
	// Open opens the backup that backup.lock names (nil = OpenStore).
	Open Opener
	// LockWait is how long the plugin waits for another plugin to release
	// the node (ErrNodeInUse) before refusing: the plugin of a lightningd
	// that is still stopping lets go within moments. 0 means
	// DefaultLockWait; a negative value does not wait.
	LockWait time.Duration
}

// DefaultLockWait is Config.LockWait's default.
const DefaultLockWait = 10 * time.Second

// Run is the plugin: it reads lightningd's requests from in and writes
// responses and log notifications to out until in ends. It returns the
// process exit status: 0 when lightningd closed in (the journal is closed
// cleanly; every acknowledged change was durable already), 1 when lightningd
// sent something unreadable or out could not be written.
func Run(in io.Reader, out io.Writer, cfg Config) int {
	if cfg.Open == nil {
		cfg.Open = OpenStore
	}
	dir := cfg.Dir
	if dir == "" {
		dir = "."
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &plugin{cfg: cfg, dir: dir, out: newWriter(out), ctx: ctx, cancel: cancel, opts: defaultOptions()}
	return p.run(in)
}

// plugin is one run of the plugin. The fields after "read loop state" are
// owned by the read loop; background goroutines (compaction, status) only
// use out, comp, ctx and the Backup, which are safe for that.
type plugin struct {
	cfg    Config
	dir    string // the lightning directory, absolute, for messages
	out    *writer
	ctx    context.Context // cancelled at shutdown: stops a compaction
	cancel context.CancelFunc
	wg     sync.WaitGroup // background goroutines
	comp   compactor
	// statusMu serializes backup-status's reads of the store.
	statusMu sync.Mutex
	// space is the low-space watch (nil: not watching), for backup-status.
	space atomic.Pointer[spaceWatch]

	// read loop state
	opened   bool   // backup.lock was read (at the first init or db_write)
	backup   Backup // nil when it could not be opened
	start    Start
	failed   string // non-empty: every db_write is refused with this
	ver      versions
	matched  bool // a write succeeded since start ("Versions match up" said)
	initDone bool
	opts     options
}

func (p *plugin) run(in io.Reader) int {
	dec := json.NewDecoder(in)
	status := 0
	for {
		var req request
		err := dec.Decode(&req)
		if errors.Is(err, io.EOF) {
			break
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			// A well-formed JSON value that is not a valid request: the
			// stream is still in step. Answer it if it has an id (an
			// error, which stops lightningd if it was a db_write).
			if len(req.ID) > 0 {
				p.out.fail(req.ID, codeInvalidRequest, fmt.Sprintf("invalid request: %v", err))
			} else {
				p.out.logf(levelWarn, "Ignoring a message from lightningd that is not a JSON-RPC request: %v", err)
			}
			continue
		}
		if err != nil {
			p.out.logf(levelError, "Cannot read lightningd's messages (%v): stopping the backup plugin", err)
			status = 1
			break
		}
		p.handle(&req)
		if p.out.failed() != nil {
			status = 1
			break
		}
	}
	p.shutdown()
	return status
}

// shutdown stops background work and releases the backup.
func (p *plugin) shutdown() {
	p.cancel()
	p.wg.Wait()
	if p.backup != nil {
		if err := p.backup.Close(); err != nil {
			p.out.logf(levelWarn, "Closing the backup: %v", err)
		}
	}
}

func (p *plugin) handle(req *request) {
	if req.Method == "" || req.isNotification() {
		return // a response or a notification: none is expected
	}
	switch req.Method {
	case "getmanifest":
		p.out.reply(req.ID, getManifest())
	case "init":
		p.init(req)
	case "db_write":
		p.dbWrite(req)
	case "backup-compact":
		p.compactRPC(req)
	case "backup-status":
		p.statusRPC(req)
	default:
		p.out.fail(req.ID, codeMethodNotFound, fmt.Sprintf("unknown method %q", req.Method))
	}
}

// init answers {} in every case, so that the log lines explaining a problem
// reach lightningd's log; a backup that cannot be written stops lightningd
// at its first db_write instead.
func (p *plugin) init(req *request) {
	p.open()
	var params struct {
		Options map[string]json.RawMessage `json:"options"`
	}
	if len(req.Params) > 0 {
		if err := json.Unmarshal(req.Params, &params); err != nil {
			p.out.logf(levelWarn, "Cannot read init's options (%v): using the defaults", err)
		}
	}
	p.opts = parseOptions(params.Options, func(msg string) { p.out.log(levelWarn, msg) })
	p.initDone = true
	if p.backup != nil && p.space.Load() == nil {
		p.watchSpace(p.backup) // after init: its floor is an option
	}
	p.out.reply(req.ID, struct{}{})
}

// open reads backup.lock and opens the backup it names, once: at the first
// init or db_write (lightningd sends db_writes before init while it creates
// or upgrades its database).
func (p *plugin) open() {
	if p.opened {
		return
	}
	p.opened = true
	lock, err := readLock(p.dir)
	if errors.Is(err, errNoLock) {
		p.setFailed(fmt.Sprintf("Could not find backup.lock in the lightning-dir (%s): refusing every db_write, so lightningd stops without committing. "+
			"Set up the backup first: with lightningd stopped, run `backup-cli init --lightning-dir %s file:///path/to/store`, then start lightningd again.",
			p.dir, p.dir))
		return
	}
	if err != nil {
		p.setFailed(fmt.Sprintf("Cannot use the backup.lock in the lightning-dir: %v. Refusing every db_write, so lightningd stops without committing; "+
			"correct the file (backup-cli init writes it) and start lightningd again.", err))
		return
	}
	lock.Dir = p.dir
	b, start, err := p.openWaiting(lock)
	if errors.Is(err, ErrNodeInUse) {
		p.setFailed(fmt.Sprintf("Cannot back up: %v. Refusing every db_write, so this lightningd stops without committing: two nodes must never write "+
			"one backup. Stop the other lightningd (or plugin) using node %q, or give this node its own name: with lightningd stopped, move %s away "+
			"and run `backup-cli init --lightning-dir %s --node NEW-NAME %s`.", err, lock.Node, filepath.Join(p.dir, LockName), p.dir, lock.URL))
		return
	}
	if err != nil {
		p.setFailed(fmt.Sprintf("Cannot open the backup that backup.lock names (store %s, node %q): %v. Refusing every db_write, so lightningd stops "+
			"without committing; fix the cause and start lightningd again.", lock.URL, lock.Node, err))
		return
	}
	p.backup, p.start = b, start
	p.ver = versions{held: start.Held, replaceable: start.Replaceable}
	p.out.logf(levelInfo, "Backing up node %q to %s: the backup holds data_version %d (manifest %d at data_version %d, then %d journal records); backup-plugin %s",
		start.Node, start.Store, start.Held, start.Manifest, start.ManifestVersion, start.JournalRecords, version.String())
	if start.Recovered > 0 {
		p.out.logf(levelWarn, "Journal recovered: dropped %d bytes of a torn last record, a change the plugin was writing when it stopped and never "+
			"acknowledged; nothing lightningd committed was lost", start.Recovered)
	}
}

// openWaiting opens the backup, waiting up to LockWait while another plugin
// holds the node.
func (p *plugin) openWaiting(lock Lock) (Backup, Start, error) {
	b, start, err := p.cfg.Open(p.ctx, lock)
	wait := p.cfg.LockWait
	if wait == 0 {
		wait = DefaultLockWait
	}
	if !errors.Is(err, ErrNodeInUse) || wait < 0 {
		return b, start, err
	}
	p.out.logf(levelInfo, "Node %q is in use by another backup plugin (the previous lightningd still stopping?): waiting up to %s for it",
		lock.Node, wait)
	for deadline := time.Now().Add(wait); errors.Is(err, ErrNodeInUse) && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		b, start, err = p.cfg.Open(p.ctx, lock)
	}
	return b, start, err
}

// setFailed makes every later db_write refused with msg, and logs msg.
func (p *plugin) setFailed(msg string) {
	if p.failed == "" {
		p.failed = msg
	}
	p.out.log(levelError, msg)
}

// refuse answers a db_write with an error: lightningd exits without
// committing the transaction. The reason is logged and sticks.
func (p *plugin) refuse(id json.RawMessage, msg string) {
	p.setFailed(msg)
	p.out.fail(id, codeRefused, msg)
}

type dbWriteParams struct {
	DataVersion *uint32   `json:"data_version"`
	Writes      *[]string `json:"writes"`
}

// dbWrite is the hot path: check the version against the few words of state
// kept in memory, make the change durable with one append, answer continue.
func (p *plugin) dbWrite(req *request) {
	p.open()
	if p.failed != "" {
		p.out.fail(req.ID, codeRefused, p.failed)
		return
	}
	var params dbWriteParams
	if err := json.Unmarshal(req.Params, &params); err != nil || params.DataVersion == nil || params.Writes == nil {
		if err == nil {
			err = errors.New(`"data_version" or "writes" missing`)
		}
		p.refuse(req.ID, fmt.Sprintf("db_write with unreadable params (%v): refusing it, so lightningd stops without committing.", err))
		return
	}
	version, writes := *params.DataVersion, *params.Writes
	pragma := journal.Record{Statements: writes}.PragmaOnly()
	act, why := decide(p.ver, version, pragma)
	var err error
	switch act {
	case actRefuse:
		p.refuse(req.ID, refusalMessage(why, p.ver.held, version, p.dir, p.start.Store, p.start.Node))
		return
	case actReplace:
		err = p.backup.Replace(version, writes)
	default:
		err = p.backup.Append(version, writes)
	}
	if err != nil {
		p.refuse(req.ID, fmt.Sprintf("Could not write data_version %d to the backup: %v. Refusing this and every later write, so lightningd stops "+
			"without committing. Fix the cause (disk full? store unmounted? store server down?) and start lightningd again: the backup continues from what it holds.",
			version, err))
		return
	}
	switch {
	case act == actReplace:
		p.out.logf(levelInfo, "Last changes not applied, replacing data_version %d", version)
	case !p.matched:
		p.out.logf(levelInfo, "Versions match up: the backup holds data_version %d, lightningd continues with %d", p.ver.held, version)
	}
	p.matched = true
	p.ver = p.ver.after(act, version, pragma)
	p.out.sendContinue(req.ID)
	p.maybeCompact()
}
