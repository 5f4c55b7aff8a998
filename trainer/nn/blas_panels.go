package nn

import (
	"runtime"

	"github.com/cohortlab/cohort/internal/par"
	"gonum.org/v1/gonum/blas"
	G "gorgonia.org/gorgonia"
)

// panelBLAS runs large single-precision matrix products on every core a process has, while keeping
// their results independent of how many cores that is.
//
// A product C = α·op(A)·op(B) + β·C is cut into panels of C: row panels when C has at least as
// many rows as columns, column panels otherwise. The cut is a function of the product's shape only
// (panels of a fixed size, panelRows or panelCols, rounded to whole multiples of 16), each panel is
// computed by one call of the wrapped single-threaded BLAS, and panels write disjoint parts of C.
// So every element of C is computed by the same call with the same operands whatever
// runtime.GOMAXPROCS is; the goroutines only decide who runs which panel. Products below
// panelMinFlops run whole, as one call.
type panelBLAS struct {
	G.BLAS
}

const (
	panelMinFlops = 1 << 21 // 2·m·n·k below which a product is not split
	panelRows     = 128
	panelCols     = 128
)

// Sgemm computes C = α·op(A)·op(B) + β·C, in panels run concurrently (see panelBLAS).
func (p panelBLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if 2*m*n*k < panelMinFlops || (m <= panelRows && n <= panelCols) {
		p.BLAS.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	pc := panelCall{BLAS: p.BLAS, tA: tA, tB: tB, m: m, n: n, k: k, alpha: alpha, beta: beta,
		a: a, b: b, c: c, lda: lda, ldb: ldb, ldc: ldc, byRows: m >= n}
	ext, size := n, min(n, panelCols)
	if pc.byRows {
		ext, size = m, min(m, panelRows)
	}
	if runtime.GOMAXPROCS(0) == 1 {
		// The same panels one after another, without the closure par.Runs needs.
		for lo := 0; lo < ext; lo += size {
			pc.do(lo, min(lo+size, ext))
		}
		return
	}
	shared := new(panelCall)
	*shared = pc
	par.Runs((ext+size-1)/size, 1, func(plo, phi int) {
		for i := plo; i < phi; i++ {
			shared.do(i*size, min((i+1)*size, ext))
		}
	})
}

// panelCall is one product of panelBLAS.Sgemm, cut into row or column panels.
type panelCall struct {
	G.BLAS
	tA, tB        blas.Transpose
	m, n, k       int
	alpha, beta   float32
	a, b, c       []float32
	lda, ldb, ldc int
	byRows        bool
}

// do computes the panel [lo, hi) of rows (byRows) or columns of C.
func (pc *panelCall) do(lo, hi int) {
	if pc.byRows {
		// Rows lo..hi of op(A): row offset lo·lda when A is stored as is, column offset lo when
		// A is stored transposed. Rows lo..hi of C.
		off := lo * pc.lda
		if pc.tA != blas.NoTrans {
			off = lo
		}
		pc.BLAS.Sgemm(pc.tA, pc.tB, hi-lo, pc.n, pc.k, pc.alpha, pc.a[off:], pc.lda, pc.b, pc.ldb, pc.beta, pc.c[lo*pc.ldc:], pc.ldc)
		return
	}
	// Columns lo..hi of op(B) and of C.
	off := lo
	if pc.tB != blas.NoTrans {
		off = lo * pc.ldb
	}
	pc.BLAS.Sgemm(pc.tA, pc.tB, pc.m, hi-lo, pc.k, pc.alpha, pc.a, pc.lda, pc.b[off:], pc.ldb, pc.beta, pc.c[lo:], pc.ldc)
}
