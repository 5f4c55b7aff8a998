package par

import (
	"runtime"
	"slices"
	"sync"
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
