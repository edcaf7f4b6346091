package history

import "os"

// SetWindows sets the windows of pages that snapshots and restores look up
// at once, and how many new pages have their bases read together, for a
// test (so that small databases cross window boundaries); the returned
// function restores the defaults.
func SetWindows(snapshot, restore, batch int) func() {
	s, r, b := snapshotWindow, restoreWindow, deltaBatch
	snapshotWindow, restoreWindow, deltaBatch = snapshot, restore, batch
	return func() { snapshotWindow, restoreWindow, deltaBatch = s, r, b }
}

// SetCopyWindows sets how many chunks a copy looks up at once (as stored)
// and holds at once (re-encoding), for a test; the returned function
// restores the defaults.
func SetCopyWindows(stored, reencode int) func() {
	s, r := copyWindow, reencodeWindow
	copyWindow, reencodeWindow = stored, reencode
	return func() { copyWindow, reencodeWindow = s, r }
}

// SetCopyStep makes copies call step between their steps (a test cancels
// its context there); the returned function removes it.
func SetCopyStep(step func()) func() {
	copyStep = step
	return func() { copyStep = func() {} }
}

// SetSyncBehind makes restores sync their file behind the writes every
// every bytes with sync; the returned function restores the defaults.
func SetSyncBehind(every int64, sync func(*os.File) error) func() {
	e, s := syncEvery, syncFile
	syncEvery, syncFile = every, sync
	return func() { syncEvery, syncFile = e, s }
}
