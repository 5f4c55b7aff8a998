package colsum

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAsmMatchesGo: where the sums run on AVX2 they give the Go loops' bits, for widths with and
// without a tail of columns, strides wider than the sum and one row.
func TestAsmMatchesGo(t *testing.T) {
	if !useAsm {
		t.Skip("the Go loops run here")
	}
	r := rand.New(rand.NewPCG(8, 9))
	for _, tc := range []struct{ rows, cols, stride int }{
		{1, 16, 16}, {3, 17, 17}, {5, 15, 20}, {768, 128, 128}, {768, 512, 512}, {7, 48, 100}, {64, 33, 40},
	} {
		x, dy := make([]float32, tc.rows*tc.stride), make([]float32, tc.rows*tc.stride)
		for i := range x {
			x[i] = float32(r.NormFloat64() * math.Pow(10, float64(r.IntN(9)-4)))
			dy[i] = float32(r.NormFloat64())
		}
		stats := make([]float32, 2*tc.rows)
		for i := range tc.rows {
			stats[2*i], stats[2*i+1] = float32(r.NormFloat64()), float32(r.Float64()*3)
		}
		got, want := make([]float64, tc.cols), make([]float64, tc.cols)
		for i := range got {
			got[i] = float64(i) * 0.25 // sums add to what is there
			want[i] = got[i]
		}
		Add(got, x, tc.rows, tc.stride)
		AddGo(want, x, tc.rows, tc.stride)
		for c := range got {
			if math.Float64bits(got[c]) != math.Float64bits(want[c]) {
				t.Fatalf("%+v: Add column %d = %v, Go %v", tc, c, got[c], want[c])
			}
		}
		clear(got)
		clear(want)
		AddXhat(got, x, dy, stats, tc.rows, tc.stride)
		AddXhatGo(want, x, dy, stats, tc.rows, tc.stride)
		for c := range got {
			if math.Float64bits(got[c]) != math.Float64bits(want[c]) {
				t.Fatalf("%+v: AddXhat column %d = %v, Go %v", tc, c, got[c], want[c])
			}
		}
	}
}

// TestAdd: a hand-computed sum, and nothing happens without rows or columns.
func TestAdd(t *testing.T) {
	x := []float32{1, 2, 3, 4, 5, 6}
	acc := []float64{10, 0}
	Add(acc, x, 3, 2)
	if acc[0] != 19 || acc[1] != 12 {
		t.Fatalf("column sums %v, want [19 12]", acc)
	}
	Add(acc, nil, 0, 2)
	Add(nil, x, 3, 2)
	if acc[0] != 19 || acc[1] != 12 {
		t.Fatalf("empty sums changed acc to %v", acc)
	}
	stats := []float32{1, 2, 0, 1, 3, 0.5}
	acc = []float64{0, 0}
	AddXhat(acc, x, []float32{1, 1, 1, 1, 1, 1}, stats, 3, 2)
	// x̂: row 0 (1−1)·2, (2−1)·2; row 1 3, 4; row 2 (5−3)·0.5, (6−3)·0.5.
	if acc[0] != 0+3+1 || acc[1] != 2+4+1.5 {
		t.Fatalf("x̂ sums %v, want [4 7.5]", acc)
	}
}

func BenchmarkAdd(b *testing.B) {
	x := make([]float32, 768*512)
	acc := make([]float64, 512)
	for _, tc := range []struct {
		name string
		f    func([]float64, []float32, int, int)
	}{{"dispatch", Add}, {"go", AddGo}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				tc.f(acc, x, 768, 512)
			}
		})
	}
}
