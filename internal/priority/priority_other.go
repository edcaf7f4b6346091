//go:build !linux

package priority

// lower does nothing where thread priorities are not Linux's.
func lower() string { return "priority unchanged on this system" }
