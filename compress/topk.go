package compress

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Top-k payload: the kept offsets of every chunk, Elias-Fano coded, chunk
// after chunk in one LSB-first bit stream padded with zero bits to a whole
// byte; then the value-stage payload of the K kept values in index order.
// Chunk c of m values keeps k(m) = max(1, min(m, ceil(Fraction·m))) values.
// With the Matrices option ("/m") only the matrix segments of the Shape that
// hold at least one chunk are chunked (topkPlan); every value outside them is
// kept, without an index, and its place in the value stage is its index
// order like any kept value's.
//
// Elias-Fano code of a chunk's increasing offsets o₀ < … < o_{k−1} < m, with
// l = floor(log2(m/k)) (0 if m < 2k): first the k low parts o_i mod 2^l, l
// bits each; then the upper bit vector of U = k + ((m−1) >> l) + 1 bits, in
// which bit (o_i >> l) + i is set and every other bit is zero. A chunk thus
// takes k·l + U bits — about k·(2 + log2(m/k)), 8.6 bits per kept value at
// 1 % instead of 12 for plain offsets — and that size depends only on (m, k),
// so K, the section size and every chunk's position follow from the element
// count: chunks can be coded and decoded independently (in parallel).

// topkK returns the number of values kept from a chunk of m values.
func topkK(f float64, m int) int {
	if m == 0 {
		return 0
	}
	return max(1, min(m, int(math.Ceil(f*float64(m)))))
}

// efParams returns the Elias-Fano low-part width and upper-vector length of
// k offsets below m.
func efParams(m, k int) (l uint, upper int) {
	if k > 0 && m/k >= 2 {
		l = uint(bits.Len(uint(m/k)) - 1)
	}
	return l, k + (m-1)>>l + 1
}

// efBits returns the Elias-Fano size of a chunk of m values in bits.
func efBits(m, k int) int {
	l, upper := efParams(m, k)
	return k*int(l) + upper
}

// topkRegion is a range [start, end) of the coded vector: chunked top-k
// selection (sparse), or every value kept (dense).
type topkRegion struct {
	start, end int
	sparse     bool
}

// topkPlan returns the regions of a vector of n values (n ≥ shape.Len()), in
// order: without the Matrices option one sparse region, the whole vector;
// with it, every matrix segment of shape holding at least one chunk is
// sparse and the ranges between them are dense. Chunks start at each sparse
// region's start; the last chunk of a region may be short.
func topkPlan(s *Setting, shape Shape, n int, dst []topkRegion) []topkRegion {
	dst = dst[:0]
	if !s.Matrices {
		return append(dst, topkRegion{0, n, true})
	}
	at := 0
	for _, g := range shape {
		if g.Len() < s.Chunk {
			continue
		}
		if g.Offset > at {
			dst = append(dst, topkRegion{at, g.Offset, false})
		}
		at = g.Offset + g.Len()
		dst = append(dst, topkRegion{g.Offset, at, true})
	}
	if at < n {
		dst = append(dst, topkRegion{at, n, false})
	}
	return dst
}

// topkCount returns K, the number of kept values (dense regions included),
// and the index section size in bits, for the regions of plan.
func topkCount(s *Setting, plan []topkRegion) (k, idxBits int) {
	for _, r := range plan {
		n := r.end - r.start
		if !r.sparse {
			k += n
			continue
		}
		full := n / s.Chunk
		kc := topkK(s.Fraction, s.Chunk)
		k, idxBits = k+full*kc, idxBits+full*efBits(s.Chunk, kc)
		if rest := n % s.Chunk; rest > 0 {
			kr := topkK(s.Fraction, rest)
			k += kr
			idxBits += efBits(rest, kr)
		}
	}
	return k, idxBits
}

// topkSize returns the top-k payload size for n values.
func (c *Codec) topkSize(n int) int {
	c.plan = topkPlan(&c.set, c.cfg.Shape, n, c.plan)
	k, ib := topkCount(&c.set, c.plan)
	return (ib+7)/8 + valueSize(&c.set, k)
}

type bitWriter struct {
	buf  []byte
	pos  int
	acc  uint64
	nacc uint
}

func (w *bitWriter) write(v uint64, width uint) {
	w.acc |= v << w.nacc
	w.nacc += width
	for w.nacc >= 8 {
		w.buf[w.pos] = byte(w.acc)
		w.pos++
		w.acc >>= 8
		w.nacc -= 8
	}
}

// zeros writes n zero bits.
func (w *bitWriter) zeros(n int) {
	for n > 0 {
		c := min(n, 56)
		w.write(0, uint(c))
		n -= c
	}
}

func (w *bitWriter) flush() {
	if w.nacc > 0 {
		w.buf[w.pos] = byte(w.acc)
		w.pos++
		w.acc, w.nacc = 0, 0
	}
}

type bitReader struct {
	buf  []byte
	pos  int
	acc  uint64
	nacc uint
}

func (r *bitReader) read(width uint) uint64 {
	for r.nacc < width {
		r.acc |= uint64(r.buf[r.pos]) << r.nacc
		r.pos++
		r.nacc += 8
	}
	v := r.acc & (1<<width - 1)
	r.acc >>= width
	r.nacc -= width
	return v
}

// writeEF appends the Elias-Fano code of the increasing offsets offs < m.
func writeEF(w *bitWriter, offs []int32, m int) {
	l, upper := efParams(m, len(offs))
	if l > 0 {
		for _, o := range offs {
			w.write(uint64(o)&(1<<l-1), l)
		}
	}
	pos := 0
	for i, o := range offs {
		p := int(o>>l) + i
		w.zeros(p - pos)
		w.write(1, 1)
		pos = p + 1
	}
	w.zeros(upper - pos)
}

// readEF reads the Elias-Fano code of k offsets below m into offs (len k),
// checking that exactly k upper bits are set, the padding bits are zero and
// the offsets increase strictly and stay below m.
func readEF(r *bitReader, offs []int32, m int) error {
	k := len(offs)
	l, upper := efParams(m, k)
	for i := range offs {
		offs[i] = int32(r.read(l))
	}
	pos, i := 0, 0
	for i < k {
		if pos == upper {
			return corruptf("top-k index: %d of %d upper bits set", i, k)
		}
		if r.read(1) == 1 {
			offs[i] |= int32(pos-i) << l
			i++
		}
		pos++
	}
	for rest := upper - pos; rest > 0; {
		c := min(rest, 56)
		if r.read(uint(c)) != 0 {
			return corruptf("top-k index: more than %d upper bits set", k)
		}
		rest -= c
	}
	prev := int32(-1)
	for _, o := range offs {
		if o <= prev || int(o) >= m {
			return corruptf("top-k index %d after %d in a chunk of %d", o, prev, m)
		}
		prev = o
	}
	return nil
}

// appendTopK appends the top-k payload of x. It returns ok = false if x
// holds a NaN or ±Inf (the check is folded into the selection pass).
//
// Reference: per chunk, keep the k values of largest magnitude, ties broken
// by smaller index: sort indices by (|x[i]| descending, i ascending), take
// the first k, emit them in increasing index order.
func (c *Codec) appendTopK(dst []byte, x []float32, seed uint64) ([]byte, bool) {
	s := &c.set
	n, C := len(x), s.Chunk
	c.plan = topkPlan(s, c.cfg.Shape, n, c.plan)
	K, ib := topkCount(s, c.plan)
	start := len(dst)
	dst, idx := grow(dst, (ib+7)/8)
	bw := bitWriter{buf: idx}
	vals := slices.Grow(c.vals[:0], K)
	if m := min(n, C); cap(c.candIdx) < m {
		c.candIdx = make([]int32, m)
		c.candMag = make([]uint32, m)
		c.tmp = make([]uint32, m)
		c.offs = make([]int32, m)
	}
	for _, r := range c.plan {
		if !r.sparse {
			if firstNonFinite(x[r.start:r.end]) >= 0 {
				return dst[:start], false
			}
			vals = append(vals, x[r.start:r.end]...)
			continue
		}
		for at := r.start; at < r.end; at += C {
			chunk := x[at:min(r.end, at+C)]
			k := topkK(s.Fraction, len(chunk))
			offs := c.offs[:k]
			if !c.selectChunk(offs, chunk) {
				return dst[:start], false
			}
			writeEF(&bw, offs, len(chunk))
			for _, o := range offs {
				vals = append(vals, chunk[o])
			}
		}
	}
	bw.flush()
	c.vals = vals
	return encodeValues(dst, vals, s, seed, &c.q), true
}

// Sampling parameters of selectChunk.
const (
	topkSample    = 128 // values sampled per chunk to pick a candidate threshold
	topkMinSample = 4 * topkSample
)

// selectChunk sets offs (len k) to the offsets of the k largest-magnitude
// values of chunk, in increasing order. It returns false if chunk holds a
// NaN or ±Inf.
//
// It is exact, and O(m) with a small constant: a candidate threshold t₀ is
// taken from an evenly spaced sample (its order statistic expected to leave
// about 2k+ values above it), one pass collects every value with |x| ≥ t₀
// in index order, and quickselect on those candidates finds the k-th largest
// magnitude t. Every value ≥ t is a candidate, so the result is that of the
// reference; if fewer than k candidates turn up, all values are candidates.
func (c *Codec) selectChunk(offs []int32, chunk []float32) bool {
	m, k := len(chunk), len(offs)
	if k == m {
		for i := range offs {
			offs[i] = int32(i)
		}
		return firstNonFinite(chunk) < 0
	}
	ci, cm := c.candIdx[:m], c.candMag[:m]
	nc := 0
	if m >= topkMinSample && 8*k <= m {
		stride := m / topkSample
		sample := c.tmp[:topkSample]
		for i := range sample {
			sample[i] = math.Float32bits(chunk[i*stride]) & 0x7fffffff
		}
		r := min(topkSample, (2*k*topkSample+m-1)/m+3) // sample values at or above t₀
		t0 := selectKth(sample, topkSample-r)
		for i, v := range chunk {
			// Branch-free: always store, advance only for a candidate
			// (nc ≤ i, so the store stays in bounds).
			ci[nc] = int32(i)
			if math.Float32bits(v)&0x7fffffff >= t0 {
				nc++
			}
		}
		for j, i := range ci[:nc] {
			cm[j] = math.Float32bits(chunk[i]) & 0x7fffffff
		}
	}
	if nc < k {
		for i, v := range chunk {
			ci[i], cm[i] = int32(i), math.Float32bits(v)&0x7fffffff
		}
		nc = m
	}
	ci, cm = ci[:nc], cm[:nc]
	tmp := c.tmp[:nc]
	copy(tmp, cm)
	t := selectKth(tmp, nc-k) // tmp[nc-k:] now holds the k largest
	if slices.Max(tmp[nc-k:]) >= 0x7f800000 {
		return false // a non-finite value is always among the candidates
	}
	need := k
	for _, v := range tmp[nc-k:] {
		if v > t {
			need--
		}
	}
	// need = how many magnitudes equal to t to keep, the first ones by index.
	o := 0
	for j, a := range cm {
		if a > t || (a == t && need > 0) {
			if a == t {
				need--
			}
			offs[o] = ci[j]
			o++
		}
	}
	return true
}

// selectKth rearranges a so that a[p] is the value that would be at index p
// of the ascending sort, a[:p] ≤ a[p] ≤ a[p+1:], and returns a[p]. It is
// quickselect with a median-of-three pivot (O(len(a)) expected), falling
// back to sorting the remaining range after too many rounds, so the worst
// case is O(n log n).
func selectKth(a []uint32, p int) uint32 {
	lo, hi := 0, len(a)-1
	budget := 2*bits.Len(uint(len(a))) + 8
	for lo < hi {
		if budget == 0 {
			slices.Sort(a[lo : hi+1])
			return a[p]
		}
		budget--
		mid := lo + (hi-lo)/2
		if a[mid] < a[lo] {
			a[mid], a[lo] = a[lo], a[mid]
		}
		if a[hi] < a[lo] {
			a[hi], a[lo] = a[lo], a[hi]
		}
		if a[hi] < a[mid] {
			a[hi], a[mid] = a[mid], a[hi]
		}
		pivot := a[mid]
		i, j := lo, hi
		for i <= j {
			for a[i] < pivot {
				i++
			}
			for a[j] > pivot {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		switch {
		case p <= j:
			hi = j
		case p >= i:
			lo = i
		default:
			return a[p]
		}
	}
	return a[p]
}

// decodeTopK decodes a top-k payload (already checked to be topkSize bytes)
// into out (len n, zeroed).
func (c *Codec) decodeTopK(out []float32, payload []byte) error {
	s := &c.set
	n, C := len(out), s.Chunk
	c.plan = topkPlan(s, c.cfg.Shape, n, c.plan)
	K, ib := topkCount(s, c.plan)
	nidx := (ib + 7) / 8
	if cap(c.vals) < K {
		c.vals = make([]float32, K)
	}
	vals := c.vals[:K]
	if err := decodeValues(vals, payload[nidx:], s); err != nil {
		return err
	}
	if tail := uint(ib) % 8; tail != 0 && payload[nidx-1]>>tail != 0 {
		return corruptf("nonzero padding bits after the top-k indices")
	}
	if m := min(n, C); cap(c.offs) < m {
		c.offs = make([]int32, m)
	}
	br := bitReader{buf: payload[:nidx]}
	vi := 0
	for _, r := range c.plan {
		if !r.sparse {
			vi += copy(out[r.start:r.end], vals[vi:])
			continue
		}
		for start := r.start; start < r.end; start += C {
			m := min(C, r.end-start)
			offs := c.offs[:topkK(s.Fraction, m)]
			if err := readEF(&br, offs, m); err != nil {
				return fmt.Errorf("chunk at %d: %w", start, err)
			}
			for _, o := range offs {
				out[start+int(o)] = vals[vi]
				vi++
			}
		}
	}
	return nil
}
