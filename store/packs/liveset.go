package packs

import (
	"slices"

	"github.com/clnbackup/backup/chunker"
)

// both kept: the set can only err towards keeping garbage, never towards
// deleting a live chunk.
type liveSet struct {
	keys []uint64
	// clean is how many of keys are sorted and distinct; the rest were
	// added since.
	clean int
	// find locates keys once they are all clean.
	find keyIndex
}

func (l *liveSet) add(id chunker.ID) { l.addKey(idKey(id)) }

func (l *liveSet) addKey(k uint64) {
	l.keys = append(l.keys, k)
	// Manifests name the same pages over and over: fold the repeats in
	// whenever the additions outgrow the set.
	if len(l.keys) >= 2*l.clean+1<<16 {
		l.compact()
	}
}

func (l *liveSet) compact() {
	if l.clean == len(l.keys) && l.find.keys != nil {
		return
	}
	slices.Sort(l.keys)
	l.keys = slices.Compact(l.keys)
	l.clean = len(l.keys)
	l.find = newKeyIndex(l.keys)
}

func (l *liveSet) has(id chunker.ID) bool {
	l.compact()
	_, ok := l.find.search(idKey(id))
	return ok
}

func (l *liveSet) len() int {
	l.compact()
	return len(l.keys)
}
