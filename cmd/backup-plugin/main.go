// Command backup-plugin is the Core Lightning plugin that backs up a node's
// database continuously: every db_write change is made durable in the node's
// journal in the backup store before lightningd commits it.
//
// Install:
//
//  1. Build it (`make build` puts bin/backup-plugin and bin/backup-cli in
//     bin/) and copy both somewhere stable, e.g. /usr/local/bin.
//  2. With lightningd stopped, create the store and point the node at it:
//     `backup-cli init --lightning-dir ~/.lightning/bitcoin file:///mnt/backup/store`
//     (add `--node NAME` when several nodes share a store). This writes
//     backup.lock in the lightning directory and stores a first snapshot of
//     lightningd.sqlite3.
//  3. Add to lightningd's config: `important-plugin=/usr/local/bin/backup-plugin`
//     ("important": if the plugin dies, lightningd stops rather than run
//     without a backup). Options: `backup-compact-changes`,
//     `backup-compact-journal-bytes`, `backup-compact-interval` (see
//     `lightningd --help`).
//
// lightningd starts the plugin in its network directory and speaks JSON-RPC
// over its stdin and stdout; the plugin reads backup.lock there. It exits 0
// when lightningd closes its stdin. It must not be run by hand, except as
// `backup-plugin --version`, which prints which build it is and exits
// (lightningd never passes it; the plugin also logs its version at start).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/clnbackup/backup/internal/memlimit"

	"github.com/clnbackup/backup/internal/version"
	"github.com/clnbackup/backup/plugin"
	"golang.org/x/term"
)

// memoryLimit is the plugin's soft memory limit (GOMEMLIMIT overrides it):
// it keeps the plugin small while a compaction makes garbage, at no cost
// in speed (docs/benchmark.md, "backup-plugin memory limit").
const memoryLimit = 48 << 20

func main() {
	if len(os.Args) == 2 && os.Args[1] == "--version" {
		fmt.Println("backup-plugin " + version.String())
		return
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprintln(os.Stderr, "backup-plugin is a Core Lightning plugin: lightningd starts it. "+
			"Add `important-plugin="+os.Args[0]+"` to lightningd's config (after `backup-cli init --lightning-dir DIR URL`).")
		os.Exit(2)
	}
	// lightningd decides when the plugin ends, by closing its stdin: a
	// Ctrl-C meant for a lightningd run in a terminal must not stop the
	// plugin while lightningd still writes its database. A write to a
	// lightningd that is gone must fail (and end Run) rather than kill the
	// process with SIGPIPE before the journal is closed.
	signal.Ignore(os.Interrupt, syscall.SIGPIPE)
	if os.Getenv("GOMEMLIMIT") == "" {
		// Raised while an operation holds state that grows with
		// the database (internal/memlimit).
		memlimit.SetBase(memoryLimit)
	}
	if os.Getenv("GOMAXPROCS") == "" {
		// Two Ps beyond the CPUs: while a compaction's goroutines hold
		// every P, a db_write hook's goroutine still finds one at once
		// and competes for a CPU with the kernel's scheduler, where the
		// compaction's thread is lowered, instead of waiting for Go's
		// 10 ms preemption.
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 2)
	}
	os.Exit(plugin.Run(os.Stdin, os.Stdout, plugin.Config{}))
}
