package compress

import (
	"encoding/binary"
	"math"
	"sync"
)

// The value stage: codes a dense []float32 (already known to be finite) in
// one of the Formats. Payload layouts (all little-endian):
//
//	fp32: n × float32
//	fp16: n × binary16
//	bf16: n × bfloat16 (the high half of the float32)
//	q8/q4/q2: ceil(n/B) × float32 block absmax, then the codes of all n
//	    values packed LSB-first (q8: one int8 per value; q4: two per byte,
//	    code+7 in 0..14; q2: four per byte, code+1 in 0..2), the final byte's
//	    unused bits zero.
//	q1: ceil(n/B) × float32 block scale a = mean |x| of the block, then one
//	    bit per value packed LSB-first (1: the value is negative), the final
//	    byte's unused bits zero. A value decodes as ±a.

// levels returns L, the largest code magnitude of a quantized format.
func levels(f Format) int {
	switch f {
	case Q8:
		return 127
	case Q4:
		return 7
	case Q2:
		return 1
	}
	return 0
}

// valueSize returns the payload size of n values; s is normalized.
func valueSize(s *Setting, n int) int {
	switch s.Format {
	case FP32:
		return 4 * n
	case FP16, BF16:
		return 2 * n
	}
	nb := (n + s.Block - 1) / s.Block
	return 4*nb + (n*s.Format.Bits()+7)/8
}

// encodeValues appends the value-stage payload of x (all finite) to dst.
// s is normalized; seed drives stochastic rounding; scratch is reused.
func encodeValues(dst []byte, x []float32, s *Setting, seed uint64, scratch *[]int8) []byte {
	switch s.Format {
	case FP32:
		return appendFP32(dst, x)
	case FP16:
		return appendFP16(dst, x)
	case BF16:
		return appendBF16(dst, x)
	}
	dst, _ = appendQuant(dst, x, s, seed, scratch) // callers pass finite x
	return dst
}

// decodeValues decodes src (exactly valueSize(s, len(dst)) bytes) into dst.
func decodeValues(dst []float32, src []byte, s *Setting) error {
	switch s.Format {
	case FP32:
		return decodeFP32(dst, src)
	case FP16:
		return decodeFP16(dst, src)
	case BF16:
		return decodeBF16(dst, src)
	}
	return decodeQuant(dst, src, s)
}

func grow(dst []byte, n int) ([]byte, []byte) {
	l := len(dst)
	if cap(dst)-l < n {
		nd := make([]byte, l, l+n+l/4)
		copy(nd, dst)
		dst = nd
	}
	dst = dst[:l+n]
	return dst, dst[l:]
}

// appendFP32 appends x as little-endian float32.
//
// Reference loop: for _, v := range x { dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v)) }
func appendFP32(dst []byte, x []float32) []byte {
	dst, out := grow(dst, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
	}
	return dst
}

func decodeFP32(dst []float32, src []byte) error {
	src = src[:4*len(dst)]
	for i := range dst {
		b := binary.LittleEndian.Uint32(src[4*i:])
		if b&0x7f800000 == 0x7f800000 {
			return corruptf("fp32 value %d is NaN or Inf", i)
		}
		dst[i] = math.Float32frombits(b)
	}
	return nil
}

// f32ToF16 converts a finite float32 to binary16 with round-to-nearest-even,
// saturating magnitudes above 65504 to ±65504 (never ±Inf).
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	a := b & 0x7fffffff
	switch {
	case a >= 0x477fe000: // ≥ 65504: saturate
		return sign | 0x7bff
	case a < 0x38800000: // below 2^-14: binary16 subnormal (or zero)
		// a·2^24 is exact; rounding it to an integer gives the subnormal code,
		// and 1024 is the code of the smallest normal, as it should be.
		v := float64(math.Float32frombits(a)) * (1 << 24)
		return sign | uint16(rne(v))
	}
	a -= 112 << 23 // rebias exponent 127 → 15
	a += 0xfff + (a>>13)&1
	return sign | uint16(a>>13)
}

// f16ToF32 converts binary16 to float32 exactly; ok is false for Inf/NaN codes.
func f16ToF32(h uint16) (f float32, ok bool) {
	sign := uint32(h&0x8000) << 16
	e := uint32(h>>10) & 0x1f
	m := uint32(h & 0x3ff)
	switch e {
	case 0x1f:
		return 0, false
	case 0:
		f = float32(m) * (1.0 / (1 << 24))
		return math.Float32frombits(math.Float32bits(f) | sign), true
	}
	return math.Float32frombits(sign | (e+112)<<23 | m<<13), true
}

var (
	f16Once  sync.Once
	f16Table []float32 // f16Table[h] = f16ToF32(h); NaN for invalid codes
)

func f16Lookup() []float32 {
	f16Once.Do(func() {
		f16Table = make([]float32, 1<<16)
		for h := range f16Table {
			f, ok := f16ToF32(uint16(h))
			if !ok {
				f = float32(math.NaN())
			}
			f16Table[h] = f
		}
	})
	return f16Table
}

// appendFP16 appends x as little-endian binary16.
//
// Reference loop: for _, v := range x { dst = binary.LittleEndian.AppendUint16(dst, f32ToF16(v)) }
func appendFP16(dst []byte, x []float32) []byte {
	dst, out := grow(dst, 2*len(x))
	for i, v := range x {
		b := math.Float32bits(v)
		a := b & 0x7fffffff
		var h uint16
		if a-0x38800000 < 0x477fe000-0x38800000 { // binary16 normal range: inline path of f32ToF16
			a -= 112 << 23
			a += 0xfff + (a>>13)&1
			h = uint16(b>>16)&0x8000 | uint16(a>>13)
		} else {
			h = f32ToF16(v)
		}
		binary.LittleEndian.PutUint16(out[2*i:], h)
	}
	return dst
}

func decodeFP16(dst []float32, src []byte) error {
	t := f16Lookup()
	src = src[:2*len(dst)]
	for i := range dst {
		h := binary.LittleEndian.Uint16(src[2*i:])
		if h&0x7c00 == 0x7c00 {
			return corruptf("fp16 value %d is NaN or Inf", i)
		}
		dst[i] = t[h]
	}
	return nil
}

// f32ToBF16 converts a finite float32 to bfloat16 with round-to-nearest-even,
// saturating to ±max bfloat16 (never ±Inf).
func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f7f7fff { // would round to Inf
		return uint16(b>>16)&0x8000 | 0x7f7f
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// appendBF16 appends x as little-endian bfloat16.
//
// Reference loop: for _, v := range x { dst = binary.LittleEndian.AppendUint16(dst, f32ToBF16(v)) }
func appendBF16(dst []byte, x []float32) []byte {
	dst, out := grow(dst, 2*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint16(out[2*i:], f32ToBF16(v))
	}
	return dst
}

func decodeBF16(dst []float32, src []byte) error {
	src = src[:2*len(dst)]
	for i := range dst {
		h := binary.LittleEndian.Uint16(src[2*i:])
		if h&0x7f80 == 0x7f80 {
			return corruptf("bf16 value %d is NaN or Inf", i)
		}
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
	return nil
}

// rms returns sqrt(Σx²/n) accumulated in float64 in index order.
func rms(x []float32) float64 {
	if len(x) == 0 {
		return 0
	}
	var s float64
	for _, v := range x {
		s += float64(float64(v) * float64(v))
	}
	return math.Sqrt(s / float64(len(x)))
}

// splitmix64 is the SplitMix64 output function.
func splitmix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

const golden = 0x9e3779b97f4a7c15

// appendQuant appends the blockwise-quantized payload of x. It returns
// ok = false (and dst truncated to its original length) if x holds a NaN or
// ±Inf: the finiteness check is folded into the absmax pass.
//
// Reference loop, per block of B values with absmax a (after clipping to
// ±c = Clip·rms(x) when Clip > 0) and L = levels(Format):
//
//	scale[b] = a
//	for j := range block { q[j] = roundToEven(clamp(x[j], -c, c) * (L / a)) }  // q = 0 when a = 0
//
// with floor(v + u) instead of roundToEven when Stochastic: u = w·2⁻³², w
// the low then the high 32 bits of successive SplitMix64 outputs of the
// state splitmix64(seed ^ (block+1)·φ) advanced by φ (one output per two
// values). Products are
// rounded explicitly (float64(...)) so that no platform fuses them into an
// FMA: the bytes are the same on every architecture.
func appendQuant(dst []byte, x []float32, s *Setting, seed uint64, scratch *[]int8) ([]byte, bool) {
	if s.Format == Q1 {
		return appendSign(dst, x, s)
	}
	n := len(x)
	B := s.Block
	nb := (n + B - 1) / B
	bits := s.Format.Bits()
	L := float64(levels(s.Format))
	start := len(dst)
	dst, out := grow(dst, valueSize(s, n))
	scales, codes := out[:4*nb], out[4*nb:]
	clip := math.Inf(1)
	if s.Clip > 0 {
		if firstNonFinite(x) >= 0 {
			return dst[:start], false
		}
		clip = float64(float32(s.Clip * rms(x)))
	}
	if cap(*scratch) < B {
		*scratch = make([]int8, B)
	}
	q := (*scratch)[:B]
	for b := range nb {
		blk := x[b*B : min(n, (b+1)*B)]
		m := absBitsMax(blk)
		if m >= 0x7f800000 {
			return dst[:start], false
		}
		a := min(float64(math.Float32frombits(m)), clip)
		binary.LittleEndian.PutUint32(scales[4*b:], math.Float32bits(float32(a)))
		a = float64(float32(a))
		inv := 0.0
		if a > 0 {
			inv = L / a
		}
		c := codes[b*B*bits/8:]
		if !s.Stochastic && s.Clip == 0 {
			// Fast path: round to nearest even, no clipping, packed directly.
			switch bits {
			case 8:
				c = c[:len(blk)]
				for j, v := range blk {
					c[j] = byte(rne(float64(float64(v) * inv)))
				}
			case 4:
				j := 0
				for ; j+1 < len(blk); j += 2 {
					q0 := rne(float64(float64(blk[j]) * inv))
					q1 := rne(float64(float64(blk[j+1]) * inv))
					c[j/2] = byte(q0+7) | byte(q1+7)<<4
				}
				if j < len(blk) {
					c[j/2] = byte(rne(float64(float64(blk[j])*inv)) + 7)
				}
			case 2:
				j := 0
				for ; j+3 < len(blk); j += 4 {
					q0 := rne(float64(float64(blk[j]) * inv))
					q1 := rne(float64(float64(blk[j+1]) * inv))
					q2 := rne(float64(float64(blk[j+2]) * inv))
					q3 := rne(float64(float64(blk[j+3]) * inv))
					c[j/4] = byte(q0+1) | byte(q1+1)<<2 | byte(q2+1)<<4 | byte(q3+1)<<6
				}
				if j < len(blk) {
					c[j/4] = 0
				}
				for k := 0; j < len(blk); j, k = j+1, k+2 {
					c[j/4] |= byte(rne(float64(float64(blk[j])*inv))+1) << k
				}
			}
			continue
		}
		q := q[:len(blk)]
		if s.Stochastic {
			// u: 32 random bits per value, two values per SplitMix64 output.
			state := splitmix64(seed ^ uint64(b+1)*golden)
			var z uint64
			for j, v := range blk {
				if j&1 == 0 {
					state += golden
					z = splitmix64(state)
				} else {
					z >>= 32
				}
				u := float64(uint32(z)) * 0x1p-32
				f := math.Floor(float64(max(-clip, min(clip, float64(v)))*inv) + u)
				q[j] = int8(max(-L, min(L, f)))
			}
		} else {
			for j, v := range blk {
				q[j] = int8(rne(float64(max(-clip, min(clip, float64(v))) * inv)))
			}
		}
		switch bits {
		case 8:
			for j, v := range q {
				c[j] = byte(v)
			}
		case 4:
			j := 0
			for ; j+1 < len(q); j += 2 {
				c[j/2] = byte(q[j]+7) | byte(q[j+1]+7)<<4
			}
			if j < len(q) {
				c[j/2] = byte(q[j] + 7)
			}
		case 2:
			j := 0
			for ; j+3 < len(q); j += 4 {
				c[j/4] = byte(q[j]+1) | byte(q[j+1]+1)<<2 | byte(q[j+2]+1)<<4 | byte(q[j+3]+1)<<6
			}
			if j < len(q) {
				c[j/4] = 0
			}
			for k := 0; j < len(q); j, k = j+1, k+2 {
				c[j/4] |= byte(q[j]+1) << k
			}
		}
	}
	return dst, true
}

// absBitsMax returns the largest |v| of x as float32 bits (a value ≥
// 0x7f800000 means x holds a NaN or ±Inf), with four independent
// accumulators to break the dependency chain.
//
// Reference loop: for _, v := range x { m = max(m, math.Float32bits(v)&0x7fffffff) }
func absBitsMax(x []float32) uint32 {
	var m0, m1, m2, m3 uint32
	j := 0
	for ; j+4 <= len(x); j += 4 {
		v := x[j : j+4 : j+4]
		m0 = max(m0, math.Float32bits(v[0])&0x7fffffff)
		m1 = max(m1, math.Float32bits(v[1])&0x7fffffff)
		m2 = max(m2, math.Float32bits(v[2])&0x7fffffff)
		m3 = max(m3, math.Float32bits(v[3])&0x7fffffff)
	}
	for ; j < len(x); j++ {
		m0 = max(m0, math.Float32bits(x[j])&0x7fffffff)
	}
	return max(m0, m1, m2, m3)
}

// rne rounds f (|f| < 2^31) to the nearest integer, ties to even, by the
// 1.5·2^52 trick: adding it leaves the rounded integer in the low mantissa bits.
func rne(f float64) int32 {
	return int32(uint32(math.Float64bits(f + 0x1.8p52)))
}

// Tables of bytes holding an invalid code (q4: a nibble 15; q2: a pair 3).
var invalid4, invalid2 [256]bool

func init() {
	for b := range 256 {
		invalid4[b] = b&0xf == 0xf || b>>4 == 0xf
		invalid2[b] = b&3 == 3 || b>>2&3 == 3 || b>>4&3 == 3 || b>>6 == 3
	}
}

// decodeQuant decodes a quantized payload. A value decodes as
// float32(float64(q) · float64(a)/L): the code ±L decodes to exactly ±a, so
// re-encoding a decoded block reproduces its scale and codes.
func decodeQuant(dst []float32, src []byte, s *Setting) error {
	if s.Format == Q1 {
		return decodeSign(dst, src, s)
	}
	n := len(dst)
	B := s.Block
	nb := (n + B - 1) / B
	bits := s.Format.Bits()
	L := float64(levels(s.Format))
	scales, codes := src[:4*nb], src[4*nb:]
	if tail := n * bits % 8; tail != 0 && codes[len(codes)-1]>>tail != 0 {
		return corruptf("nonzero padding bits after the last code")
	}
	for b := range nb {
		ab := binary.LittleEndian.Uint32(scales[4*b:])
		if ab&0x80000000 != 0 || ab&0x7f800000 == 0x7f800000 {
			return corruptf("block %d: scale %v is negative, NaN or Inf", b, math.Float32frombits(ab))
		}
		sc := float64(math.Float32frombits(ab)) / L
		blk := dst[b*B : min(n, (b+1)*B)]
		c := codes[b*B*bits/8:]
		switch bits {
		case 8:
			c = c[:len(blk)]
			for j, v := range c {
				if v == 0x80 {
					return corruptf("block %d: q8 code -128", b)
				}
				blk[j] = float32(float64(int8(v)) * sc)
			}
		case 4:
			var lut [16]float32
			for k := range 15 {
				lut[k] = float32(float64(k-7) * sc)
			}
			c = c[:(len(blk)+1)/2]
			for j, v := range c {
				if invalid4[v] {
					return corruptf("block %d: q4 code 15", b)
				}
				blk[2*j] = lut[v&15]
				if 2*j+1 < len(blk) {
					blk[2*j+1] = lut[v>>4]
				}
			}
		case 2:
			lut := [4]float32{float32(-sc), 0, float32(sc), 0}
			c = c[:(len(blk)+3)/4]
			for j, v := range c {
				if invalid2[v] {
					return corruptf("block %d: q2 code 3", b)
				}
				k := 4 * j
				if k+4 <= len(blk) {
					blk[k] = lut[v&3]
					blk[k+1] = lut[v>>2&3]
					blk[k+2] = lut[v>>4&3]
					blk[k+3] = lut[v>>6]
					continue
				}
				for ; k < len(blk); k, v = k+1, v>>2 {
					blk[k] = lut[v&3]
				}
			}
		}
	}
	return nil
}

// appendSign appends the q1 payload of x: per block of B values the scale
// a = float32(Σ|x_j| / len(block)), summed in float64 in index order, then one
// bit per value, set when x_j < 0 (−0 counts as positive). Minimizing the
// squared error of ±a over a block's signs gives exactly this a, which is
// why q1 scales by the mean and not the absmax. It returns false if x holds
// a NaN or ±Inf.
func appendSign(dst []byte, x []float32, s *Setting) ([]byte, bool) {
	n, B := len(x), s.Block
	nb := (n + B - 1) / B
	start := len(dst)
	dst, out := grow(dst, valueSize(s, n))
	scales, codes := out[:4*nb], out[4*nb:]
	clear(codes)
	for b := range nb {
		blk := x[b*B : min(n, (b+1)*B)]
		c := codes[b*B/8:] // B is a multiple of 8: every block starts a byte
		var sum float64
		var mx uint32 // largest magnitude's bits: ≥ 0x7f800000 iff some |x| is NaN or Inf
		j := 0
		for ; j+8 <= len(blk); j += 8 {
			v := blk[j : j+8 : j+8]
			var bits byte
			for k := range 8 {
				u := math.Float32bits(v[k])
				m := u & 0x7fffffff
				mx = max(mx, m)
				sum += float64(math.Float32frombits(m))
				// Set for x < 0: the sign bit of a nonzero magnitude (−0 counts as positive).
				neg := u >> 31
				if m == 0 {
					neg = 0
				}
				bits |= byte(neg) << k
			}
			c[j/8] = bits
		}
		for ; j < len(blk); j++ { // the last block's partial byte
			u := math.Float32bits(blk[j])
			m := u & 0x7fffffff
			mx = max(mx, m)
			sum += float64(math.Float32frombits(m))
			if u>>31 != 0 && m != 0 {
				c[j/8] |= 1 << (j % 8)
			}
		}
		if mx >= 0x7f800000 {
			return dst[:start], false
		}
		binary.LittleEndian.PutUint32(scales[4*b:], math.Float32bits(float32(sum/float64(len(blk)))))
	}
	return dst, true
}

// decodeSign decodes a q1 payload.
func decodeSign(dst []float32, src []byte, s *Setting) error {
	n, B := len(dst), s.Block
	nb := (n + B - 1) / B
	scales, codes := src[:4*nb], src[4*nb:]
	if tail := n % 8; tail != 0 && codes[len(codes)-1]>>tail != 0 {
		return corruptf("nonzero padding bits after the last code")
	}
	for b := range nb {
		ab := binary.LittleEndian.Uint32(scales[4*b:])
		if ab&0x80000000 != 0 || ab&0x7f800000 == 0x7f800000 {
			return corruptf("block %d: scale %v is negative, NaN or Inf", b, math.Float32frombits(ab))
		}
		blk := dst[b*B : min(n, (b+1)*B)]
		c := codes[b*B/8:]
		j := 0
		for ; j+8 <= len(blk); j += 8 {
			v, bits := blk[j:j+8:j+8], uint32(c[j/8])
			for k := range 8 {
				v[k] = math.Float32frombits(ab | (bits>>k&1)<<31)
			}
		}
		for ; j < len(blk); j++ {
			v := ab | uint32(c[j/8]>>(j%8)&1)<<31
			blk[j] = math.Float32frombits(v)
		}
	}
	return nil
}
