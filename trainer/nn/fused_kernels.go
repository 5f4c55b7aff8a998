package nn

import (
	"fmt"
	"math"

	"github.com/cohortlab/cohort/internal/par"
	"github.com/cohortlab/cohort/trainer/nn/internal/colsum"
	"github.com/cohortlab/cohort/trainer/nn/internal/expf"
	geluk "github.com/cohortlab/cohort/trainer/nn/internal/gelu"
	"github.com/viterin/vek/vek32"
	"gonum.org/v1/gonum/blas"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The kernels the models use. Row sums accumulate in float64; everything else is float32, in index
// order, so results are bit-reproducible on any machine and core count.

const lnEps = 1e-5

// gelu is the tanh approximation of GELU, elementwise over x of any shape.
//
// The forward pass keeps tanh's values for the gradient when the graph has one (one buffer per
// node, rewritten every run; the gradient op takes the forward output as an input, so it always
// runs after the forward op of the same run and reads that run's values).
func gelu(x *G.Node) (*G.Node, error) {
	d := x.Dims()
	var (
		keep bool      // the graph differentiates this node
		th   []float32 // tanh's values of the last forward run when keep
	)
	var fOut, fx []float32 // the operands of the current forward run (see kernel)
	fwd := func(lo, hi int) {
		var t []float32 // nil when not kept
		if keep {
			t = th[lo:hi]
		}
		geluk.Forward(fOut[lo:hi], t, fx[lo:hi])
	}
	k := &kernel{name: "gelu", inDims: []int{d}, outDims: d, shape: sameShape, wrt: []bool{true},
		run: func(out []float32, _ tensor.Shape, in [][]float32, _ []tensor.Shape) {
			if keep && len(th) != len(out) {
				th = make([]float32, len(out))
			}
			fOut, fx = out, in[0]
			par.Runs(len(out), elemsPerTask, fwd)
		},
	}
	k.grad = func(in G.Nodes, out, dout *G.Node) (G.Nodes, error) {
		keep = true
		var bOut, bx, bt, bdy []float32 // the operands of the current run (see kernel)
		bwd := func(lo, hi int) { geluk.Backward(bOut[lo:hi], bx[lo:hi], bt[lo:hi], bdy[lo:hi]) }
		g := &kernel{name: "gelu.grad", inDims: []int{d, d, d}, outDims: d, shape: sameShape,
			run: func(o []float32, _ tensor.Shape, in [][]float32, _ []tensor.Shape) {
				x, dy := in[0], in[2]
				t := th
				if len(t) != len(x) { // not kept (cannot happen in a graph run): compute them
					t = make([]float32, len(x))
					for i, v := range x {
						t[i] = geluk.TanhOf(v)
					}
				}
				bOut, bx, bt, bdy = o, x, t, dy
				par.Runs(len(o), elemsPerTask, bwd)
			},
		}
		dx, err := g.apply(in[0], out, dout)
		return G.Nodes{dx}, err
	}
	return k.apply(x)
}

// sumRows sums x [rows…, C] over every axis but the last: [C].
func sumRows(x *G.Node) (*G.Node, error) {
	var ( // the operands of the current run (see runFrame)
		out, src   []float32
		rows, cols int
	)
	sums := func(lo, hi int) {
		colBlocks(out, lo, hi, func(acc []float64, c int) { colsum.Add(acc, src[c:], rows, cols) })
	}
	k := &kernel{name: "sumrows", inDims: []int{x.Dims()}, outDims: 1,
		shape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{in[0][len(in[0])-1]}, nil },
		run: func(o []float32, _ tensor.Shape, in [][]float32, shapes []tensor.Shape) {
			rows, cols = rowsCols(shapes[0])
			out, src = o, in[0]
			par.Runs(cols, colsPerTask(rows), sums)
		},
	}
	return k.apply(x)
}

// colBlocks writes the column sums of columns [lo, hi) into out[lo:hi], in blocks of up to 256
// columns summed in float64 on the stack: sum adds the columns from c on into acc (zeroed), one
// float64 per column. Each column's sum is the same whatever the blocks.
func colBlocks(out []float32, lo, hi int, sum func(acc []float64, c int)) {
	var buf [256]float64
	for c := lo; c < hi; c += len(buf) {
		acc := buf[:min(len(buf), hi-c)]
		clear(acc)
		sum(acc, c)
		for i, v := range acc {
			out[c+i] = float32(v)
		}
	}
}

// addRow adds the vector b [C] to every row of x [rows…, C].
func addRow(x, b *G.Node) (*G.Node, error) {
	if x.Shape()[x.Dims()-1] != b.Shape().TotalSize() {
		return nil, fmt.Errorf("%w: bias of %v added to rows of %v", ErrGraph, b.Shape(), x.Shape())
	}
	var ( // the operands of the current run (see runFrame)
		out, xs, bs []float32
		cols        int
	)
	add := func(lo, hi int) {
		for r := lo; r < hi; r++ {
			o := out[r*cols : (r+1)*cols]
			copy(o, xs[r*cols:(r+1)*cols])
			vek32.Add_Inplace(o, bs) // exact float32 additions, 8 at a time on AVX2
		}
	}
	k := &kernel{name: "addrow", inDims: []int{x.Dims(), 1}, outDims: x.Dims(), shape: sameShape, wrt: []bool{true, true},
		run: func(o []float32, _ tensor.Shape, in [][]float32, shapes []tensor.Shape) {
			var rows int
			rows, cols = rowsCols(shapes[0])
			out, xs, bs = o, in[0], in[1]
			par.Runs(rows, rowsPerTask(cols), add)
		},
	}
	k.grad = func(_ G.Nodes, _, dout *G.Node) (G.Nodes, error) {
		db, err := sumRows(dout)
		return G.Nodes{dout, db}, err
	}
	return k.apply(x, b)
}

// lnStats returns the mean of a row and 1/√(var + ε).
func lnStats(x []float32) (mean, inv float32) {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	mean = float32(s / float64(len(x)))
	var q float64
	for _, v := range x {
		d := v - mean
		q += float64(d * d)
	}
	return mean, float32(1 / math.Sqrt(q/float64(len(x))+lnEps))
}

// lnStats4 is lnStats of the four rows x[0:n], x[n:2n], x[2n:3n] and x[3n:4n]: their sums are
// interleaved, each row's still in index order (the same bits), so that four chains of float64
// additions run at once instead of one.
func lnStats4(x []float32, n int) (mean, inv [4]float32) {
	x0 := x[:n]
	x1, x2, x3 := x[n : 2*n][:len(x0)], x[2*n : 3*n][:len(x0)], x[3*n : 4*n][:len(x0)]
	var s0, s1, s2, s3 float64
	for c, v := range x0 {
		s0 += float64(v)
		s1 += float64(x1[c])
		s2 += float64(x2[c])
		s3 += float64(x3[c])
	}
	fn := float64(n)
	m0, m1, m2, m3 := float32(s0/fn), float32(s1/fn), float32(s2/fn), float32(s3/fn)
	var q0, q1, q2, q3 float64
	for c, v := range x0 {
		d0, d1, d2, d3 := v-m0, x1[c]-m1, x2[c]-m2, x3[c]-m3
		q0 += float64(d0 * d0)
		q1 += float64(d1 * d1)
		q2 += float64(d2 * d2)
		q3 += float64(d3 * d3)
	}
	mean = [4]float32{m0, m1, m2, m3}
	for i, q := range [4]float64{q0, q1, q2, q3} {
		inv[i] = float32(1 / math.Sqrt(q/fn+lnEps))
	}
	return mean, inv
}

// lnApply writes row r of the LayerNorm output, (x − mean)·inv·gain + bias, from the row's
// statistics, and keeps them in stats unless it is nil.
func lnApply(out, x, g, b, stats []float32, r int, mean, inv float32) {
	cols := len(g)
	if stats != nil {
		stats[2*r], stats[2*r+1] = mean, inv
	}
	xr := x[r*cols : (r+1)*cols]
	o, b := out[r*cols : (r+1)*cols][:len(xr)], b[:len(xr)]
	for c, v := range xr {
		o[c] = (v-mean)*inv*g[c] + b[c]
	}
}

// rowSum is the float64 sum of x in index order.
func rowSum(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	return s
}

// rowSums4 is rowSum of the four rows x[0:n], x[n:2n], x[2n:3n] and x[3n:4n], their sums
// interleaved, each row's still in index order (the same bits), so that four chains of float64
// additions run at once instead of one.
func rowSums4(x []float32, n int) [4]float64 {
	x0 := x[:n]
	x1, x2, x3 := x[n : 2*n][:len(x0)], x[2*n : 3*n][:len(x0)], x[3*n : 4*n][:len(x0)]
	var s0, s1, s2, s3 float64
	for c, v := range x0 {
		s0 += float64(v)
		s1 += float64(x1[c])
		s2 += float64(x2[c])
		s3 += float64(x3[c])
	}
	return [4]float64{s0, s1, s2, s3}
}

// lnDxSums returns the sums of LayerNorm's input gradient for row r of x and dy [rows, cols]:
// Σ dx̂ and Σ dx̂ ⊙ x̂ with dx̂ = dy ⊙ gain, in float64, in index order, from the row's kept mean and
// inv (st[2r], st[2r+1]).
func lnDxSums(x, dy, g, st []float32, r, cols int) (s1, s2 float64) {
	mean, inv := st[2*r], st[2*r+1]
	xr, dyr := x[r*cols:(r+1)*cols], dy[r*cols:(r+1)*cols]
	xr, g = xr[:len(dyr)], g[:len(dyr)]
	for c, v := range dyr {
		d := v * g[c]
		s1 += float64(d)
		s2 += float64(d * ((xr[c] - mean) * inv))
	}
	return s1, s2
}

// lnDxSums4 is lnDxSums of rows r..r+3, their sums interleaved, each row's still in index order
// (the same bits), so that eight chains of float64 additions run at once instead of two.
func lnDxSums4(x, dy, g, st []float32, r, cols int) (s1, s2 [4]float64) {
	var xr, dr [4][]float32
	var mean, inv [4]float32
	for i := range 4 {
		xr[i], dr[i] = x[(r+i)*cols:(r+i+1)*cols], dy[(r+i)*cols:(r+i+1)*cols]
		mean[i], inv[i] = st[2*(r+i)], st[2*(r+i)+1]
	}
	g = g[:cols]
	x0, x1, x2, x3 := xr[0][:len(g)], xr[1][:len(g)], xr[2][:len(g)], xr[3][:len(g)]
	d0, d1, d2, d3 := dr[0][:len(g)], dr[1][:len(g)], dr[2][:len(g)], dr[3][:len(g)]
	var a0, a1, a2, a3, b0, b1, b2, b3 float64
	for c, gc := range g {
		e0, e1, e2, e3 := d0[c]*gc, d1[c]*gc, d2[c]*gc, d3[c]*gc
		a0 += float64(e0)
		a1 += float64(e1)
		a2 += float64(e2)
		a3 += float64(e3)
		b0 += float64(e0 * ((x0[c] - mean[0]) * inv[0]))
		b1 += float64(e1 * ((x1[c] - mean[1]) * inv[1]))
		b2 += float64(e2 * ((x2[c] - mean[2]) * inv[2]))
		b3 += float64(e3 * ((x3[c] - mean[3]) * inv[3]))
	}
	return [4]float64{a0, a1, a2, a3}, [4]float64{b0, b1, b2, b3}
}

// layerNorm normalises each row of x [rows, D] to zero mean and unit variance and applies gain
// and bias [D]: (x − mean)/√(var + 1e-5)·gain + bias.
//
// When the graph differentiates it, the forward pass keeps each row's mean and 1/√(var + ε) for
// the gradient ops, which compute x̂ = (x − mean)·inv from them, the same bits as the forward
// pass's (one buffer per node, rewritten every run; the gradient ops take the forward output as an
// input, so they run after the forward op of the same run).
func layerNorm(x, gain, bias *G.Node) (*G.Node, error) {
	var (
		keep  bool      // the graph differentiates this node
		stats []float32 // mean, inv of each row of the last forward run when keep
	)
	var ( // the operands of the current forward run (see kernel)
		fOut, fx, fg, fb, fst []float32
		fCols                 int
	)
	norm := func(lo, hi int) {
		out, x, g, b, st, cols := fOut, fx, fg, fb, fst, fCols
		r := lo
		for ; r+4 <= hi; r += 4 {
			mean, inv := lnStats4(x[r*cols:(r+4)*cols], cols)
			for i := range 4 {
				lnApply(out, x, g, b, st, r+i, mean[i], inv[i])
			}
		}
		for ; r < hi; r++ {
			mean, inv := lnStats(x[r*cols : (r+1)*cols])
			lnApply(out, x, g, b, st, r, mean, inv)
		}
	}
	k := &kernel{name: "layernorm", inDims: []int{2, 1, 1}, outDims: 2, shape: sameShape, wrt: []bool{true, true, true},
		run: func(out []float32, _ tensor.Shape, in [][]float32, shapes []tensor.Shape) {
			rows, cols := rowsCols(shapes[0])
			if keep && len(stats) != 2*rows {
				stats = make([]float32, 2*rows)
			}
			fOut, fx, fg, fb, fst, fCols = out, in[0], in[1][:cols], in[2][:cols], stats, cols // stats nil when not kept
			par.Runs(rows, rowsPerTask(cols), norm)
		},
	}
	// rowStats returns the kept statistics, or computes them when there are none (which cannot
	// happen in a graph run).
	rowStats := func(x []float32, rows, cols int) []float32 {
		if len(stats) == 2*rows {
			return stats
		}
		st := make([]float32, 2*rows)
		for r := 0; r < rows; r++ {
			st[2*r], st[2*r+1] = lnStats(x[r*cols : (r+1)*cols])
		}
		return st
	}
	k.grad = func(in G.Nodes, out, dout *G.Node) (G.Nodes, error) {
		keep = true
		// dx = (dx̂ − mean(dx̂) − x̂·mean(dx̂ ⊙ x̂))/√(var + ε), dx̂ = dy ⊙ gain.
		var ( // the operands of the current run (see kernel)
			dOut, dxs, dgs, ddy, dst []float32
			dCols                    int
		)
		dxRows := func(lo, hi int) {
			o, x, g, dy, st, cols := dOut, dxs, dgs, ddy, dst, dCols
			apply := func(r int, s1, s2 float64) {
				mean, inv := st[2*r], st[2*r+1]
				xr, dyr, or := x[r*cols:(r+1)*cols], dy[r*cols:(r+1)*cols], o[r*cols:(r+1)*cols]
				xr, or = xr[:len(dyr)], or[:len(dyr)]
				m1, m2 := float32(s1/float64(cols)), float32(s2/float64(cols))
				for c, v := range dyr {
					or[c] = (v*g[c] - m1 - (xr[c]-mean)*inv*m2) * inv
				}
			}
			r := lo
			for ; r+4 <= hi; r += 4 {
				s1, s2 := lnDxSums4(x, dy, g, st, r, cols)
				for i := range 4 {
					apply(r+i, s1[i], s2[i])
				}
			}
			for ; r < hi; r++ {
				s1, s2 := lnDxSums(x, dy, g, st, r, cols)
				apply(r, s1, s2)
			}
		}
		gx := &kernel{name: "layernorm.dx", inDims: []int{2, 1, 2, 2}, outDims: 2, shape: sameShape,
			run: func(o []float32, _ tensor.Shape, in [][]float32, shapes []tensor.Shape) {
				rows, cols := rowsCols(shapes[0])
				dOut, dxs, dgs, ddy, dCols = o, in[0], in[1][:cols], in[3], cols
				dst = rowStats(dxs, rows, cols)
				par.Runs(rows, rowsPerTask(cols), dxRows)
			},
		}
		// dgain = Σ_rows dy ⊙ x̂, by columns, each summed in row order.
		var ( // the operands of the current run (see kernel)
			gOut, gxs, gdy, gst []float32
			gRows, gCols        int
		)
		gainCols := func(lo, hi int) {
			colBlocks(gOut, lo, hi, func(acc []float64, c int) { colsum.AddXhat(acc, gxs[c:], gdy[c:], gst, gRows, gCols) })
		}
		gg := &kernel{name: "layernorm.dgain", inDims: []int{2, 2, 2}, outDims: 1,
			shape: func(in []tensor.Shape) (tensor.Shape, error) { return tensor.Shape{in[0][1]}, nil },
			run: func(out []float32, _ tensor.Shape, in [][]float32, shapes []tensor.Shape) {
				gRows, gCols = rowsCols(shapes[0])
				gOut, gxs, gdy = out, in[0], in[2]
				gst = rowStats(gxs, gRows, gCols)
				par.Runs(gCols, colsPerTask(gRows), gainCols)
			},
		}
		dx, err := gx.apply(in[0], in[1], out, dout)
		if err != nil {
			return nil, err
		}
		dg, err := gg.apply(in[0], out, dout)
		if err != nil {
			return nil, err
		}
		db, err := sumRows(dout)
		return G.Nodes{dx, dg, db}, err
	}
	return k.apply(x, gain, bias)
}

// logSoftmax is the log-softmax of each row (last axis) of x, stable by subtracting the row's own
// maximum.
//
// Why not G.LogSoftMax / G.SoftMax: gorgonia.org/tensor v0.9.23 (softMaxLastDimF32) starts each
// row's maximum from the tensor's first element instead of the row's, and skips the row's own
// first element. A row whose first logit exceeds that value by more than ~88 overflows exp to +Inf
// and the loss turns NaN. It happened in DiLoCo on Dirichlet-skewed Fashion-MNIST (8 workers, H=10,
// round 27): a worker trained on mostly class 0 grew a large class-0 logit.
func logSoftmax(x *G.Node) (*G.Node, error) {
	d := x.Dims()
	var ( // the operands of the current run (see kernel)
		fOut  []float32
		fIn   [][]float32
		fCols int
	)
	lsmRows := func(lo, hi int) {
		out, in, cols := fOut, fIn, fCols
		// exps writes e^(x − m) of row r into its output row (overwritten by finish) and
		// returns m.
		exps := func(r int) float32 {
			xr, o := in[0][r*cols:(r+1)*cols], out[r*cols:(r+1)*cols]
			m := xr[0]
			for _, v := range xr[1:] {
				m = max(m, v)
			}
			expf.Shifted(o, xr, m, 1)
			return m
		}
		finish := func(r int, m float32, s float64) {
			xr, o := in[0][r*cols:(r+1)*cols], out[r*cols:(r+1)*cols]
			l := float32(math.Log(s))
			for c, v := range xr {
				o[c] = v - m - l
			}
		}
		r := lo
		for ; r+4 <= hi; r += 4 {
			var m [4]float32
			for i := range 4 {
				m[i] = exps(r + i)
			}
			s := rowSums4(out[r*cols:(r+4)*cols], cols)
			for i := range 4 {
				finish(r+i, m[i], s[i])
			}
		}
		for ; r < hi; r++ {
			m := exps(r)
			finish(r, m, rowSum(out[r*cols:(r+1)*cols]))
		}
	}
	k := &kernel{name: "logsoftmax", inDims: []int{d}, outDims: d, shape: sameShape, wrt: []bool{true},
		run: func(out []float32, _ tensor.Shape, in [][]float32, shapes []tensor.Shape) {
			rows, cols := rowsCols(shapes[0])
			fOut, fIn, fCols = out, in, cols
			par.Runs(rows, rowsPerTask(cols), lsmRows)
		},
	}
	k.grad = func(_ G.Nodes, out, dout *G.Node) (G.Nodes, error) {
		// dx = dy − softmax(x)·Σ dy, row by row; softmax(x) = exp(y).
		var ( // the operands of the current run (see kernel)
			bOut, by, bdy []float32
			bCols         int
		)
		gradRows := func(lo, hi int) {
			o, y, dy, cols := bOut, by, bdy, bCols
			apply := func(r int, s float64) {
				sf := float32(s)
				or, dr := o[r*cols:(r+1)*cols], dy[r*cols:(r+1)*cols]
				expf.Shifted(or, y[r*cols:(r+1)*cols], 0, 1) // softmax(x) = e^y
				for c, d := range dr[:len(or)] {
					or[c] = d - or[c]*sf
				}
			}
			r := lo
			for ; r+4 <= hi; r += 4 {
				s := rowSums4(dy[r*cols:(r+4)*cols], cols)
				for i := range 4 {
					apply(r+i, s[i])
				}
			}
			for ; r < hi; r++ {
				apply(r, rowSum(dy[r*cols:(r+1)*cols]))
			}
		}
		g := &kernel{name: "logsoftmax.grad", inDims: []int{d, d}, outDims: d, shape: sameShape,
			run: func(o []float32, _ tensor.Shape, in [][]float32, shapes []tensor.Shape) {
				rows, cols := rowsCols(shapes[0])
				bOut, by, bdy, bCols = o, in[0], in[1], cols
				par.Runs(rows, rowsPerTask(cols), gradRows)
			},
		}
		dx, err := g.apply(out, dout)
		return G.Nodes{dx}, err
	}
	return k.apply(x)
}

// causalSoftmax turns raw attention scores s [count, T, T] into attention weights: row i of each
// matrix is softmax(scale·s[i, 0..i]) over the positions j ≤ i, and 0 for j > i
// (causalSoftmaxRows, matrix by matrix).
func causalSoftmax(s *G.Node, scale float32) (*G.Node, error) {
	k := &kernel{name: fmt.Sprintf("causalsoftmax(%g)", scale), inDims: []int{3}, outDims: 3, shape: sameShape, wrt: []bool{true},
		run: func(out []float32, _ tensor.Shape, in [][]float32, shapes []tensor.Shape) {
			count, T := shapes[0][0], shapes[0][1]
			par.Runs(count, max(1, elemsPerTask/(T*T)), func(lo, hi int) {
				for m := lo; m < hi; m++ {
					causalSoftmaxRows(out[m*T*T:(m+1)*T*T], in[0][m*T*T:(m+1)*T*T], T, scale)
				}
			})
		},
	}
	k.grad = func(_ G.Nodes, out, dout *G.Node) (G.Nodes, error) {
		// ds = scale · p ⊙ (dp − Σ_j dp ⊙ p), row by row (0 where p is masked).
		g := &kernel{name: fmt.Sprintf("causalsoftmax(%g).grad", scale), inDims: []int{3, 3}, outDims: 3, shape: sameShape,
			run: func(o []float32, _ tensor.Shape, in [][]float32, shapes []tensor.Shape) {
				count, T := shapes[0][0], shapes[0][1]
				p, dp := in[0], in[1]
				par.Runs(count, max(1, elemsPerTask/(T*T)), func(lo, hi int) {
					for m := lo; m < hi; m++ {
						causalSoftmaxGradRows(o[m*T*T:(m+1)*T*T], p[m*T*T:(m+1)*T*T], dp[m*T*T:(m+1)*T*T], T, scale)
					}
				})
			},
		}
		ds, err := g.apply(out, dout)
		return G.Nodes{ds}, err
	}
	return k.apply(s)
}

// headLayout describes how multi-head attention lays out n sequences of T positions with NH heads
// of width hd: rows of a [n·T, W] matrix hold each position's heads side by side from column from;
// a [n·NH, T, hd] tensor holds each sequence's heads one after the other.
type headLayout struct{ n, T, NH, hd, W, from int }

func (h headLayout) String() string {
	return fmt.Sprintf("%d×%d×%d×%d/%d@%d", h.n, h.T, h.NH, h.hd, h.W, h.from)
}

// splitHeads copies columns [from, from + NH·hd) of x [n·T, W] into [n·NH, T, hd].
func (h headLayout) split(out, x []float32) {
	for b := 0; b < h.n; b++ {
		for hh := 0; hh < h.NH; hh++ {
			for t := 0; t < h.T; t++ {
				src := (b*h.T+t)*h.W + h.from + hh*h.hd
				dst := ((b*h.NH+hh)*h.T + t) * h.hd
				copy(out[dst:dst+h.hd], x[src:src+h.hd])
			}
		}
	}
}

// merge is the inverse of split: [n·NH, T, hd] into columns [from, from + NH·hd) of [n·T, W], the
// other columns zero.
func (h headLayout) merge(out, y []float32) {
	if h.W != h.NH*h.hd {
		clear(out)
	}
	for b := 0; b < h.n; b++ {
		for hh := 0; hh < h.NH; hh++ {
			for t := 0; t < h.T; t++ {
				dst := (b*h.T+t)*h.W + h.from + hh*h.hd
				src := ((b*h.NH+hh)*h.T + t) * h.hd
				copy(out[dst:dst+h.hd], y[src:src+h.hd])
			}
		}
	}
}

// splitHeads is x [n·T, W] → [n·NH, T, hd] (see headLayout); its gradient is mergeHeads.
func splitHeads(x *G.Node, h headLayout) (*G.Node, error) {
	k := &kernel{name: "splitheads" + h.String(), inDims: []int{2}, outDims: 3, wrt: []bool{true},
		shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{h.n * h.NH, h.T, h.hd}, nil },
		run:   func(out []float32, _ tensor.Shape, in [][]float32, _ []tensor.Shape) { h.split(out, in[0]) },
	}
	k.grad = func(_ G.Nodes, _, dout *G.Node) (G.Nodes, error) {
		dx, err := mergeHeads(dout, h)
		return G.Nodes{dx}, err
	}
	return k.apply(x)
}

// mergeHeads is y [n·NH, T, hd] → [n·T, W] (see headLayout); its gradient is splitHeads.
func mergeHeads(y *G.Node, h headLayout) (*G.Node, error) {
	k := &kernel{name: "mergeheads" + h.String(), inDims: []int{3}, outDims: 2, wrt: []bool{true},
		shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{h.n * h.T, h.W}, nil },
		run:   func(out []float32, _ tensor.Shape, in [][]float32, _ []tensor.Shape) { h.merge(out, in[0]) },
	}
	k.grad = func(_ G.Nodes, _, dout *G.Node) (G.Nodes, error) {
		dy, err := splitHeads(dout, h)
		return G.Nodes{dy}, err
	}
	return k.apply(y)
}

// sgemm is C = op(A)·op(B) on row-major matrices through gorgonia's BLAS (OpenBLAS in panels, or
// gonum's pure-Go kernels).
func sgemm(tA, tB bool, m, n, k int, a, b, c []float32) {
	ta, tb, lda, ldb := blas.NoTrans, blas.NoTrans, k, n
	if tA {
		ta, lda = blas.Trans, m
	}
	if tB {
		tb, ldb = blas.Trans, k
	}
	G.WhichBLAS().Sgemm(ta, tb, m, n, k, 1, a, lda, b, ldb, 0, c, n)
}

// bmmFlopsPerTask is the work (2·m·n·k summed over matrices) below which a batched product runs on
// one goroutine.
const bmmFlopsPerTask = 1 << 20

// bmm is the batched product C[i] = op(A[i])·op(B[i]) of a [batch, ·, ·] and b [batch, ·, ·], or
// the product of two matrices, each matrix by one BLAS call (op(A) = Aᵀ when tA, op(B) = Bᵀ when tB),
// without materialising a transpose. Large batches are cut into runs of consecutive matrices whose length
// depends only on the shapes, computed concurrently: the same results on any number of cores.
func bmm(a, b *G.Node, tA, tB bool) (*G.Node, error) {
	// Two matrices are a batch of one.
	d := a.Dims()
	as, bs := a.Shape(), b.Shape()
	if (d != 2 && d != 3) || b.Dims() != d {
		return nil, fmt.Errorf("%w: product of %v and %v, want two matrices or two batches of them", ErrGraph, as, bs)
	}
	batch, ba := 1, 1
	if d == 3 {
		batch, ba = as[0], bs[0]
		as, bs = as[1:], bs[1:]
	}
	m, ka := as[0], as[1]
	if tA {
		m, ka = as[1], as[0]
	}
	kb, n := bs[0], bs[1]
	if tB {
		kb, n = bs[1], bs[0]
	}
	if batch != ba || ka != kb {
		return nil, fmt.Errorf("%w: product of %v (transposed %v) and %v (transposed %v)", ErrGraph, a.Shape(), tA, b.Shape(), tB)
	}
	outShape := tensor.Shape{m, n}
	if d == 3 {
		outShape = tensor.Shape{batch, m, n}
	}
	var out, av, bv []float32 // the operands of the current run (see kernel)
	sa, sb, sc := m*ka, ka*n, m*n
	products := func(lo, hi int) {
		for i := lo; i < hi; i++ {
			sgemm(tA, tB, m, n, ka, av[i*sa:(i+1)*sa], bv[i*sb:(i+1)*sb], out[i*sc:(i+1)*sc])
		}
	}
	per := max(1, bmmFlopsPerTask/max(1, 2*m*n*ka))
	k := &kernel{name: fmt.Sprintf("bmm(%v,%v)", tA, tB), inDims: []int{d, d}, outDims: d,
		shape: func([]tensor.Shape) (tensor.Shape, error) { return outShape.Clone(), nil },
		run: func(o []float32, _ tensor.Shape, in [][]float32, _ []tensor.Shape) {
			out, av, bv = o, in[0], in[1]
			par.Runs(batch, per, products)
		},
	}
	switch {
	case !tA && !tB: // dA = dC·Bᵀ, dB = Aᵀ·dC
		k.wrt = []bool{true, true}
		k.grad = func(in G.Nodes, _, dout *G.Node) (G.Nodes, error) {
			da, err := bmm(dout, in[1], false, true)
			if err != nil {
				return nil, err
			}
			db, err := bmm(in[0], dout, true, false)
			return G.Nodes{da, db}, err
		}
	case !tA && tB: // C = A·Bᵀ: dA = dC·B, dB = dCᵀ·A
		k.wrt = []bool{true, true}
		k.grad = func(in G.Nodes, _, dout *G.Node) (G.Nodes, error) {
			da, err := bmm(dout, in[1], false, false)
			if err != nil {
				return nil, err
			}
			db, err := bmm(dout, in[0], true, false)
			return G.Nodes{da, db}, err
		}
	}
	return k.apply(a, b)
}

// elemsPerTask is the number of elements an elementwise kernel gives one goroutine.
const elemsPerTask = 1 << 14

// rowsPerTask and colsPerTask are the rows (or columns) of a matrix with cols columns (or rows) a
// row-wise (or column-wise) kernel gives one goroutine: about elemsPerTask elements.
func rowsPerTask(cols int) int { return max(1, elemsPerTask/max(1, cols)) }
func colsPerTask(rows int) int { return max(16, elemsPerTask/max(1, rows)) }
