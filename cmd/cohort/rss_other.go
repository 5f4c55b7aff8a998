//go:build !linux

package main

// peakRSS is 0 where the peak resident memory is not read (Linux only).
func peakRSS() int64 { return 0 }
