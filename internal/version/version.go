// Package version says which build of this module is running, from what the
// Go toolchain stamped into the binary (runtime/debug.ReadBuildInfo): the
// module version and the VCS revision, commit time and modified flag. Both
// binaries print it the same way (backup-cli --version, backup-plugin
// --version, the plugin's start-up log line), so that an operator reporting
// a problem, or checking that a node runs the build they installed, reads
// one format everywhere.
package version

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Info is the build's identity. Fields the toolchain did not stamp (a
// binary built outside a VCS checkout, or with -buildvcs=false) are empty.
type Info struct {
	// Module is the main module's path (github.com/clnbackup/backup).
	Module string `json:"module"`
	// Version is the module version: a release tag, a pseudo-version, or
	// "(devel)" for a build of a checkout the toolchain could not version.
	Version string `json:"version"`
	// Revision is the VCS commit the binary was built from.
	Revision string `json:"revision,omitempty"`
	// Time is the commit time of Revision (RFC 3339).
	Time string `json:"time,omitempty"`
	// Modified is true when the checkout had uncommitted changes: the
	// binary is not exactly Revision.
	Modified bool `json:"modified,omitempty"`
	// Go is the toolchain that built the binary.
	Go string `json:"go"`
}

// Get reads the running binary's build information. A binary without any
// (impossible for a module build, but possible for some test binaries)
// gets Module and Version "unknown".
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{Module: "unknown", Version: "unknown"}
	}
	return fromBuildInfo(bi)
}

// fromBuildInfo is Get for given build information (tests feed it).
func fromBuildInfo(bi *debug.BuildInfo) Info {
	i := Info{Module: bi.Main.Path, Version: bi.Main.Version, Go: bi.GoVersion}
	if i.Module == "" {
		i.Module = bi.Path // test binaries: the package path, under the module
	}
	if i.Module == "" {
		i.Module = "unknown"
	}
	if i.Version == "" {
		i.Version = "(devel)"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// String is the one-line form both binaries print, e.g.
// "github.com/clnbackup/backup v1.2.0 (revision 5075143a1b2c, 2026-12-02T15:45:07Z, modified; go1.26.8)".
// A "(devel)" or pseudo-version build is told apart by its revision.
func (i Info) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", i.Module, i.Version)
	var details []string
	if i.Revision != "" {
		rev := i.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		details = append(details, "revision "+rev)
	}
	if i.Time != "" {
		details = append(details, i.Time)
	}
	if i.Modified {
		details = append(details, "modified")
	}
	d := strings.Join(details, ", ")
	if i.Go != "" {
		if d != "" {
			d += "; "
		}
		d += i.Go
	}
	if d != "" {
		fmt.Fprintf(&b, " (%s)", d)
	}
	return b.String()
}

// String is Get().String(): what --version prints.
func String() string { return Get().String() }
