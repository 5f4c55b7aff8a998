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

// runsOn is Runs on the calling goroutine and workers−1 helpers. Helpers are goroutines kept
// for the process's life, waiting for work: a training step calls Runs hundreds of times, and
// a goroutine started for each would allocate for each.
func runsOn(workers, runs, n, per int, f func(lo, hi int)) {
	j := jobs.Get().(*job)
	j.f, j.runs, j.n, j.per = f, runs, n, per
	j.next.Store(0)
	j.wg.Add(workers - 1)
	for range workers - 1 {
		select {
		case idle <- j: // a helper waiting for work takes it
		default:
			go helper(j) // none is waiting: one more helper, kept after this job
		}
	}
	j.work()
	j.wg.Wait()
	j.f = nil
	jobs.Put(j)
}

// A job is one call of Runs, shared by the goroutines running it.
type job struct {
	f            func(lo, hi int)
	runs, n, per int
	next         atomic.Int64 // the next run to take
	wg           sync.WaitGroup
}

// work runs the job's runs not yet taken, one after another, until none is left.
func (j *job) work() {
	for {
		r := int(j.next.Add(1)) - 1
		if r >= j.runs {
			return
		}
		j.f(r*j.per, min((r+1)*j.per, j.n))
	}
}

var (
	jobs = sync.Pool{New: func() any { return new(job) }}
	// idle hands a job to a helper waiting for one. The helpers are as many as the most that
	// Runs calls have ever wanted at once (GOMAXPROCS−1 for one caller).
	idle = make(chan *job)
)

// helper works on j, then on every job handed to it.
func helper(j *job) {
	for {
		j.work()
		j.wg.Done() // the job's last use here: its caller may reuse it from now on
		j = <-idle
	}
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
