package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestString: the line names the module and version, shows the revision
// (shortened), its time and a modified checkout, and a build with no VCS
// stamp still says which module and version it is.
func TestString(t *testing.T) {
	t.Parallel()
	rev := "5075143a1b2c3d4e5f60718293a4b5c6d7e8f901"
	for _, tc := range []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"devel with vcs", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/clnbackup/backup", Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.time", Value: "2026-12-02T15:45:07Z"}, {Key: "vcs.modified", Value: "true"}}},
			"github.com/clnbackup/backup (devel) (revision 5075143a1b2c, 2026-12-02T15:45:07Z, modified; go1.26.8)"},
		{"release clean", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/clnbackup/backup", Version: "v1.2.0"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: "false"}}},
			"github.com/clnbackup/backup v1.2.0 (revision 5075143a1b2c; go1.26.8)"},
		{"no vcs, no version", debug.BuildInfo{Main: debug.Module{Path: "github.com/clnbackup/backup"}},
			"github.com/clnbackup/backup (devel)"},
		{"test binary", debug.BuildInfo{Path: "github.com/clnbackup/backup/internal/version.test", GoVersion: "go1.26.8"},
			"github.com/clnbackup/backup/internal/version.test (devel) (go1.26.8)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := fromBuildInfo(&tc.bi).String(); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
	if got := String(); !strings.Contains(got, "github.com/clnbackup/backup") {
		t.Errorf("String() of this test binary = %q, want the module path in it", got)
	}
}
