package nn

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// TestPanelSgemm: a product cut into panels equals the uncut product to rounding, and is bit-identical
// whatever GOMAXPROCS is, for every transpose combination and for shapes that split by rows, by
// columns, unevenly, and not at all.
func TestPanelSgemm(t *testing.T) {
	base := gonum.Implementation{}
	p := panelBLAS{base}
	r := rand.New(rand.NewPCG(3, 4))
	fill := func(n int) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(r.NormFloat64())
		}
		return s
	}
	for _, sh := range []struct{ m, n, k int }{{784, 256, 64}, {64, 256, 784}, {64, 784, 256}, {300, 70, 129}, {70, 301, 130}, {768, 512, 128}, {40, 40, 40}} {
		for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans} {
			for _, tB := range []blas.Transpose{blas.NoTrans, blas.Trans} {
				lda, ldb := sh.k, sh.n
				if tA == blas.Trans {
					lda = sh.m
				}
				if tB == blas.Trans {
					ldb = sh.k
				}
				a, b, c0 := fill(sh.m*sh.k), fill(sh.k*sh.n), fill(sh.m*sh.n)
				want := append([]float32(nil), c0...)
				base.Sgemm(tA, tB, sh.m, sh.n, sh.k, 0.5, a, lda, b, ldb, 0.25, want, sh.n)
				var first []float32
				for _, procs := range []int{1, 2, 3} {
					c := append([]float32(nil), c0...)
					old := runtime.GOMAXPROCS(procs)
					p.Sgemm(tA, tB, sh.m, sh.n, sh.k, 0.5, a, lda, b, ldb, 0.25, c, sh.n)
					runtime.GOMAXPROCS(old)
					for i := range c {
						if d := math.Abs(float64(c[i] - want[i])); d > 1e-4*(1+math.Abs(float64(want[i]))) {
							t.Fatalf("%v %c%c GOMAXPROCS %d: C[%d] = %v, want %v", sh, tA, tB, procs, i, c[i], want[i])
						}
					}
					if first == nil {
						first = c
					} else if !bitsEqual(first, c) {
						t.Fatalf("%v %c%c: GOMAXPROCS %d changes the product", sh, tA, tB, procs)
					}
				}
			}
		}
	}
}
