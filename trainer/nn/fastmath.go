package nn

import "math"

// Single-precision exp for the fused kernels: Cephes' expf polynomial (relative error about 2e-7
// over the whole range, against 5 ns a call for chewxy/math32's port of Go's float64 algorithm).
// Pure Go in a fixed order: the same bits on every machine. tanh, for GELU, is in internal/gelu.

const (
	expHi = 88.72283905206835 // ln(MaxFloat32)
	expLo = -87.33654475055310
	log2e = 1.44269504088896341
	expC1 = 0.693359375
	expC2 = -2.12194440e-4
)

// fastExp returns e^x: 0 below −87.3 (where e^x is subnormal), +Inf above 88.7.
func fastExp(x float32) float32 {
	if x > expHi {
		return float32(math.Inf(1))
	}
	if x < expLo {
		return 0
	}
	if x != x {
		return x
	}
	// x = n·ln2 + r, |r| ≤ ln2/2; e^x = 2ⁿ·e^r.
	t := log2e * x
	if t < 0 {
		t -= 0.5
	} else {
		t += 0.5
	}
	n := float32(int32(t)) // round to nearest (truncation after ±0.5)
	r := x - n*expC1 - n*expC2
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1
	ni := int32(n)
	if ni > 127 { // e^x just below MaxFloat32 with r < 0: scale in two steps
		return y * 2 * math.Float32frombits(uint32(ni-1+127)<<23)
	}
	return y * math.Float32frombits(uint32(ni+127)<<23)
}
