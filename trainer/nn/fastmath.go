package nn

import "math"

// Single-precision exp and tanh for the fused kernels: Cephes' expf polynomial (relative error
// about 2e-7 over the whole range, against 5 ns a call for chewxy/math32's port of Go's float64
// algorithm), and a rational tanh. Pure Go in a fixed order: the same bits on every machine.

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

// tanhClamp is where the rational tanh below reaches 1 in float32; it is evaluated on
// [−tanhClamp, tanhClamp] and is ±1 beyond.
const tanhClamp = 7.90531110763549805

// The rational approximation of tanh on [−tanhClamp, tanhClamp] (Eigen's generic_fast_tanh_float):
// x·P(x²)/Q(x²) with P of degree 6 and Q of degree 3 in x². Absolute and relative error below
// 4e-7 everywhere (TestFastTanh), against 1e-3 relative near 0 for 1 − 2/(e^{2x} + 1).
const (
	tanhP13 = -2.76076847742355e-16
	tanhP11 = 2.00018790482477e-13
	tanhP9  = -8.60467152213735e-11
	tanhP7  = 5.12229709037114e-08
	tanhP5  = 1.48572235717979e-05
	tanhP3  = 6.37261928875436e-04
	tanhP1  = 4.89352455891786e-03
	tanhQ6  = 1.19825839466702e-06
	tanhQ4  = 1.18534705686654e-04
	tanhQ2  = 2.26843463243900e-03
	tanhQ0  = 4.89352518554385e-03
)

// fastTanh returns tanh(x): a rational function of x, odd, ±1 beyond ±tanhClamp, NaN for NaN. No
// exp, one division and no branch but the clamp, so a loop over it runs at the speed of its
// multiplications (the GELU kernels inline the same expression).
func fastTanh(x float32) float32 {
	if x > tanhClamp {
		x = tanhClamp
	} else if x < -tanhClamp {
		x = -tanhClamp
	}
	return tanhRational(x)
}

// tanhRational is the approximation on [−tanhClamp, tanhClamp], unclamped.
func tanhRational(x float32) float32 {
	x2 := x * x
	p := tanhP13*x2 + tanhP11
	p = p*x2 + tanhP9
	p = p*x2 + tanhP7
	p = p*x2 + tanhP5
	p = p*x2 + tanhP3
	p = p*x2 + tanhP1
	q := tanhQ6*x2 + tanhQ4
	q = q*x2 + tanhQ2
	q = q*x2 + tanhQ0
	return x * p / q
}
