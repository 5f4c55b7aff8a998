// Package expf holds the single-precision exp of package nn's softmax kernels: Cephes' expf
// polynomial (relative error about 2e-7 over the whole range), one element at a time (Exp) and over
// slices (Shifted).
//
// On amd64 with AVX2 Shifted runs eight elements at a time (expf_amd64.s), on the operations of
// Exp in the same order, its branches as masks and without fused multiply-adds. IEEE 754 rounds
// each operation exactly whatever the vector width, so both give the same bits on every machine
// (TestAsmMatchesGo). Exp rounds every product explicitly, so that the compiler fuses no
// multiply-add into it on any GOAMD64 level. It lives in a package of its own because package nn
// uses cgo (OpenBLAS), and a cgo package cannot hold Go assembly.
package expf

import "math"

const (
	hi    = 88.72283905206835 // ln(MaxFloat32)
	lo    = -87.33654475055310
	log2e = 1.44269504088896341
	c1    = 0.693359375
	c2    = -2.12194440e-4
	p0    = 1.9875691500e-4
	p1    = 1.3981999507e-3
	p2    = 8.3334519073e-3
	p3    = 4.1665795894e-2
	p4    = 1.6666665459e-1
	p5    = 5.0000001201e-1
)

// Exp returns e^x: 0 below −87.3 (where e^x is subnormal), +Inf above 88.7, NaN for NaN.
func Exp(x float32) float32 {
	if x > hi {
		return float32(math.Inf(1))
	}
	if x < lo {
		return 0
	}
	if x != x {
		return x
	}
	// x = n·ln2 + r, |r| ≤ ln2/2; e^x = 2ⁿ·e^r.
	t := float32(log2e * x)
	if t < 0 {
		t -= 0.5
	} else {
		t += 0.5
	}
	n := float32(int32(t)) // round to nearest (truncation after ±0.5)
	r := float32(x-float32(n*c1)) - float32(n*c2)
	p := float32(p0)
	p = float32(p*r) + p1
	p = float32(p*r) + p2
	p = float32(p*r) + p3
	p = float32(p*r) + p4
	p = float32(p*r) + p5
	y := float32(float32(float32(p*r)*r)+r) + 1
	ni := int32(n)
	if ni > 127 { // e^x just below MaxFloat32 with r < 0: scale in two steps
		return float32(y*2) * math.Float32frombits(uint32(ni-1+127)<<23)
	}
	return y * math.Float32frombits(uint32(ni+127)<<23)
}

// Shifted writes Exp(scale·(x[i] − shift)) into out[i] for every i of x (out is at least as long).
// A scale of 1 and a shift of 0 give Exp(x[i]) itself: both operations are exact then.
func Shifted(out, x []float32, shift, scale float32) {
	out = out[:len(x)]
	if !useAsm {
		ShiftedGo(out, x, shift, scale)
		return
	}
	n8 := len(x) &^ 7
	if n8 > 0 {
		shiftedAVX(&out[0], &x[0], n8, shift, scale, &vec)
	}
	if r := len(x) - n8; r > 0 { // the last 1–7 elements through the same loop, padded to 8
		var xb, ob [8]float32
		copy(xb[:], x[n8:])
		shiftedAVX(&ob[0], &xb[0], 8, shift, scale, &vec)
		copy(out[n8:], ob[:r])
	}
}

// ShiftedGo is Shifted's loop in Go.
func ShiftedGo(out, x []float32, shift, scale float32) {
	out = out[:len(x)]
	for i, v := range x {
		out[i] = Exp(scale * (v - shift))
	}
}

// The constants of the AVX loop, in the order it reads them (expf_amd64.s).
const (
	kHi = iota
	kLo
	kLog2e
	kSign
	kHalf
	kC1
	kC2
	kP0
	kP1
	kP2
	kP3
	kP4
	kP5
	kOne
	k127
	kBias // the int32 127, as bits
	kInf
	nk
)

// vec holds each constant of the loop 8 times, as the AVX loop loads them. Each is the float32
// the Go code rounds its constant to.
var vec = func() (k [nk][8]float32) {
	v := [nk]float32{kHi: hi, kLo: lo, kLog2e: log2e, kSign: math.Float32frombits(1 << 31), kHalf: 0.5,
		kC1: c1, kC2: c2, kP0: p0, kP1: p1, kP2: p2, kP3: p3, kP4: p4, kP5: p5, kOne: 1, k127: 127,
		kBias: math.Float32frombits(127), kInf: float32(math.Inf(1))}
	for i, x := range v {
		for j := range k[i] {
			k[i][j] = x
		}
	}
	return k
}()
