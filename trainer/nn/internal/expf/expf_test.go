package expf

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExp: relative error against float64 across the range, and the values outside it.
func TestExp(t *testing.T) {
	worst := 0.0
	for x := -87.0; x <= 88.5; x += 0.0137 {
		got, want := float64(Exp(float32(x))), math.Exp(float64(float32(x)))
		if rel := math.Abs(got-want) / want; rel > worst {
			worst = rel
		}
	}
	if worst > 5e-7 {
		t.Errorf("Exp worst relative error %.3g, want ≤ 5e-7", worst)
	}
	for _, tc := range []struct{ x, want float32 }{{-100, 0}, {0, 1}, {float32(math.Inf(-1)), 0}, {100, float32(math.Inf(1))}} {
		if got := Exp(tc.x); got != tc.want {
			t.Errorf("Exp(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
	if !math.IsNaN(float64(Exp(float32(math.NaN())))) {
		t.Error("Exp(NaN) is not NaN")
	}
	if e, w := Exp(88.7), math.Exp(float64(float32(88.7))); math.IsInf(float64(e), 0) || math.Abs(float64(e)-w)/w > 1e-6 {
		t.Errorf("Exp(88.7) = %v, want %v", e, w)
	}
}

// TestAsmMatchesGo: where Shifted runs on AVX2 it gives the Go loop's bits, on every length (the
// tail of 1–7 elements included), with and without a shift and scale, on values across the range,
// at its edges (where the scaling takes two steps) and beyond it.
func TestAsmMatchesGo(t *testing.T) {
	if !useAsm {
		t.Skip("the Go loop runs here")
	}
	r := rand.New(rand.NewPCG(5, 6))
	edges := []float32{0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, 1e-7, -1e-7, 0.3465736, -0.3465736,
		88.3, 88.5, 88.6, 88.7, 88.72, 88.7228, 88.72284, 88.8, -87.3, -87.33, -87.3365, -87.34, -87.4,
		-103, 1e4, -1e4, float32(math.Inf(1)), float32(math.Inf(-1)), math.MaxFloat32, -math.MaxFloat32,
		float32(math.NaN())}
	for _, tc := range []struct {
		name         string
		shift, scale float32
	}{{"plain", 0, 1}, {"shifted", 3.5, 1}, {"scaled", -2, 0.17677669}} {
		for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 100, 1027} {
			x := make([]float32, n)
			for i := range x {
				if i < len(edges) && n > 100 {
					x[i] = edges[i]
				} else {
					x[i] = float32(r.NormFloat64() * 30)
				}
			}
			got, want := make([]float32, n), make([]float32, n)
			Shifted(got, x, tc.shift, tc.scale)
			ShiftedGo(want, x, tc.shift, tc.scale)
			for i := range x {
				if !sameBits(got[i], want[i]) {
					t.Fatalf("%s n=%d: Exp(%v·(%v − %v)): AVX2 %v, Go %v", tc.name, n, tc.scale, x[i], tc.shift, got[i], want[i])
				}
			}
		}
	}
	// Every float32 of a dense grid over the range and a little beyond.
	var x []float32
	for v := float32(-90); v <= 90; v += 1.0 / 1024 {
		x = append(x, v)
	}
	got, want := make([]float32, len(x)), make([]float32, len(x))
	Shifted(got, x, 0, 1)
	ShiftedGo(want, x, 0, 1)
	for i := range x {
		if !sameBits(got[i], want[i]) {
			t.Fatalf("Exp(%v): AVX2 %v, Go %v", x[i], got[i], want[i])
		}
	}
}

// sameBits is bit equality, any NaN equal to any NaN.
func sameBits(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b)
}

func BenchmarkShifted(b *testing.B) {
	x, out := make([]float32, 4096), make([]float32, 4096)
	for i := range x {
		x[i] = float32(i%97) * -0.3
	}
	for _, tc := range []struct {
		name string
		f    func(out, x []float32, shift, scale float32)
	}{{"dispatch", Shifted}, {"go", ShiftedGo}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				tc.f(out, x, 0.5, 0.125)
			}
			b.ReportMetric(float64(b.N*len(x))/b.Elapsed().Seconds()/1e6, "Melems/s")
		})
	}
}
