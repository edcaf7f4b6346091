//go:build unix && !linux

package local

const mapPopulate = 0
