// Package gemm is a single-precision matrix product C = op(A)·op(B) on packed panels and a
// register-tiled micro-kernel in AVX2 and FMA assembly (gemm_amd64.s), the structure of
// GotoBLAS and BLIS:
//
//   - C is computed in column blocks of up to nc columns and, within them, the sum over k in blocks
//     of up to kc terms, one block after another;
//   - for each (column block, k block) the kc × nc panel of op(B) is packed into strips nr = 16
//     columns wide, each strip kc rows of 16 consecutive floats, zero-padded past n;
//   - each row block of up to mc rows of op(A) is packed into strips mr = 6 rows tall, each strip
//     kc columns of 6 consecutive floats, zero-padded past m;
//   - the micro-kernel multiplies one A strip by one B strip into a 6 × 16 tile of C held in twelve
//     YMM registers, then stores the tile (the first k block) or adds it to C (the later ones).
//     Tiles that stick out of C are computed into a small temporary tile and copied out.
//
// Packing reads either layout of A and B, so transposed operands need no copy of their own.
//
// Each element of C is the sum of its k-block partial sums added to C in k-block order, each partial
// sum a chain of fused multiply-adds in k order. The order depends only on k and kc, never on how
// many goroutines run or which rows they take, so the product has the same bits at any GOMAXPROCS
// (TestIndependentOfGOMAXPROCS). Large products run their row blocks on par.Runs.
//
// It lives in a package of its own because package nn uses cgo (OpenBLAS), and a cgo package
// cannot hold Go assembly. Where the CPU has no AVX2 and FMA, or built with the purego tag or for
// another architecture, Available is false and the caller uses another BLAS.
package gemm

import (
	"errors"
	"sync"

	"github.com/cohortlab/cohort/internal/par"
)

// Block sizes. mr × nr is the micro-kernel's tile; kc is the k block, so that a B strip
// (kc × nr floats, 16 KiB) stays in L1 while the kernel runs down an A block; mc × kc floats of A
// (96 KiB) stay in L2; kc × nc floats of B (up to 2 MiB) in L3.
const (
	mr = 6
	nr = 16
	kc = 256
	mc = 96 // a multiple of mr
	nc = 2048
)

// parMinFlops is the work 2·m·n·k below which a product runs on the calling goroutine alone.
const parMinFlops = 1 << 21

// Available says whether Sgemm runs here (amd64 with AVX2 and FMA, not built with purego).
func Available() bool { return useAsm }

// ErrShape is returned for a product whose dimensions or strides do not fit its slices.
var ErrShape = errors.New("gemm: dimensions, strides or slice lengths do not fit")

// ErrUnavailable is returned by Sgemm where Available is false.
var ErrUnavailable = errors.New("gemm: no AVX2 and FMA kernel on this CPU or build")

// Sgemm sets C = op(A)·op(B) for row-major matrices: op(A) is m × k, A itself (stored m × k,
// row stride lda) or, with transA, the transpose of A (stored k × m); op(B) is k × n, likewise with
// transB and ldb; C is m × n with row stride ldc. It returns ErrShape, leaving C unchanged, when
// a stride is shorter than its row or a slice shorter than its matrix, and ErrUnavailable where
// the kernel does not run.
func Sgemm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) error {
	if !useAsm {
		return ErrUnavailable
	}
	if !fits(transA, m, k, len(a), lda) || !fits(transB, k, n, len(b), ldb) || !fits(false, m, n, len(c), ldc) {
		return ErrShape
	}
	if m == 0 || n == 0 {
		return nil
	}
	if k == 0 {
		for i := range m {
			clear(c[i*ldc : i*ldc+n])
		}
		return nil
	}
	p := calls.Get().(*call)
	p.transA, p.transB, p.m, p.n, p.k = transA, transB, m, n, k
	p.a, p.b, p.c, p.lda, p.ldb, p.ldc = a, b, c, lda, ldb, ldc
	p.run()
	p.a, p.b, p.c = nil, nil, nil
	calls.Put(p)
	return nil
}

// fits says whether a slice of length size holds a rows × cols matrix (stored cols × rows when
// trans) with row stride ld.
func fits(trans bool, rows, cols, size, ld int) bool {
	if trans {
		rows, cols = cols, rows
	}
	if rows < 0 || cols < 0 || ld < max(1, cols) {
		return false
	}
	return rows == 0 || cols == 0 || (rows-1) <= (size-cols)/ld && size >= cols
}

// A call is one product being computed: its operands, the block in progress and the packed B
// panel. Calls are pooled with their buffer and their bound methods, which par.Runs takes without
// allocating.
type call struct {
	transA, transB bool
	m, n, k        int
	a, b, c        []float32
	lda, ldb, ldc  int

	jc, nb, pc, kb int       // the column block [jc, jc+nb) and k block [pc, pc+kb) in progress
	first          bool      // pc == 0: tiles are stored, not added to C
	bp             []float32 // the packed panel of op(B): strips of kb × nr
	rows           int       // rows of C per run of mul on par.Runs (at most mc)

	packRun, mulRun func(lo, hi int)
}

var calls = sync.Pool{New: func() any {
	p := new(call)
	p.packRun, p.mulRun = p.packB, p.mul
	return p
}}

// aBufs holds buffers for packed A blocks, one per run of mul.
var aBufs = sync.Pool{New: func() any {
	b := make([]float32, mc*kc)
	return &b
}}

// run computes the product, block after block. The k blocks of a column block run in order;
// within one, the runs of rows (mul) and of B strips (packB) are independent.
func (p *call) run() {
	parallel := 2*p.m*p.n*p.k >= parMinFlops
	// Runs of rows: mc, or fewer so that small-m products still make four runs.
	p.rows = mc
	if parallel && p.m < 4*mc {
		p.rows = min(mc, roundUp((p.m+3)/4, mr))
	}
	for p.jc = 0; p.jc < p.n; p.jc += nc {
		p.nb = min(nc, p.n-p.jc)
		strips := (p.nb + nr - 1) / nr
		if need := kc * strips * nr; cap(p.bp) < need {
			p.bp = make([]float32, need)
		}
		for p.pc = 0; p.pc < p.k; p.pc += kc {
			p.kb = min(kc, p.k-p.pc)
			p.first = p.pc == 0
			if parallel {
				par.Runs(strips, 8, p.packRun)
				par.Runs(p.m, p.rows, p.mulRun)
			} else {
				p.packB(0, strips)
				p.mul(0, p.m)
			}
		}
	}
}

func roundUp(x, to int) int { return (x + to - 1) / to * to }

// packB packs the B strips [lo, hi) of the current block: strip s holds columns
// jc + s·nr … jc + s·nr + nr − 1 of op(B), rows pc … pc + kb − 1, as kb rows of nr floats.
func (p *call) packB(lo, hi int) {
	kb := p.kb
	for s := lo; s < hi; s++ {
		j0 := p.jc + s*nr
		w := min(nr, p.n-j0) // columns of op(B) in the strip; the rest are zero
		dst := p.bp[s*kb*nr : (s+1)*kb*nr]
		if !p.transB {
			// op(B)(q, j) = b[q·ldb + j]: each row of the strip is a run of b.
			for q := range kb {
				row := p.b[(p.pc+q)*p.ldb+j0 : (p.pc+q)*p.ldb+j0+w]
				d := dst[q*nr : q*nr+nr]
				copy(d, row)
				clear(d[w:])
			}
			continue
		}
		// op(B)(q, j) = b[j·ldb + q]: each column of the strip is a run of b.
		for j := range w {
			col := p.b[(j0+j)*p.ldb+p.pc : (j0+j)*p.ldb+p.pc+kb]
			for q, v := range col {
				dst[q*nr+j] = v
			}
		}
		if w < nr {
			for q := range kb {
				clear(dst[q*nr+w : q*nr+nr])
			}
		}
	}
}

// packA packs rows [i0, i0+mb) of op(A), columns pc … pc + kb − 1, into dst as strips of mr rows:
// strip s holds kb columns of mr floats, zero past row m.
func (p *call) packA(dst []float32, i0, mb int) {
	kb := p.kb
	for s := 0; s*mr < mb; s++ {
		r0 := i0 + s*mr
		h := min(mr, i0+mb-r0) // rows of op(A) in the strip; the rest are zero
		d := dst[s*kb*mr : (s+1)*kb*mr]
		if p.transA {
			// op(A)(i, q) = a[q·lda + i]: each column of the strip is a run of a.
			for q := range kb {
				col := p.a[(p.pc+q)*p.lda+r0 : (p.pc+q)*p.lda+r0+h]
				dq := d[q*mr : q*mr+mr]
				copy(dq, col)
				clear(dq[h:])
			}
			continue
		}
		// op(A)(i, q) = a[i·lda + q]: each row of the strip is a run of a.
		for i := range h {
			row := p.a[(r0+i)*p.lda+p.pc : (r0+i)*p.lda+p.pc+kb]
			for q, v := range row {
				d[q*mr+i] = v
			}
		}
		if h < mr {
			for q := range kb {
				clear(d[q*mr+h : q*mr+mr])
			}
		}
	}
}

// mul computes the current (column block, k block) for rows [lo, hi) of C, in row blocks of up
// to mc rows, each packed once and run against every B strip.
func (p *call) mul(lo, hi int) {
	buf := aBufs.Get().(*[]float32)
	ap := *buf
	for i0 := lo; i0 < hi; i0 += mc {
		mb := min(mc, hi-i0)
		p.packA(ap, i0, mb)
		p.block(ap, i0, mb)
	}
	aBufs.Put(buf)
}

// block runs the micro-kernel over the packed rows [i0, i0+mb) of A and every B strip of the
// current block.
func (p *call) block(ap []float32, i0, mb int) {
	kb, ldc := p.kb, p.ldc
	add := !p.first
	var tile [mr * nr]float32
	for s := 0; s*nr < p.nb; s++ {
		j0 := p.jc + s*nr
		w := min(nr, p.n-j0)
		bs := p.bp[s*kb*nr : (s+1)*kb*nr]
		for t := 0; t*mr < mb; t++ {
			r0 := i0 + t*mr
			h := min(mr, i0+mb-r0)
			as := ap[t*kb*mr : (t+1)*kb*mr]
			if h == mr && w == nr {
				_ = p.c[(r0+mr-1)*ldc+j0+nr-1] // the kernel's last store, in range
				kernel(kb, &as[0], &bs[0], &p.c[r0*ldc+j0], ldc, add)
				continue
			}
			// An edge tile: computed whole into tile, then its h × w part stored or added.
			kernel(kb, &as[0], &bs[0], &tile[0], nr, false)
			for i := range h {
				row := p.c[(r0+i)*ldc+j0 : (r0+i)*ldc+j0+w]
				src := tile[i*nr : i*nr+w]
				if add {
					for j, v := range src {
						row[j] += v
					}
				} else {
					copy(row, src)
				}
			}
		}
	}
}
