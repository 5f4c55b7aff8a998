package main

import "syscall"

// peakRSS is the process's peak resident memory in bytes (getrusage's maxrss, which Linux gives
// in KiB); 0 if it cannot be read.
func peakRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024
}
