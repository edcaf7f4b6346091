package plugin

import (
	"strings"
	"testing"

	"github.com/clnbackup/backup/store/history"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	const max = ^uint32(0)
	for _, tc := range []struct {
		name    string
		v       versions
		version uint32
		pragma  bool
		act     action
		why     refusal
	}{
		{"next", versions{held: 7}, 8, false, actAppend, 0},
		{"next PRAGMA", versions{held: 7}, 8, true, actAppend, 0},
		{"wrap", versions{held: max}, 0, false, actAppend, 0},
		{"PRAGMA repeats the version", versions{held: 7, replaceable: true, sawChange: true}, 7, true, actAppend, 0},
		{"rewind after restart", versions{held: 7, replaceable: true}, 7, false, actReplace, 0},
		{"rewind after restart, wrapped", versions{held: max, replaceable: true}, max, false, actReplace, 0},
		{"repeat within one run", versions{held: 7, replaceable: true, sawChange: true}, 7, false, actRefuse, refuseRepeat},
		{"repeat of a snapshot's version", versions{held: 7}, 7, false, actRefuse, refuseBehind},
		{"gap", versions{held: 7}, 9, false, actRefuse, refuseGap},
		{"gap across the wrap", versions{held: max}, 1, false, actRefuse, refuseGap},
		{"regress", versions{held: 7, replaceable: true}, 6, false, actRefuse, refuseBehind},
		{"regress across the wrap", versions{held: 0}, max, false, actRefuse, refuseBehind},
		{"far behind", versions{held: 1 << 31}, 3, false, actRefuse, refuseBehind},
	} {
		act, why := decide(tc.v, tc.version, tc.pragma)
		if act != tc.act || why != tc.why {
			t.Errorf("%s: decide(%+v, %d, pragma %v) = %d, %d; want %d, %d", tc.name, tc.v, tc.version, tc.pragma, act, why, tc.act, tc.why)
		}
	}
}

func TestVersionsAfter(t *testing.T) {
	t.Parallel()
	v := versions{held: 7}
	v = v.after(actAppend, 8, false)
	if v != (versions{held: 8, replaceable: true, sawChange: true}) {
		t.Fatalf("after a change: %+v", v)
	}
	v = v.after(actAppend, 8, true)
	if v != (versions{held: 8, replaceable: true, sawChange: true}) {
		t.Fatalf("after a PRAGMA with the same version: %+v", v)
	}
	v = v.after(actAppend, 9, true)
	if v != (versions{held: 9, replaceable: false, sawChange: true}) {
		t.Fatalf("after a PRAGMA with a new version: %+v", v)
	}
	v = versions{held: 9, replaceable: true}.after(actReplace, 9, false)
	if v != (versions{held: 9, replaceable: true, sawChange: true}) {
		t.Fatalf("after a replace: %+v", v)
	}
}

func TestRefusalMessages(t *testing.T) {
	t.Parallel()
	for why, want := range map[refusal][]string{
		refuseGap:    {"Backup is out of date: it holds data_version 5, lightningd sent 9: 3 writes were lost", "backup-cli init --lightning-dir /ln --node NEW-NAME file:///s"},
		refuseBehind: {"lightningd lost some state: the backup holds data_version 9, but lightningd sent 5", "backup-cli restore --node n file:///s DEST"},
		refuseRepeat: {"lightningd lost some state: it sent data_version 9 twice", "backup-cli restore"},
	} {
		held, got := uint32(5), uint32(9)
		if why != refuseGap {
			held, got = 9, 5
			if why == refuseRepeat {
				got = 9
			}
		}
		msg := refusalMessage(why, held, got, "/ln", "file:///s", "n")
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("refusal %d: %q lacks %q", why, msg, w)
			}
		}
	}
}

// TestDefaultNode: a backup.lock without a node means the store's default.
func TestDefaultNode(t *testing.T) {
	t.Parallel()
	if DefaultNode != history.DefaultNode {
		t.Fatalf("DefaultNode %q, history.DefaultNode %q", DefaultNode, history.DefaultNode)
	}
}
