package plugin

import "fmt"

// versions is what the version rules remember between db_writes: a few
// words, so that checking a write never reads the history.
type versions struct {
	// held is the newest data_version the backup holds.
	held uint32
	// replaceable is true while the change recorded for held is the
	// newest non-PRAGMA record and is still in the journal.
	replaceable bool
	// sawChange is set once this process has seen a non-PRAGMA db_write:
	// lightningd only re-sends a version after a restart, so a rewind can
	// only be the first change a plugin process sees.
	sawChange bool
}

// action is what to do with one db_write.
type action int

const (
	actAppend  action = iota // record it after what the backup holds
	actReplace               // one-step rewind: replace the uncommitted change
	actRefuse                // stop lightningd: the backup and its database disagree
)

// decide applies the db_write version rules. lightningd's data_version goes
// up by exactly one per transaction and wraps at 2^32; held is the newest
// version the backup holds.
//
//   - held+1: the next change, appended;
//   - held, PRAGMA-only: lightningd runs some PRAGMAs outside a
//     transaction without bumping the version; appended, for replay;
//   - held, a change, when the backup's newest change is held and this is
//     the first change since the plugin started: lightningd died between
//     the hook and the commit, the recorded change never happened, and this
//     one replaces it;
//   - anything else (older, repeated, or a gap) means the database and the
//     backup disagree: refused, with what happened and what to do.
func decide(v versions, version uint32, pragmaOnly bool) (action, refusal) {
	switch diff := version - v.held; {
	case diff == 1:
		return actAppend, 0
	case diff == 0 && pragmaOnly:
		return actAppend, 0
	case diff == 0 && v.replaceable && !v.sawChange:
		return actReplace, 0
	case diff == 0 && v.sawChange:
		return actRefuse, refuseRepeat
	case diff == 0:
		return actRefuse, refuseBehind
	case diff < 1<<31:
		return actRefuse, refuseGap
	default:
		return actRefuse, refuseBehind
	}
}

// after returns the state once a write decided as act has been made durable.
func (v versions) after(act action, version uint32, pragmaOnly bool) versions {
	if !pragmaOnly {
		v.sawChange = true
		v.replaceable = true
	} else if version != v.held {
		v.replaceable = false // a new version made of PRAGMAs only
	}
	v.held = version
	return v
}

// refusal says why decide refused a write.
type refusal int

const (
	refuseGap    refusal = iota + 1 // lightningd is ahead: writes were lost
	refuseBehind                    // lightningd is behind the backup: it lost state
	refuseRepeat                    // a version repeated within one run
)

// refusalMessage explains a refused write to the operator: what happened and
// what to do. dir is the lightning directory, url and node the backup's.
func refusalMessage(why refusal, held, got uint32, dir, url, node string) string {
	reinit := fmt.Sprintf("re-initialise the backup from the current database: stop lightningd, move %s/backup.lock away, "+
		"and run `backup-cli init --lightning-dir %s --node NEW-NAME %s` (a new node name; the old history of %q stays restorable)",
		dir, dir, url, node)
	restore := fmt.Sprintf("restore the newest state with `backup-cli restore --node %s %s DEST` and put it in place of %s/lightningd.sqlite3",
		node, url, dir)
	switch why {
	case refuseGap:
		return fmt.Sprintf("Backup is out of date: it holds data_version %d, lightningd sent %d: %d writes were lost "+
			"(did lightningd run without this plugin, or on another backup?). Refusing the write, so lightningd stops without committing it. "+
			"To continue, %s; if this database is not the node's newest, instead %s.",
			held, got, got-held-1, reinit, restore)
	case refuseRepeat:
		return fmt.Sprintf("lightningd lost some state: it sent data_version %d twice without restarting (the backup holds data_version %d). "+
			"Refusing the write, so lightningd stops without committing it. Inspect the node before anything else; then %s, or %s.",
			got, held, restore, reinit)
	default:
		return fmt.Sprintf("lightningd lost some state: the backup holds data_version %d, but lightningd sent %d: its database is older than the backup "+
			"(restored from an old copy?). Refusing the write, so lightningd stops without committing it: running on an old state can lose channel funds. "+
			"To continue, %s; only if this database is the one to keep, %s.",
			held, got, restore, reinit)
	}
}
