package nn

import (
	"math"
	"testing"
)

func TestFastExp(t *testing.T) {
	worst := 0.0
	for x := -87.0; x <= 88.5; x += 0.0137 {
		got, want := float64(fastExp(float32(x))), math.Exp(float64(float32(x)))
		if rel := math.Abs(got-want) / want; rel > worst {
			worst = rel
		}
	}
	if worst > 5e-7 {
		t.Errorf("fastExp worst relative error %.3g, want ≤ 5e-7", worst)
	}
	for _, tc := range []struct{ x, want float32 }{{-100, 0}, {0, 1}, {float32(math.Inf(-1)), 0}} {
		if got := fastExp(tc.x); got != tc.want {
			t.Errorf("fastExp(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
	if !math.IsInf(float64(fastExp(100)), 1) || !math.IsNaN(float64(fastExp(float32(math.NaN())))) {
		t.Error("fastExp: +Inf above the range and NaN for NaN")
	}
	if e, w := fastExp(88.7), math.Exp(float64(float32(88.7))); math.IsInf(float64(e), 0) || math.Abs(float64(e)-w)/w > 1e-6 {
		t.Errorf("fastExp(88.7) = %v, want %v", e, w)
	}
}

func TestFastTanh(t *testing.T) {
	// Absolute and relative error against float64 on a fine grid through the whole curve, and on
	// every float32 near 0 down to 1e-30 (where 1 − 2/(e^{2x} + 1) loses all its digits).
	var worstAbs, worstRel float64
	check := func(x float32) {
		got, want := float64(fastTanh(x)), math.Tanh(float64(x))
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
		t.Errorf("fastTanh worst error %.3g absolute, %.3g relative, want ≤ 4e-7", worstAbs, worstRel)
	}
	for x := float32(0); x < 9; x += 0.0173 {
		if fastTanh(-x) != -fastTanh(x) {
			t.Fatalf("fastTanh(−%v) = %v, −fastTanh(%v) = %v", x, fastTanh(-x), x, -fastTanh(x))
		}
	}
	inf := float32(math.Inf(1))
	for _, tc := range []struct{ x, want float32 }{{0, 0}, {tanhClamp, 1}, {9, 1}, {-20, -1}, {inf, 1}, {-inf, -1}} {
		if got := fastTanh(tc.x); got != tc.want {
			t.Errorf("fastTanh(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
	if got := fastTanh(float32(math.NaN())); got == got {
		t.Errorf("fastTanh(NaN) = %v, want NaN", got)
	}
}
