package compress

import (
	"math"
	"math/bits"
	"slices"
)

// Top-k payload: the kept offsets of every chunk, each in w = bits.Len(Chunk-1)
// bits, bit-packed LSB-first over all chunks in order (ceil(K·w/8) bytes, the
// unused bits of the last byte zero), then the value-stage payload of the K
// kept values in index order. Chunk c of m values keeps k(m) = max(1,
// min(m, ceil(Fraction·m))) values, so K and every chunk's place in the
// stream follow from the element count alone: chunks can be coded or decoded
// independently (in parallel by a caller splitting the work).

// topkK returns the number of values kept from a chunk of m values.
func topkK(f float64, m int) int {
	if m == 0 {
		return 0
	}
	return max(1, min(m, int(math.Ceil(f*float64(m)))))
}

// topkCount returns K, the number of values kept from n values.
func topkCount(s *Setting, n int) int {
	k := (n / s.Chunk) * topkK(s.Fraction, s.Chunk)
	if r := n % s.Chunk; r > 0 {
		k += topkK(s.Fraction, r)
	}
	return k
}

func idxWidth(chunk int) int { return bits.Len(uint(chunk - 1)) }

// topkSize returns the top-k payload size for n values.
func topkSize(s *Setting, n int) int {
	k := topkCount(s, n)
	return (k*idxWidth(s.Chunk)+7)/8 + valueSize(s, k)
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

// appendTopK appends the top-k payload of x. It returns ok = false if x
// holds a NaN or ±Inf (the check is folded into the selection pass).
//
// Reference: per chunk, keep the k values of largest magnitude, ties broken
// by smaller index: sort indices by (|x[i]| descending, i ascending), take
// the first k, emit them in increasing index order.
func (c *Codec) appendTopK(dst []byte, x []float32, seed uint64) ([]byte, bool) {
	s := &c.set
	n, C := len(x), s.Chunk
	K := topkCount(s, n)
	w := uint(idxWidth(C))
	start := len(dst)
	dst, idx := grow(dst, (K*int(w)+7)/8)
	bw := bitWriter{buf: idx}
	vals := slices.Grow(c.vals[:0], K)
	if m := min(n, C); cap(c.candIdx) < m {
		c.candIdx = make([]int32, m)
		c.candMag = make([]uint32, m)
		c.tmp = make([]uint32, m)
	}
	for at := 0; at < n; at += C {
		chunk := x[at:min(n, at+C)]
		var ok bool
		if vals, ok = c.selectChunk(vals, &bw, w, chunk, topkK(s.Fraction, len(chunk))); !ok {
			return dst[:start], false
		}
	}
	bw.flush()
	c.vals = vals
	return encodeValues(dst, vals, s, seed, &c.q), true
}

// Sampling parameters of selectChunk.
const (
	topkSample    = 256 // values sampled per chunk to pick a candidate threshold
	topkMinSample = 4 * topkSample
)

// selectChunk appends the k largest-magnitude values of chunk to vals and
// their offsets to bw, in index order. ok is false if chunk holds a NaN or
// ±Inf.
//
// It is exact, and O(m) with a small constant: a candidate threshold t₀ is
// taken from an evenly spaced sample (its order statistic expected to leave
// about 2k+ values above it), one pass collects every value with |x| ≥ t₀
// in index order, and quickselect on those candidates finds the k-th largest
// magnitude t. Every value ≥ t is a candidate, so the result is that of the
// reference; if fewer than k candidates turn up, all values are candidates.
func (c *Codec) selectChunk(vals []float32, bw *bitWriter, w uint, chunk []float32, k int) ([]float32, bool) {
	m := len(chunk)
	if k == m {
		if firstNonFinite(chunk) >= 0 {
			return vals, false
		}
		for i, v := range chunk {
			bw.write(uint64(i), w)
			vals = append(vals, v)
		}
		return vals, true
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
			a := math.Float32bits(v) & 0x7fffffff
			ci[nc], cm[nc] = int32(i), a
			if a >= t0 {
				nc++
			}
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
		return vals, false // a non-finite value is always among the candidates
	}
	need := k
	for _, v := range tmp[nc-k:] {
		if v > t {
			need--
		}
	}
	// need = how many magnitudes equal to t to keep, the first ones by index.
	for j, a := range cm {
		if a > t || (a == t && need > 0) {
			if a == t {
				need--
			}
			bw.write(uint64(ci[j]), w)
			vals = append(vals, chunk[ci[j]])
		}
	}
	return vals, true
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
	K := topkCount(s, n)
	w := uint(idxWidth(C))
	nidx := (K*int(w) + 7) / 8
	if cap(c.vals) < K {
		c.vals = make([]float32, K)
	}
	vals := c.vals[:K]
	if err := decodeValues(vals, payload[nidx:], s); err != nil {
		return err
	}
	if tail := uint(K*int(w)) % 8; tail != 0 && payload[nidx-1]>>tail != 0 {
		return corruptf("nonzero padding bits after the last top-k index")
	}
	br := bitReader{buf: payload[:nidx]}
	vi := 0
	for start := 0; start < n; start += C {
		m := min(C, n-start)
		k := topkK(s.Fraction, m)
		prev := -1
		for range k {
			i := int(br.read(w))
			if i <= prev || i >= m {
				return corruptf("top-k chunk at %d: index %d after %d, chunk length %d", start, i, prev, m)
			}
			out[start+i] = vals[vi]
			vi++
			prev = i
		}
	}
	return nil
}
