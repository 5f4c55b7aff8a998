// Package par runs loops over index ranges on every core a process has, cut into runs whose
// bounds depend only on the loop's length, so that a loop whose iterations are independent gives
// the same results on any number of cores.
package par

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Runs calls f on the runs [lo, hi) of [0, n) of length per (the last may be shorter), on up to
// GOMAXPROCS goroutines, and returns when all have returned. The runs depend only on n and per; f
// must only write what its own run owns. With one run, or GOMAXPROCS 1, f(0, n) runs on the
// calling goroutine.
func Runs(n, per int, f func(lo, hi int)) {
	if n <= 0 {
		return
	}
	per = max(1, per)
	runs := (n + per - 1) / per
	workers := min(runtime.GOMAXPROCS(0), runs)
	if workers <= 1 {
		f(0, n)
		return
	}
	runsOn(workers, runs, n, per, f)
}

// runsOn is Runs on workers goroutines (a function of its own, so that the one-goroutine path
// allocates nothing for them).
func runsOn(workers, runs, n, per int, f func(lo, hi int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				r := int(next.Add(1)) - 1
				if r >= runs {
					return
				}
				f(r*per, min((r+1)*per, n))
			}
		})
	}
	wg.Wait()
}

// Each calls f(0..n-1) with at most p calls running at once (one after another when p ≤ 1) and
// returns the error of the lowest i that failed. Unlike Runs, the iterations are whole tasks (a
// worker's inner steps), not cuts of one loop.
func Each(n, p int, f func(i int) error) error {
	if p <= 1 || n == 1 {
		for i := 0; i < n; i++ {
			if err := f(i); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, n)
	sem := make(chan struct{}, p)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f(i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
