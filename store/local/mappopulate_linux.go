package local

import "syscall"

// mapPopulate maps every page at once instead of faulting each in.
const mapPopulate = syscall.MAP_POPULATE
