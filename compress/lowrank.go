package compress

import (
	"fmt"
	"math"
	"slices"
)

// Low-rank (PowerSGD-style) coding. For every matrix segment M (Rows×Cols,
// row-major) of the Shape with r = min(Rank, Rows, Cols), Rows, Cols ≥ 2 and
// r·(Rows+Cols) < Rows·Cols, the encoder computes
//
//	Q ← Q₀ (Cols×r: uniform in [-1, 1) from SplitMix64 seeded by (seed, segment index),
//	        or the previous round's Q when a Residual warm-starts)
//	repeat Iters times:
//	    P ← M·Q; P ← orthonormalize(P) (modified Gram-Schmidt, dots in float64)
//	    Q ← Mᵀ·P
//
// and sends P (Rows×r, row-major) and Q (Cols×r, row-major); the receiver
// rebuilds M ≈ P·Qᵀ, element (i, j) = Σ_c P[i,c]·Q[j,c] summed in c order.
// Every loop has a fixed order, so the same input, seed and warm start give
// the same bytes on every machine. P·Pᵀ·M is an orthogonal projection of M,
// so the approximation never has a larger Frobenius norm than M, but it keeps
// only r directions: the rest of M is what error feedback carries into the
// next round, and PowerSGD converges only with it (use a Residual; its warm
// start makes the power iteration progress across rounds). Values outside
// the matrix segments (and segments too small to gain) pass through.
//
// Payload: the value-stage payload of the factors F = [P₁, Q₁, P₂, Q₂, …],
// then the value-stage payload of the pass-through values in index order
// (coded separately, so their quantization blocks are those of a dense
// codec).

type lrSeg struct {
	off, rows, cols, r int
}

// planLowRank returns the segments of shape coded as factors.
func planLowRank(shape Shape, rank int) (segs []lrSeg, factors, covered int) {
	for _, g := range shape {
		r := min(rank, g.Rows, g.Cols)
		if g.Rows < 2 || g.Cols < 2 || r*(g.Rows+g.Cols) >= g.Rows*g.Cols {
			continue
		}
		segs = append(segs, lrSeg{g.Offset, g.Rows, g.Cols, r})
		factors += r * (g.Rows + g.Cols)
		covered += g.Rows * g.Cols
	}
	return segs, factors, covered
}

// lowrankCount returns the number of factor and pass-through values for n values.
func (c *Codec) lowrankCount(n int) int { return c.lrFactors + n - c.lrCovered }

// lowrankSize returns the low-rank payload size for n values.
func (c *Codec) lowrankSize(n int) int {
	return valueSize(&c.set, c.lrFactors) + valueSize(&c.set, n-c.lrCovered)
}

// appendLowRank appends the low-rank payload of x. warm, if not nil, holds
// one Q per matrix segment from the previous call and receives the new ones.
func (c *Codec) appendLowRank(dst []byte, x []float32, seed uint64, warm *[][]float32) ([]byte, error) {
	s := &c.set
	n := len(x)
	V := slices.Grow(c.vals[:0], c.lowrankCount(n))[:c.lrFactors]
	at := 0
	for si, g := range c.lrSegs {
		M := x[g.off : g.off+g.rows*g.cols]
		P := V[at : at+g.rows*g.r]
		Q := V[at+g.rows*g.r : at+g.r*(g.rows+g.cols)]
		at += g.r * (g.rows + g.cols)
		if warm != nil && len(*warm) == len(c.lrSegs) && len((*warm)[si]) == len(Q) {
			copy(Q, (*warm)[si])
		} else {
			st := splitmix64(seed ^ uint64(si+1)*golden)
			for i := range Q {
				st += golden
				Q[i] = float32(int64(splitmix64(st))>>40) * (1.0 / (1 << 23))
			}
		}
		for range s.Iters {
			matMul(P, M, Q, g.rows, g.cols, g.r)
			orthonormalize(P, g.rows, g.r)
			matTMul(Q, M, P, g.rows, g.cols, g.r)
		}
	}
	if i := firstNonFinite(V); i >= 0 {
		return dst, fmt.Errorf("%w: low-rank factor %d overflows float32", ErrNonFinite, i)
	}
	if warm != nil { // only now: a failed encode leaves the warm start as it was
		if len(*warm) != len(c.lrSegs) {
			*warm = make([][]float32, len(c.lrSegs))
		}
		at := 0
		for si, g := range c.lrSegs {
			Q := V[at+g.rows*g.r : at+g.r*(g.rows+g.cols)]
			at += g.r * (g.rows + g.cols)
			(*warm)[si] = append((*warm)[si][:0], Q...)
		}
	}
	prev := 0
	for _, g := range c.lrSegs {
		V = append(V, x[prev:g.off]...)
		prev = g.off + g.rows*g.cols
	}
	V = append(V, x[prev:]...)
	c.vals = V
	dst = encodeValues(dst, V[:c.lrFactors], s, seed, &c.q)
	return encodeValues(dst, V[c.lrFactors:], s, ^seed, &c.q), nil
}

// matMul sets P (rows×r) = M (rows×cols) · Q (cols×r), all row-major.
//
// Reference loop: P[i,c] = Σ_j M[i,j]·Q[j,c], summed in j order from 0, each
// product rounded to float32 before the add. Columns are computed four at a
// time in registers; the order of every sum is that of the reference.
func matMul(P, M, Q []float32, rows, cols, r int) {
	for i := range rows {
		row := M[i*cols : (i+1)*cols]
		c := 0
		for ; c+4 <= r; c += 4 {
			var p0, p1, p2, p3 float32
			for j, m := range row {
				q := Q[j*r+c : j*r+c+4 : j*r+c+4]
				p0 += float32(m * q[0]) // explicit rounding: no FMA on any platform
				p1 += float32(m * q[1])
				p2 += float32(m * q[2])
				p3 += float32(m * q[3])
			}
			P[i*r+c], P[i*r+c+1], P[i*r+c+2], P[i*r+c+3] = p0, p1, p2, p3
		}
		for ; c < r; c++ {
			var p0 float32
			for j, m := range row {
				p0 += float32(m * Q[j*r+c])
			}
			P[i*r+c] = p0
		}
	}
}

// matTMul sets Q (cols×r) = Mᵀ · P (rows×r).
//
// Reference loop: Q[j,c] = Σ_i M[i,j]·P[i,c], summed in i order from 0, each
// product rounded to float32 before the add.
func matTMul(Q, M, P []float32, rows, cols, r int) {
	clear(Q)
	for i := range rows {
		row := M[i*cols : (i+1)*cols]
		c := 0
		for ; c+4 <= r; c += 4 {
			p0, p1, p2, p3 := P[i*r+c], P[i*r+c+1], P[i*r+c+2], P[i*r+c+3]
			for j, m := range row {
				q := Q[j*r+c : j*r+c+4 : j*r+c+4]
				q[0] += float32(m * p0)
				q[1] += float32(m * p1)
				q[2] += float32(m * p2)
				q[3] += float32(m * p3)
			}
		}
		for ; c < r; c++ {
			p0 := P[i*r+c]
			for j, m := range row {
				Q[j*r+c] += float32(m * p0)
			}
		}
	}
}

// orthonormalize makes the r columns of P (rows×r, row-major) orthonormal by
// modified Gram-Schmidt in column order, run twice per column ("twice is
// enough") with dot products in float64. A column whose norm falls below
// 1e-4 of its norm before projection lies (up to rounding) in the span of
// the previous ones and is set to zero, as is a zero column.
func orthonormalize(P []float32, rows, r int) {
	norm := func(c int) float64 {
		var s float64
		for i := range rows {
			v := float64(P[i*r+c])
			s += float64(v * v)
		}
		return math.Sqrt(s)
	}
	for c := range r {
		n0 := norm(c)
		for range 2 {
			for d := range c {
				var dot float64
				for i := range rows {
					dot += float64(float64(P[i*r+c]) * float64(P[i*r+d]))
				}
				f := float32(dot)
				for i := range rows {
					P[i*r+c] -= float32(f * P[i*r+d])
				}
			}
		}
		nrm := norm(c)
		if !(nrm > 1e-4*n0) || !(nrm > 1e-30) || math.IsInf(nrm, 0) {
			for i := range rows {
				P[i*r+c] = 0
			}
			continue
		}
		inv := 1 / nrm
		for i := range rows {
			P[i*r+c] = float32(float64(P[i*r+c]) * inv)
		}
	}
}

// decodeLowRank decodes a low-rank payload into out (len n).
func (c *Codec) decodeLowRank(out []float32, payload []byte) error {
	n := len(out)
	nv := c.lowrankCount(n)
	if cap(c.vals) < nv {
		c.vals = make([]float32, nv)
	}
	V := c.vals[:nv]
	nf := valueSize(&c.set, c.lrFactors)
	if err := decodeValues(V[:c.lrFactors], payload[:nf], &c.set); err != nil {
		return err
	}
	if err := decodeValues(V[c.lrFactors:], payload[nf:], &c.set); err != nil {
		return err
	}
	at := 0
	prev := 0
	rest := V[c.lrFactors:]
	for _, g := range c.lrSegs {
		k := copy(out[prev:g.off], rest)
		rest = rest[k:]
		P := V[at : at+g.rows*g.r]
		Q := V[at+g.rows*g.r : at+g.r*(g.rows+g.cols)]
		at += g.r * (g.rows + g.cols)
		M := out[g.off : g.off+g.rows*g.cols]
		reconstruct(M, P, Q, g.rows, g.cols, g.r)
		if i := firstNonFinite(M); i >= 0 {
			return corruptf("low-rank segment at %d: reconstruction overflows float32 at %d", g.off, i)
		}
		prev = g.off + g.rows*g.cols
	}
	copy(out[prev:], rest)
	return nil
}

// reconstruct sets M (rows×cols) = P (rows×r) · Qᵀ (Q cols×r).
//
// Reference loop: M[i,j] = 0 + Σ_c P[i,c]·Q[j,c], summed in c order, each
// product rounded to float32 before the add.
func reconstruct(M, P, Q []float32, rows, cols, r int) {
	for i := range rows {
		p := P[i*r : (i+1)*r]
		row := M[i*cols : (i+1)*cols]
		if r == 4 {
			p0, p1, p2, p3 := p[0], p[1], p[2], p[3]
			for j := range row {
				q := Q[j*4 : j*4+4 : j*4+4]
				var s float32
				s += float32(p0 * q[0])
				s += float32(p1 * q[1])
				s += float32(p2 * q[2])
				s += float32(p3 * q[3])
				row[j] = s
			}
			continue
		}
		for j := range row {
			q := Q[j*r : j*r+r : j*r+r]
			var s float32
			for c, pv := range p {
				s += float32(pv * q[c])
			}
			row[j] = s
		}
	}
}
