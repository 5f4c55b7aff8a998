//go:build unix

package compress

import (
	"syscall"
	"time"
)

// cpuTime returns the process's user+system CPU time, for throughput per
// core that does not depend on how loaded the machine is.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
