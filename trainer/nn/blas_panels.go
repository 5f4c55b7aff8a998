package nn

import (
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
	type panel struct{ lo, hi int }
	var work []panel
	byRows := m >= n
	ext, size := n, min(n, panelCols)
	if byRows {
		ext, size = m, min(m, panelRows)
	}
	for lo := 0; lo < ext; lo += size {
		work = append(work, panel{lo, min(lo+size, ext)})
	}
	run := func(w panel) {
		if byRows {
			// Rows lo..hi of op(A): row offset lo·lda when A is stored as is, column offset lo when
			// A is stored transposed. Rows lo..hi of C.
			off := w.lo * lda
			if tA != blas.NoTrans {
				off = w.lo
			}
			p.BLAS.Sgemm(tA, tB, w.hi-w.lo, n, k, alpha, a[off:], lda, b, ldb, beta, c[w.lo*ldc:], ldc)
			return
		}
		// Columns lo..hi of op(B) and of C.
		off := w.lo
		if tB != blas.NoTrans {
			off = w.lo * ldb
		}
		p.BLAS.Sgemm(tA, tB, m, w.hi-w.lo, k, alpha, a, lda, b[off:], ldb, beta, c[w.lo:], ldc)
	}
	par.Runs(len(work), 1, func(lo, hi int) {
		for _, w := range work[lo:hi] {
			run(w)
		}
	})
}
