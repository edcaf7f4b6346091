package history

// SetWindows sets the windows of pages that snapshots and restores look up
// at once, and how many new pages have their bases read together, for a
// test (so that small databases cross window boundaries); the returned
// function restores the defaults.
func SetWindows(snapshot, restore, batch int) func() {
	s, r, b := snapshotWindow, restoreWindow, deltaBatch
	snapshotWindow, restoreWindow, deltaBatch = snapshot, restore, batch
	return func() { snapshotWindow, restoreWindow, deltaBatch = s, r, b }
}
