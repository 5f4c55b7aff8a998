package compress

import (
	"math"
	"testing"
)

// TestMatMulReference: the blocked kernels give the reference loops' bits.
func TestMatMulReference(t *testing.T) {
	for _, r := range []int{1, 3, 4, 5, 8, 9} {
		rows, cols := 7, 11
		M, Q, P := gaussian(rows*cols, 1, 1), gaussian(cols*r, 1, 2), gaussian(rows*r, 1, 3)
		gotP := make([]float32, rows*r)
		matMul(gotP, M, Q, rows, cols, r)
		gotQ := make([]float32, cols*r)
		matTMul(gotQ, M, P, rows, cols, r)
		for i := range rows {
			for c := range r {
				var s float32
				for j := range cols {
					s += float32(M[i*cols+j] * Q[j*r+c])
				}
				if math.Float32bits(s) != math.Float32bits(gotP[i*r+c]) {
					t.Fatalf("r=%d: P[%d,%d] = %g, reference %g", r, i, c, gotP[i*r+c], s)
				}
			}
		}
		gotM := make([]float32, rows*cols)
		reconstruct(gotM, P, Q, rows, cols, r)
		for i := range rows {
			for j := range cols {
				var s float32
				for c := range r {
					s += float32(P[i*r+c] * Q[j*r+c])
				}
				if math.Float32bits(s) != math.Float32bits(gotM[i*cols+j]) {
					t.Fatalf("r=%d: M[%d,%d] = %g, reference %g", r, i, j, gotM[i*cols+j], s)
				}
			}
		}
		for j := range cols {
			for c := range r {
				var s float32
				for i := range rows {
					s += float32(M[i*cols+j] * P[i*r+c])
				}
				if math.Float32bits(s) != math.Float32bits(gotQ[j*r+c]) {
					t.Fatalf("r=%d: Q[%d,%d] = %g, reference %g", r, j, c, gotQ[j*r+c], s)
				}
			}
		}
	}
}

func TestOrthonormalize(t *testing.T) {
	rows, r := 50, 4
	P := gaussian(rows*r, 1, 4)
	for i := range rows { // column 2 = 3 × column 0: rank deficient
		P[i*r+2] = 3 * P[i*r]
	}
	orthonormalize(P, rows, r)
	for c := range r {
		for d := range r {
			var dot float64
			for i := range rows {
				dot += float64(P[i*r+c]) * float64(P[i*r+d])
			}
			want := 0.0
			if c == d && c != 2 {
				want = 1
			}
			if math.Abs(dot-want) > 1e-5 {
				t.Errorf("⟨p%d, p%d⟩ = %g, want %g", c, d, dot, want)
			}
		}
	}
}
