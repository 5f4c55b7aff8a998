package par

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

func TestRunsCoverEachIndexOnceWithFixedBounds(t *testing.T) {
	for _, tc := range []struct{ n, per int }{{0, 4}, {1, 4}, {10, 3}, {12, 3}, {1000, 7}, {5, 0}} {
		var want [][2]int
		for _, procs := range []int{1, 2, 5} {
			old := runtime.GOMAXPROCS(procs)
			var mu sync.Mutex
			seen := make([]int, tc.n)
			var got [][2]int
			Runs(tc.n, tc.per, func(lo, hi int) {
				mu.Lock()
				defer mu.Unlock()
				got = append(got, [2]int{lo, hi})
				for i := lo; i < hi; i++ {
					seen[i]++
				}
			})
			runtime.GOMAXPROCS(old)
			for i, c := range seen {
				if c != 1 {
					t.Fatalf("n=%d per=%d procs=%d: index %d visited %d times", tc.n, tc.per, procs, i, c)
				}
			}
			slices.SortFunc(got, func(a, b [2]int) int { return a[0] - b[0] })
			if procs == 1 {
				continue // one run on the caller's goroutine
			}
			if want == nil {
				want = got
			} else if !slices.Equal(want, got) {
				t.Fatalf("n=%d per=%d: runs %v with %d procs, %v before", tc.n, tc.per, got, procs, want)
			}
		}
	}
}

func TestEach(t *testing.T) {
	for _, p := range []int{0, 1, 3} {
		var running, most atomic.Int64
		seen := make([]bool, 10)
		err := Each(10, p, func(i int) error {
			r := running.Add(1)
			for m := most.Load(); r > m && !most.CompareAndSwap(m, r); m = most.Load() {
			}
			defer running.Add(-1)
			seen[i] = true
			if i == 4 || i == 7 {
				return fmt.Errorf("task %d", i)
			}
			return nil
		})
		if err == nil || err.Error() != "task 4" {
			t.Errorf("p=%d: error %v, want the lowest failing task's", p, err)
		}
		if most.Load() > int64(max(p, 1)) {
			t.Errorf("p=%d: %d tasks ran at once", p, most.Load())
		}
		if p > 1 {
			for i, ok := range seen {
				if !ok {
					t.Errorf("p=%d: task %d did not run", p, i)
				}
			}
		}
	}
}

// Runs called from inside a run (a kernel's loop calling another), and from many goroutines at
// once, covers every index once each time and returns: the helpers never wait on one another.
func TestRunsNestedAndConcurrent(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for rep := 0; rep < 20; rep++ {
				seen := make([]atomic.Int32, 64*32)
				Runs(64, 3, func(lo, hi int) {
					for i := lo; i < hi; i++ {
						Runs(32, 5, func(a, b int) {
							for j := a; j < b; j++ {
								seen[i*32+j].Add(1)
							}
						})
					}
				})
				for k := range seen {
					if c := seen[k].Load(); c != 1 {
						t.Errorf("goroutine %d, repetition %d: index %d visited %d times", g, rep, k, c)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}
