package plugin

// getmanifest and the plugin's options.

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Option names, as in lightningd's configuration file.
const (
	optCompactChanges = "backup-compact-changes"
	optCompactBytes   = "backup-compact-journal-bytes"
	optCompactEvery   = "backup-compact-interval"
	optDestination    = "backup-destination"
	optFreeSpaceFloor = "backup-free-space-floor"
)

// Defaults of the automatic compaction options.
const (
	DefaultCompactChanges      = 10000
	DefaultCompactJournalBytes = 64 << 20
	DefaultCompactInterval     = 24 * time.Hour
)

// options are the plugin's settings from init.
type options struct {
	// compactChanges, compactBytes and compactEvery trigger an automatic
	// compaction (0 disables each).
	compactChanges int64
	compactBytes   int64
	compactEvery   time.Duration
	// freeFloor is the low-space warning's least threshold (bytes).
	freeFloor uint64
}

func defaultOptions() options {
	return options{compactChanges: DefaultCompactChanges, compactBytes: DefaultCompactJournalBytes, compactEvery: DefaultCompactInterval,
		freeFloor: DefaultFreeSpaceFloor}
}

type manifestOption struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Default     any    `json:"default,omitempty"`
	Description string `json:"description"`
}

type manifestMethod struct {
	Name        string `json:"name"`
	Usage       string `json:"usage"`
	Description string `json:"description"`
}

type manifestHook struct {
	Name string `json:"name"`
}

type manifestReply struct {
	Options       []manifestOption `json:"options"`
	RPCMethods    []manifestMethod `json:"rpcmethods"`
	Hooks         []manifestHook   `json:"hooks"`
	Subscriptions []string         `json:"subscriptions"`
	Dynamic       bool             `json:"dynamic"`
	NonNumericIDs bool             `json:"nonnumericids"`
}

// getManifest is the answer to getmanifest. It is a constant: lightningd may
// ask for it only to print --help, so nothing here touches a file.
func getManifest() manifestReply {
	return manifestReply{
		Options: []manifestOption{
			{Name: optCompactChanges, Type: "int", Default: DefaultCompactChanges,
				Description: "Compact the backup automatically (seal the journal into the store and write a new snapshot, in the background) " +
					"once this many changes were recorded since the newest snapshot; 0: never by count. Default 10000."},
			{Name: optCompactBytes, Type: "int", Default: DefaultCompactJournalBytes,
				Description: "Compact the backup automatically once this many journal bytes were written since the newest snapshot; " +
					"0: never by size. Default 67108864 (64 MiB)."},
			{Name: optCompactEvery, Type: "string", Default: "24h",
				Description: "Compact the backup automatically when the newest snapshot is older than this and changes were recorded since " +
					"(a duration such as 24h, 90m or 1h30m; 0 disables). Default 24h."},
			{Name: optFreeSpaceFloor, Type: "int", Default: DefaultFreeSpaceFloor,
				Description: "Log a warning when the free space of a file:// store's file system falls below a day of journal growth at " +
					"the current rate, or below this many bytes, whichever is larger (a full store stops lightningd). Default 1073741824 (1 GiB)."},
			{Name: optDestination, Type: "string",
				Description: "Deprecated and ignored: the backup goes to the store that backup.lock in the lightning-dir names " +
					"(written by backup-cli init). Accepted so that old configurations still start; remove it."},
		},
		RPCMethods: []manifestMethod{
			{Name: "backup-compact", Usage: "",
				Description: "Compact the backup in the background: seal the journal into the store and write a new snapshot, reusing every stored page. " +
					"Answers \"compaction started\", \"compaction still in progress\", or the backup's size and version count when there is nothing to compact."},
			{Name: "backup-status", Usage: "",
				Description: "Show the backup: node, store, newest data_version, newest restore point and its age, journal size, " +
					"compaction state and last result, stored and logical bytes, and for a file:// store its free space and the low-space warning's threshold and state."},
		},
		Hooks:         []manifestHook{{Name: "db_write"}},
		Subscriptions: []string{},
		Dynamic:       false,
		NonNumericIDs: true,
	}
}

// parseOptions reads init's options. A bad value is logged (warn) and the
// default used instead: refusing to start over a tuning option would take
// the node down, and the backup itself does not depend on these.
func parseOptions(raw map[string]json.RawMessage, warn func(string)) options {
	o := defaultOptions()
	o.compactChanges = intOption(raw, optCompactChanges, o.compactChanges, warn)
	o.compactBytes = intOption(raw, optCompactBytes, o.compactBytes, warn)
	o.freeFloor = uint64(intOption(raw, optFreeSpaceFloor, int64(o.freeFloor), warn))
	if v, ok := raw[optCompactEvery]; ok {
		s, err := stringValue(v)
		var d time.Duration
		if err == nil {
			d, err = parseInterval(s)
		}
		if err != nil {
			warn(fmt.Sprintf("Option %s=%s is not a duration (such as 24h, 90m, or 0 to disable): using the default %s",
				optCompactEvery, v, DefaultCompactInterval))
		} else {
			o.compactEvery = d
		}
	}
	if v, ok := raw[optDestination]; ok && string(v) != "null" {
		warn(fmt.Sprintf("The option --%s is deprecated and ignored (it is set to %s): the backup goes to the store that %s "+
			"in the lightning-dir names. Remove it from your configuration.", optDestination, v, LockName))
	}
	return o
}

// intOption reads an int option; lightningd sends numbers, older versions
// strings.
func intOption(raw map[string]json.RawMessage, name string, def int64, warn func(string)) int64 {
	v, ok := raw[name]
	if !ok {
		return def
	}
	var n int64
	err := json.Unmarshal(v, &n)
	if err != nil {
		var s string
		if err = json.Unmarshal(v, &s); err == nil {
			n, err = strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		}
	}
	if err != nil || n < 0 {
		warn(fmt.Sprintf("Option %s=%s is not a number of 0 or more: using the default %d", name, v, def))
		return def
	}
	return n
}

func stringValue(v json.RawMessage) (string, error) {
	var s string
	err := json.Unmarshal(v, &s)
	return s, err
}

// parseInterval reads a duration; "0" (or any zero duration) disables.
func parseInterval(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 {
		return 0, fmt.Errorf("negative interval %s", s)
	}
	return d, nil
}
