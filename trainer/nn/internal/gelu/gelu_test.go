package gelu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAsmMatchesGo: where the loops run on AVX, they give the Go loops' bits, on every
// length (the tail of 1–7 elements included) and on values across and beyond tanh's clamp.
func TestAsmMatchesGo(t *testing.T) {
	if !useAsm {
		t.Skip("the Go loops run here")
	}
	r := rand.New(rand.NewPCG(3, 4))
	edges := []float32{0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, 1e-7, 3, -3, 5.5, -5.5, 6, -6, 12, -12, 1e4, -1e4,
		float32(math.Inf(1)), float32(math.Inf(-1)), math.MaxFloat32, -math.MaxFloat32, float32(math.NaN())}
	for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 100, 1027} {
		x, th, dy := make([]float32, n), make([]float32, n), make([]float32, n)
		for i := range x {
			if i < len(edges) && n > 100 {
				x[i] = edges[i]
			} else {
				x[i] = float32(r.NormFloat64() * 4)
			}
			dy[i] = float32(r.NormFloat64())
		}
		outA, thA, outG, thG := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
		Forward(outA, thA, x)
		ForwardGo(outG, thG, x)
		outN := make([]float32, n)
		Forward(outN, nil, x)
		for i := range x {
			if !sameBits(outA[i], outG[i]) || !sameBits(thA[i], thG[i]) || !sameBits(outN[i], outG[i]) {
				t.Fatalf("n=%d, gelu(%v): AVX %v (tanh %v), Go %v (tanh %v)", n, x[i], outA[i], thA[i], outG[i], thG[i])
			}
		}
		copy(th, thG)
		Backward(outA, x, th, dy)
		BackwardGo(outG, x, th, dy)
		for i := range x {
			if !sameBits(outA[i], outG[i]) {
				t.Fatalf("n=%d, gelu'(%v)·%v: AVX %v, Go %v", n, x[i], dy[i], outA[i], outG[i])
			}
		}
	}
}

// sameBits is bit equality, any NaN equal to any NaN.
func sameBits(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b)
}

func TestTanh(t *testing.T) {
	// Absolute and relative error against float64 on a fine grid through the whole curve, and on
	// every float32 near 0 down to 1e-30 (where 1 − 2/(e^{2x} + 1) loses all its digits).
	var worstAbs, worstRel float64
	check := func(x float32) {
		got, want := float64(Tanh(x)), math.Tanh(float64(x))
		d := math.Abs(got - want)
		worstAbs = max(worstAbs, d)
		if want != 0 {
			worstRel = max(worstRel, d/math.Abs(want))
		}
	}
	for x := -12.0; x <= 12; x += 0.0000913 {
		check(float32(x))
	}
	for x := float32(1e-30); x < 1; x *= 1.0001 {
		check(x)
		check(-x)
	}
	if worstAbs > 4e-7 || worstRel > 4e-7 {
		t.Errorf("Tanh worst error %.3g absolute, %.3g relative, want ≤ 4e-7", worstAbs, worstRel)
	}
	for x := float32(0); x < 9; x += 0.0173 {
		if Tanh(-x) != -Tanh(x) {
			t.Fatalf("Tanh(−%v) = %v, −Tanh(%v) = %v", x, Tanh(-x), x, -Tanh(x))
		}
	}
	inf := float32(math.Inf(1))
	for _, tc := range []struct{ x, want float32 }{{0, 0}, {Clamp, 1}, {9, 1}, {-20, -1}, {inf, 1}, {-inf, -1}} {
		if got := Tanh(tc.x); got != tc.want {
			t.Errorf("Tanh(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
	if got := Tanh(float32(math.NaN())); got == got {
		t.Errorf("Tanh(NaN) = %v, want NaN", got)
	}
}
