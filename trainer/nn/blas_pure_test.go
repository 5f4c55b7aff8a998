//go:build !openblas

package nn

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/cohortlab/cohort/trainer/nn/internal/gemm"
	"github.com/viterin/vek/vek32"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// TestVekRowsIndependentOfSplit: on CPUs without AVX2 and FMA the products run on vek, which computes each row of a product alone, so a product split
// among any number of goroutines (vek uses runtime.NumCPU) has the bits of the rows computed one by
// one.
func TestVekRowsIndependentOfSplit(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, sh := range []struct{ m, n, k int }{{64, 256, 784}, {784, 256, 64}, {37, 129, 70}, {768, 384, 128}} {
		a, b := make([]float32, sh.m*sh.k), make([]float32, sh.k*sh.n)
		for i := range a {
			a[i] = float32(r.NormFloat64())
		}
		for i := range b {
			b[i] = float32(r.NormFloat64())
		}
		full := make([]float32, sh.m*sh.n)
		vek32.MatMul_Into(full, a, b, sh.k)
		row := make([]float32, sh.n)
		for i := 0; i < sh.m; i++ {
			vek32.MatMul_Into(row, a[i*sh.k:(i+1)*sh.k], b, sh.k)
			if !bitsEqual(row, full[i*sh.n:(i+1)*sh.n]) {
				t.Fatalf("%v: row %d alone differs from the same row of the whole product", sh, i)
			}
		}
	}
}

// TestPureSgemm: every transpose combination agrees with gonum's Sgemm to rounding, on gemm (or
// vek without AVX2 and FMA) and on the vek fallback itself; products neither takes (α ≠ 1, β ≠ 0)
// go to gonum unchanged; and plain products have the bits of gemm's.
func TestPureSgemm(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	v, ref := pureBLAS{gonum.Implementation{}}, gonum.Implementation{}
	m, n, k := 33, 47, 29
	for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans} {
		for _, tB := range []blas.Transpose{blas.NoTrans, blas.Trans} {
			for _, ab := range [][2]float32{{1, 0}, {0.5, 0.25}} {
				lda, ldb := k, n
				if tA == blas.Trans {
					lda = m
				}
				if tB == blas.Trans {
					ldb = k
				}
				a, b, c := make([]float32, m*k), make([]float32, k*n), make([]float32, m*n)
				for i := range a {
					a[i] = float32(r.NormFloat64())
				}
				for i := range b {
					b[i] = float32(r.NormFloat64())
				}
				for i := range c {
					c[i] = float32(r.NormFloat64())
				}
				want := append([]float32(nil), c...)
				ref.Sgemm(tA, tB, m, n, k, ab[0], a, lda, b, ldb, ab[1], want, n)
				fallback := append([]float32(nil), c...)
				v.Sgemm(tA, tB, m, n, k, ab[0], a, lda, b, ldb, ab[1], c, n)
				if ab == [2]float32{1, 0} {
					v.vekSgemm(tA, tB, m, n, k, a, lda, b, ldb, fallback)
					if gemm.Available() {
						g := make([]float32, m*n)
						if err := gemm.Sgemm(tA == blas.Trans, tB == blas.Trans, m, n, k, a, lda, b, ldb, g, n); err != nil || !bitsEqual(g, c) {
							t.Fatalf("%c%c: not gemm's product (err %v)", tA, tB, err)
						}
					}
				} else {
					v.Sgemm(tA, tB, m, n, k, ab[0], a, lda, b, ldb, ab[1], fallback, n)
				}
				for i := range c {
					for _, got := range []float32{c[i], fallback[i]} {
						if math.Abs(float64(got-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
							t.Fatalf("%c%c α=%v β=%v: C[%d] = %v, want %v", tA, tB, ab[0], ab[1], i, got, want[i])
						}
					}
				}
			}
		}
	}
}

// TestVekMatMulMatchesVek: vekMatMul's row blocks give the bits of vek's own whole product, on one
// goroutine and on several, for products below vek's threshold, above it, and above panelMinFlops;
// on one goroutine it allocates nothing.
func TestVekMatMulMatchesVek(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, sh := range []struct{ m, n, k int }{{3, 500, 300}, {20, 30, 40}, {64, 64, 32}, {64, 256, 784}, {768, 384, 128}, {101, 7, 9}} {
		a, b := make([]float32, sh.m*sh.k), make([]float32, sh.k*sh.n)
		for i := range a {
			a[i] = float32(r.NormFloat64())
		}
		for i := range b {
			b[i] = float32(r.NormFloat64())
		}
		want := make([]float32, sh.m*sh.n)
		vek32.MatMul_Into(want, a, b, sh.k)
		for _, procs := range []int{1, 2} {
			prev := runtime.GOMAXPROCS(procs)
			got := make([]float32, sh.m*sh.n)
			vekMatMul(got, a, b, sh.m, sh.n, sh.k)
			allocs := testing.AllocsPerRun(2, func() { vekMatMul(got, a, b, sh.m, sh.n, sh.k) })
			runtime.GOMAXPROCS(prev)
			if !bitsEqual(got, want) {
				t.Fatalf("%v at GOMAXPROCS %d: row blocks differ from vek's whole product", sh, procs)
			}
			if procs == 1 && allocs != 0 {
				t.Errorf("%v at GOMAXPROCS 1: %v allocations per product, want 0", sh, allocs)
			}
		}
	}
}
