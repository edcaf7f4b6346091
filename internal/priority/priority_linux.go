package priority

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// ioprioWhoProcess: a thread id is a "process" to ioprio_set(2).
const ioprioWhoProcess = 1

// lower lowers the calling thread's CPU and I/O priority.
func lower() string {
	tid := unix.Gettid()
	var done []string
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, Nice); err != nil {
		done = append(done, fmt.Sprintf("nice %d failed: %v", Nice, err))
	} else {
		done = append(done, fmt.Sprintf("nice %d", Nice))
	}
	_, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, uintptr(tid), IOClassIdle<<IOClassShift)
	if errno != 0 {
		done = append(done, fmt.Sprintf("idle I/O class failed: %v", errno))
	} else {
		done = append(done, "idle I/O class")
	}
	return strings.Join(done, ", ")
}
