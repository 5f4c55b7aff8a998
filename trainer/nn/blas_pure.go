//go:build !openblas

package nn

import (
	"runtime"
	"sync"

	"github.com/cohortlab/cohort/internal/par"
	"github.com/cohortlab/cohort/trainer/nn/internal/gemm"
	"github.com/viterin/vek/vek32"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	G "gorgonia.org/gorgonia"
)

// BLAS names the BLAS implementation this binary uses: package gemm's packed AVX2 and FMA matrix
// product (gonum's pure-Go BLAS for everything else) unless built with -tags openblas
// ("openblas-panels"). On a CPU without AVX2 and FMA the products run on vek instead
// ("vek+gonum"); so in this build BLAS is a variable, set from the CPU's features at start-up.
// Replicas whose BLAS differ do not compute bit-identical gradients.
var BLAS = pureBLASName()

func pureBLASName() string {
	if gemm.Available() {
		return "gemm-avx2+gonum"
	}
	return "vek+gonum"
}

func init() { G.Use(pureBLAS{gonum.Implementation{}}) }

// pureBLAS runs the plain single-precision products gorgonia and the kernels ask for (C = op(A)·op(B),
// α = 1, β = 0) on package gemm, a packed, register-tiled product in AVX2 and FMA assembly that
// reads transposed operands as they are stored; anything else goes to the wrapped BLAS. Each
// element of gemm's product is summed in an order fixed by the product's shape, so the result does
// not depend on GOMAXPROCS or on how gemm splits C among goroutines.
//
// On a CPU without AVX2 and FMA (or built with the purego tag) the plain products run on
// github.com/viterin/vek instead, with transposed operands first copied out row-major. vek's kernel
// computes each row of C alone, so the result does not depend on how the rows are split
// (TestVekRowsIndependentOfSplit). vek itself splits a product of vekSerialMACs multiply-adds or
// more among runtime.NumCPU new goroutines, whatever GOMAXPROCS is, and allocates for them on every
// call; vekMatMul instead hands vek row blocks below that size, run on the calling goroutine or, for
// products of panelMinFlops and more, concurrently by par.Runs. gemm's fused multiply-adds, vek's
// AVX2 kernel and vek's Go loops (on CPUs without AVX2) round differently: bit-identical results
// need the same CPU features as well as the same build.
type pureBLAS struct{ G.BLAS }

// vekSerialMACs is the product size m·n·k from which vek32.MatMul_Into starts goroutines (unless
// the product has fewer than 4 rows).
const vekSerialMACs = 100_000

// vekMatMul computes c [m, n] = a [m, k] · b [k, n] with vek, in row blocks vek runs serially.
func vekMatMul(c, a, b []float32, m, n, k int) {
	if m < 4 || m*n*k < vekSerialMACs {
		vek32.MatMul_Into(c[:m*n], a[:m*k], b[:k*n], k)
		return
	}
	rows := max(3, (vekSerialMACs-1)/(n*k)) // fewer than 4 rows, or below vek's threshold
	if 2*m*n*k < panelMinFlops || runtime.GOMAXPROCS(0) == 1 {
		vekBlocks(c, a, b, n, k, rows, 0, m)
		return
	}
	// The closure is made here only: made above, it would be allocated on every call.
	par.Runs(m, rows, func(lo, hi int) { vekBlocks(c, a, b, n, k, rows, lo, hi) })
}

// vekBlocks computes rows [lo, hi) of vekMatMul's product, rows at a time.
func vekBlocks(c, a, b []float32, n, k, rows, lo, hi int) {
	for r := lo; r < hi; r += rows {
		e := min(r+rows, hi)
		vek32.MatMul_Into(c[r*n:e*n], a[r*k:e*k], b[:k*n], k)
	}
}

// scratch holds transposed copies of operands.
var scratch = sync.Pool{New: func() any { return new([]float32) }}

func transposeInto(buf *[]float32, src []float32, rows, cols, ld int) []float32 {
	if cap(*buf) < rows*cols {
		*buf = make([]float32, rows*cols)
	}
	t := (*buf)[:rows*cols]
	// src holds a [cols, rows] matrix (leading dimension ld); t is its transpose [rows, cols].
	for i := 0; i < cols; i++ {
		row := src[i*ld : i*ld+rows]
		for j, v := range row {
			t[j*cols+i] = v
		}
	}
	return t
}

// Sgemm computes C = α·op(A)·op(B) + β·C.
func (v pureBLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if alpha == 1 && beta == 0 && gemm.Available() &&
		gemm.Sgemm(tA != blas.NoTrans, tB != blas.NoTrans, m, n, k, a, lda, b, ldb, c, ldc) == nil {
		return
	}
	// gemm does not run here or the product is not plain: vek for plain dense products, the
	// wrapped BLAS (which reports bad shapes) for the rest.
	plain := alpha == 1 && beta == 0 && ldc == n && m > 0 && n > 0 && k > 0 &&
		(tA != blas.NoTrans || lda == k) && (tB != blas.NoTrans || ldb == n)
	if !plain || gemm.Available() {
		v.BLAS.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	v.vekSgemm(tA, tB, m, n, k, a, lda, b, ldb, c)
}

// vekSgemm is the plain product C = op(A)·op(B) (C dense) on vek, transposed operands copied out.
func (v pureBLAS) vekSgemm(tA, tB blas.Transpose, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32) {
	if tA != blas.NoTrans {
		buf := scratch.Get().(*[]float32)
		defer scratch.Put(buf)
		a = transposeInto(buf, a, m, k, lda)
	}
	if tB != blas.NoTrans {
		buf := scratch.Get().(*[]float32)
		defer scratch.Put(buf)
		b = transposeInto(buf, b, k, n, ldb)
	}
	vekMatMul(c, a, b, m, n, k)
}
