// Package gemm is a single-precision matrix product C = op(A)·op(B) on packed panels and a
// register-tiled micro-kernel in AVX2 and FMA assembly (gemm_amd64.s), the structure of
// GotoBLAS and BLIS:
//
//   - C is computed in column blocks of up to nc columns (fewer when k is long), and the sum over
//     k in blocks of up to kc terms, one block after another;
//   - for each column block, the panel of op(B) over its k blocks (a group of them when k is very
//     long) is packed into strips nr = 16 columns wide, each strip kc rows of 16 consecutive
//     floats, zero-padded past n;
//   - each row block of up to mc rows of op(A) is packed, k block by k block, into strips mr = 6
//     rows tall, each strip kc columns of 6 consecutive floats, zero-padded past m; whole strips of
//     a transposed A, whose columns are already 6 consecutive floats, are read in place instead;
//   - the micro-kernel multiplies one A strip by one B strip into a 6 × 16 tile of C held in twelve
//     YMM registers, then stores the tile (the first k block) or adds it to C (the later ones).
//     Tiles that stick out of C are computed into a small temporary tile and copied out.
//
// Packing reads either layout of A and B, so transposed operands need no copy of their own.
//
// Each element of C is the sum of its k-block partial sums added to C in k-block order, each partial
// sum a chain of fused multiply-adds in k order. The order depends only on k and kc, never on how
// many goroutines run or which tiles they take, so the product has the same bits at any GOMAXPROCS
// (TestIndependentOfGOMAXPROCS). At GOMAXPROCS 2 and more, large products run rectangles of C
// (row blocks, and column runs when the rows are few) on par.Runs.
//
// It lives in a package of its own because package nn uses cgo (OpenBLAS), and a cgo package
// cannot hold Go assembly. Where the CPU has no AVX2 and FMA, or built with the purego tag or for
// another architecture, Available is false and the caller uses another BLAS.
package gemm

import (
	"errors"
	"runtime"
	"sync"

	"github.com/cohortlab/cohort/internal/par"
)

// Block sizes. mr × nr is the micro-kernel's tile; kc is the k block, so that a B strip
// (kc × nr floats, 16 KiB) stays in L1 while the kernel runs down an A block; mc × kc floats of A
// (144 KiB) stay in L2; B's packed panel (up to panelFloats, 4 MiB) in L3. Of kc 192–384 and
// mc 96–240, kc 256 with mc 144 or 240 ran the GPT's products fastest (BenchmarkSgemm, AMD EPYC).
const (
	mr = 6
	nr = 16
	kc = 256
	mc = 144 // a multiple of mr
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

// A call is one product being computed: its operands, the group of blocks in progress, its cut
// into units of work and the packed B panel. Calls are pooled with their buffer and their bound
// methods, which par.Runs takes without allocating.
type call struct {
	transA, transB bool
	m, n, k        int
	a, b, c        []float32
	lda, ldb, ldc  int

	jc, nb   int       // the column block [jc, jc+nb) in progress
	k0, k1   int       // its k blocks in progress: [k0, k1), k0 and k1 multiples of kc (or k1 = k)
	strips   int       // B strips in the column block
	bp       []float32 // op(B)'s panel [k0, k1) × [jc, jc+nb): for each k block, its strips of kb × nr
	rows     int       // rows of C per unit of mul (the last unit may have fewer)
	cols     int       // B strips per unit of mul (likewise)
	colUnits int       // units of mul across the column block

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

// panelFloats bounds the packed B panel: a column block packs at most this many floats of op(B)
// at once (more k blocks at once only when nc columns of them fit).
const panelFloats = 1 << 20

// run computes the product. For each column block and group of its k blocks, B's panel is packed
// (in runs of strips), then the units of mul, independent rectangles of C, each add the group's
// k blocks to their tiles in k order. The k blocks depend only on k; the cut into units (which
// does not change any sum) on the shape and GOMAXPROCS.
func (p *call) run() {
	workers := runtime.GOMAXPROCS(0)
	parallel := workers > 1 && 2*p.m*p.n*p.k >= parMinFlops
	// Column blocks of nc columns, fewer when k is long, so that a panel of all of k fits.
	ncol := max(4*nr, min(nc, panelFloats/p.k/nr*nr))
	// k blocks per group: all of them when the panel fits.
	group := max(kc, panelFloats/roundUp(min(ncol, p.n), nr)/kc*kc)
	for p.jc = 0; p.jc < p.n; p.jc += ncol {
		p.nb = min(ncol, p.n-p.jc)
		p.strips = (p.nb + nr - 1) / nr
		p.units(parallel, workers)
		for p.k0 = 0; p.k0 < p.k; p.k0 += group {
			p.k1 = min(p.k0+group, p.k)
			if need := (p.k1 - p.k0) * p.strips * nr; cap(p.bp) < need {
				p.bp = make([]float32, need)
			}
			if !parallel {
				p.packB(0, p.strips)
				p.mul(0, 1)
				continue
			}
			par.Runs(p.strips, 4, p.packRun)
			rowUnits := (p.m + p.rows - 1) / p.rows
			par.Runs(rowUnits*p.colUnits, 1, p.mulRun)
		}
	}
}

// units cuts the column block into the rectangles of C that mul runs: one on one goroutine; in
// parallel, row blocks of up to mc rows, balanced, and when those are fewer than two per worker,
// column runs of whole strips too (each of which packs its rows of A again).
func (p *call) units(parallel bool, workers int) {
	if !parallel {
		p.rows, p.cols, p.colUnits = p.m, p.strips, 1
		return
	}
	rowUnits := (p.m + mc - 1) / mc
	p.rows = roundUp((p.m+rowUnits-1)/rowUnits, mr)
	p.colUnits = min(p.strips, (2*workers+rowUnits-1)/rowUnits)
	p.cols = (p.strips + p.colUnits - 1) / p.colUnits
	p.colUnits = (p.strips + p.cols - 1) / p.cols
}

func roundUp(x, to int) int { return (x + to - 1) / to * to }

// bOffset is where k block pc's strip s starts in the packed panel: after the full k blocks of
// the group before it, then s strips of kb × nr.
func (p *call) bOffset(pc, kb, s int) int {
	return (pc-p.k0)*p.strips*nr + s*kb*nr
}

// packB packs the B strips [lo, hi) of the current column block, for every k block of the group:
// strip s of k block pc holds columns jc + s·nr … jc + s·nr + nr − 1 of op(B), rows pc … pc+kb−1,
// as kb rows of nr floats.
func (p *call) packB(lo, hi int) {
	ldb := p.ldb
	for pc := p.k0; pc < p.k1; pc += kc {
		kb := min(kc, p.k1-pc)
		for s := lo; s < hi; s++ {
			j0 := p.jc + s*nr
			w := min(nr, p.n-j0) // columns of op(B) in the strip; the rest are zero
			o := p.bOffset(pc, kb, s)
			dst := p.bp[o : o+kb*nr]
			switch {
			case !p.transB && w == nr:
				// op(B)(q, j) = b[q·ldb + j]: each row of the strip is a run of b, copied whole
				// through a local array (which the compiler moves in registers, where a direct
				// array assignment calls memmove).
				for q := range kb {
					o := (pc+q)*ldb + j0
					row := *(*[nr]float32)(p.b[o : o+nr])
					*(*[nr]float32)(dst[q*nr:]) = row
				}
			case !p.transB:
				for q := range kb {
					o := (pc+q)*ldb + j0
					d := dst[q*nr : q*nr+nr]
					copy(d, p.b[o:o+w])
					clear(d[w:])
				}
			case w == nr:
				// op(B)(q, j) = b[j·ldb + q]: each column of the strip is a run of b; the
				// sixteen runs transposed (packB16T, four rows at a time).
				o := j0*ldb + pc
				_ = p.b[o+(nr-1)*ldb+kb-1] // packB16T's last load, in range
				packB16T(kb, &p.b[o], ldb, &dst[0])
			default:
				// A strip past n: its columns one by one, the rest zero.
				for j := range w {
					o := (j0+j)*ldb + pc
					for q, v := range p.b[o : o+kb] {
						dst[q*nr+j] = v
					}
				}
				for q := range kb {
					clear(dst[q*nr+w : q*nr+nr])
				}
			}
		}
	}
}

// mul computes the units [lo, hi) of the current group: unit u is row run u / colUnits and
// column run u mod colUnits. Each unit goes through its rows in blocks of up to mc, and for each
// block through the group's k blocks in order, packing the block's A once per k block and running
// it against the unit's B strips.
func (p *call) mul(lo, hi int) {
	buf := aBufs.Get().(*[]float32)
	ap := *buf
	for u := lo; u < hi; u++ {
		r0, s0 := u/p.colUnits*p.rows, u%p.colUnits*p.cols
		r1, s1 := min(r0+p.rows, p.m), min(s0+p.cols, p.strips)
		for i0 := r0; i0 < r1; i0 += mc {
			mb := min(mc, r1-i0)
			for pc := p.k0; pc < p.k1; pc += kc {
				kb := min(kc, p.k1-pc)
				p.packA(ap, i0, mb, pc, kb)
				p.block(ap, i0, mb, pc, kb, s0, s1)
			}
		}
	}
	aBufs.Put(buf)
}

// packA packs rows [i0, i0+mb) of op(A), columns pc … pc + kb − 1, into dst as strips of mr rows:
// strip s holds kb columns of mr floats, zero past row m.
func (p *call) packA(dst []float32, i0, mb, pc, kb int) {
	lda := p.lda
	for s := 0; s*mr < mb; s++ {
		r0 := i0 + s*mr
		h := min(mr, i0+mb-r0) // rows of op(A) in the strip; the rest are zero
		d := dst[s*kb*mr : (s+1)*kb*mr]
		switch {
		case p.transA && h == mr:
			// The kernel reads the strip in place (see block).
		case p.transA:
			for q := range kb {
				o := (pc+q)*lda + r0
				dq := d[q*mr : q*mr+mr]
				copy(dq, p.a[o:o+h])
				clear(dq[h:])
			}
		case h == mr:
			// op(A)(i, q) = a[i·lda + q]: the strip's six rows are runs of a, interleaved
			// (packA6, four columns at a time).
			o := r0*lda + pc
			_ = p.a[o+(mr-1)*lda+kb-1] // packA6's last load, in range
			packA6(kb, &p.a[o], lda, &d[0])
		default:
			for i := range h {
				o := (r0+i)*lda + pc
				for q, v := range p.a[o : o+kb] {
					d[q*mr+i] = v
				}
			}
			for q := range kb {
				clear(d[q*mr+h : q*mr+mr])
			}
		}
	}
}

// block runs the micro-kernel over the packed rows [i0, i0+mb) of A and the B strips [s0, s1) of
// k block pc (kb long): their tiles are stored into C for the first k block, added to it after.
func (p *call) block(ap []float32, i0, mb, pc, kb, s0, s1 int) {
	ldc := p.ldc
	add := pc > 0
	var tile [mr * nr]float32
	for s := s0; s < s1; s++ {
		j0 := p.jc + s*nr
		w := min(nr, p.n-j0)
		o := p.bOffset(pc, kb, s)
		bs := p.bp[o : o+kb*nr]
		for t := 0; t*mr < mb; t++ {
			r0 := i0 + t*mr
			h := min(mr, i0+mb-r0)
			// The A strip: packed, or for a whole strip of a transposed A in place, where
			// column q of the strip is the 6 floats of row pc + q of the stored A from column r0.
			as, lda := &ap[t*kb*mr], mr
			if p.transA && h == mr {
				_ = p.a[(pc+kb-1)*p.lda+r0+mr-1] // the kernel's last load, in range
				as, lda = &p.a[pc*p.lda+r0], p.lda
			}
			if h == mr && w == nr {
				_ = p.c[(r0+mr-1)*ldc+j0+nr-1] // the kernel's last store, in range
				kernel(kb, as, lda, &bs[0], &p.c[r0*ldc+j0], ldc, add)
				continue
			}
			// An edge tile: computed whole into tile, then its h × w part stored or added.
			kernel(kb, as, lda, &bs[0], &tile[0], nr, false)
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
