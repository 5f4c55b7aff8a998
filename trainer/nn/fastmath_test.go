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
