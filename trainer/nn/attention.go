package nn

import (
	"fmt"
	"sync"

	"github.com/cohortlab/cohort/internal/par"
	"github.com/cohortlab/cohort/trainer/nn/internal/expf"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// attention is the causal multi-head self-attention of a GPT block as one op: from qkv [n·T, 3D]
// (q, k and v side by side, each with its NH heads of width hd side by side, h.W = 3D) to
// y [n·T, D], each position's heads side by side:
//
//	y_h = softmax(scale·q_h·k_hᵀ + causal mask)·v_h, per sequence and head h
//
// It is what splitHeads (three times), bmm, causalSoftmax, bmm and mergeHeads compute, on the same
// dense per-head copies with the same BLAS calls and the same loops, so the same bits
// (TestAttentionMatchesComposition), without their intermediate tensors: the copies of q, k and v
// and the scores live in per-goroutine scratch, one (sequence, head) at a time. Its gradient is
// one op as well, which writes dq, dk and dv straight into their columns of dqkv (the composition's
// gradient is three merges, each clearing a [n·T, 3D] tensor, and two additions of them).
//
// When the graph differentiates it, the forward pass keeps the attention weights for the
// gradient (one buffer per node, rewritten every run; the gradient op takes the forward output as
// an input, so it runs after the forward op of the same run).
func attention(qkv *G.Node, h headLayout, scale float32) (*G.Node, error) {
	D := h.NH * h.hd
	if h.W != 3*D || h.from != 0 {
		return nil, fmt.Errorf("%w: attention over %v, want q, k and v side by side from column 0", ErrGraph, h)
	}
	if s := qkv.Shape(); len(s) != 2 || s[0] != h.n*h.T || s[1] != h.W {
		return nil, fmt.Errorf("%w: attention over %v, want [%d, %d]", ErrGraph, qkv.Shape(), h.n*h.T, h.W)
	}
	T, hd := h.T, h.hd
	count := h.n * h.NH
	// Each (sequence, head) is one task's unit; tasks of several depend only on the shapes.
	per := max(1, bmmFlopsPerTask/max(1, 2*T*T*hd))
	var (
		keep bool      // the graph differentiates this node
		att  []float32 // the attention weights [n·NH, T, T] of the last forward run when keep
	)
	scratch := sync.Pool{New: func() any { return newAttnScratch(T, hd) }}
	// weights writes the attention weights of (sequence, head) bh into p [T, T], from q and k
	// gathered into sc.
	weights := func(p []float32, sc *attnScratch) {
		sgemm(false, true, T, T, hd, sc.q, sc.k, p) // scores q·kᵀ
		causalSoftmaxRows(p, p, T, scale)
	}
	var fOut, fx []float32 // the operands of the current forward run (see kernel)
	heads := func(lo, hi int) {
		out, x := fOut, fx
		sc := scratch.Get().(*attnScratch)
		defer scratch.Put(sc)
		for bh := lo; bh < hi; bh++ {
			b, hh := bh/h.NH, bh%h.NH
			h.gather(sc.q, x, b, hh, 0)
			h.gather(sc.k, x, b, hh, D)
			h.gather(sc.v, x, b, hh, 2*D)
			p := sc.s
			if keep {
				p = att[bh*T*T : (bh+1)*T*T]
			}
			weights(p, sc)
			sgemm(false, false, T, hd, T, p, sc.v, sc.y) // p·v
			h.scatter(out, sc.y, D, b, hh, 0)
		}
	}
	k := &kernel{name: fmt.Sprintf("attention%v(%g)", h, scale), inDims: []int{2}, outDims: 2, wrt: []bool{true},
		shape: func([]tensor.Shape) (tensor.Shape, error) { return tensor.Shape{h.n * T, D}, nil },
		run: func(out []float32, _ tensor.Shape, in [][]float32, _ []tensor.Shape) {
			if keep && len(att) != count*T*T {
				att = make([]float32, count*T*T)
			}
			fOut, fx = out, in[0]
			par.Runs(count, per, heads)
		},
	}
	k.grad = func(in G.Nodes, out, dout *G.Node) (G.Nodes, error) {
		keep = true
		var bOut, bx, bdy []float32 // the operands of the current run (see kernel)
		var kept bool
		gradHeads := func(lo, hi int) {
			o, x, dy := bOut, bx, bdy
			sc := scratch.Get().(*attnScratch)
			defer scratch.Put(sc)
			for bh := lo; bh < hi; bh++ {
				b, hh := bh/h.NH, bh%h.NH
				h.gather(sc.q, x, b, hh, 0)
				h.gather(sc.k, x, b, hh, D)
				h.gather(sc.v, x, b, hh, 2*D)
				hy := h
				hy.W = D
				hy.gather(sc.y, dy, b, hh, 0) // dy of this head
				p := sc.s
				if kept {
					p = att[bh*T*T : (bh+1)*T*T]
				} else {
					weights(p, sc)
				}
				dp := sc.ds
				sgemm(false, true, T, T, hd, sc.y, sc.v, dp)   // dp = dy·vᵀ
				sgemm(true, false, T, hd, T, p, sc.y, sc.dv)   // dv = pᵀ·dy
				causalSoftmaxGradRows(dp, p, dp, T, scale)     // ds, in place
				sgemm(false, false, T, hd, T, dp, sc.k, sc.dq) // dq = ds·k
				sgemm(true, false, T, hd, T, dp, sc.q, sc.dk)  // dk = dsᵀ·q
				h.scatter(o, sc.dq, h.W, b, hh, 0)
				h.scatter(o, sc.dk, h.W, b, hh, D)
				h.scatter(o, sc.dv, h.W, b, hh, 2*D)
			}
		}
		g := &kernel{name: k.name + ".grad", inDims: []int{2, 2, 2}, outDims: 2, shape: sameShape,
			run: func(o []float32, _ tensor.Shape, in [][]float32, _ []tensor.Shape) {
				bOut, bx, bdy = o, in[0], in[2]
				kept = len(att) == count*T*T // always in a graph run
				par.Runs(count, per, gradHeads)
			},
		}
		dx, err := g.apply(in[0], out, dout)
		return G.Nodes{dx}, err
	}
	return k.apply(qkv)
}

// attnScratch holds one (sequence, head)'s dense copies: q, k, v, y (the output, or dy) and the
// gradients [T, hd]; s and ds [T, T].
type attnScratch struct {
	q, k, v, y, dq, dk, dv []float32
	s, ds                  []float32
}

func newAttnScratch(T, hd int) *attnScratch {
	buf := make([]float32, 7*T*hd+2*T*T)
	next := func(n int) []float32 {
		s := buf[:n:n]
		buf = buf[n:]
		return s
	}
	sc := &attnScratch{}
	for _, f := range []*[]float32{&sc.q, &sc.k, &sc.v, &sc.y, &sc.dq, &sc.dk, &sc.dv} {
		*f = next(T * hd)
	}
	sc.s, sc.ds = next(T*T), next(T*T)
	return sc
}

// gather copies head hh of sequence b from columns [from + hh·hd, from + (hh+1)·hd) of x [n·T, W]
// into dst [T, hd] (splitHeads' copy of one matrix).
func (h headLayout) gather(dst, x []float32, b, hh, from int) {
	for t := 0; t < h.T; t++ {
		src := (b*h.T+t)*h.W + from + hh*h.hd
		copy(dst[t*h.hd:(t+1)*h.hd], x[src:src+h.hd])
	}
}

// scatter is gather's inverse into out [n·T, W] (mergeHeads' copy of one matrix).
func (h headLayout) scatter(out, src []float32, W, b, hh, from int) {
	for t := 0; t < h.T; t++ {
		dst := (b*h.T+t)*W + from + hh*h.hd
		copy(out[dst:dst+h.hd], src[t*h.hd:(t+1)*h.hd])
	}
}

// causalSoftmaxRows writes the causal softmax of the scores s [T, T] into o [T, T] (o may be s):
// row i is softmax(scale·s[i, 0..i]) over the positions j ≤ i, and 0 for j > i.
func causalSoftmaxRows(o, s []float32, T int, scale float32) {
	for i := 0; i < T; i++ {
		row := i * T
		sr, or := s[row:row+i+1], o[row:row+T]
		mx := sr[0]
		for _, v := range sr[1:] {
			mx = max(mx, v)
		}
		expf.Shifted(or, sr, mx, scale) // e^(scale·(s − max))
		var sum float64
		for _, e := range or[:len(sr)] {
			sum += float64(e)
		}
		inv := float32(1 / sum)
		for j := range sr {
			or[j] *= inv
		}
		clear(or[i+1:])
	}
}

// causalSoftmaxGradRows writes ds = scale · p ⊙ (dp − Σ_j dp ⊙ p), row by row, into o (o may be
// dp), for the weights p and their gradient dp, [T, T] each.
func causalSoftmaxGradRows(o, p, dp []float32, T int, scale float32) {
	for r := 0; r < T; r++ {
		pr, dr, or := p[r*T:(r+1)*T], dp[r*T:(r+1)*T], o[r*T:(r+1)*T]
		dr, or = dr[:len(pr)], or[:len(pr)]
		var s float64
		for j, v := range pr[:r+1] { // p is 0 beyond the diagonal: those terms add nothing
			s += float64(v * dr[j])
		}
		sf := float32(s)
		for j, v := range pr {
			or[j] = scale * v * (dr[j] - sf)
		}
	}
}
