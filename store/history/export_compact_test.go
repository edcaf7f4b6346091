package history

// SetTrackPages switches off (false) hashing only the pages a compaction's
// replay wrote, for a test comparing with full rehashing; the returned
// function restores the default.
func SetTrackPages(on bool) func() {
	old := trackPages
	trackPages = on
	return func() { trackPages = old }
}

// SetCacheFullCheckEvery sets how many compactions in a row may trust the
// cache's proof, for a test; the returned function restores the default.
func SetCacheFullCheckEvery(n int) func() {
	old := cacheFullCheckEvery
	cacheFullCheckEvery = n
	return func() { cacheFullCheckEvery = old }
}
