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

// TestFP16Exhaustive: the inline fast path of appendFP16 agrees with
// f32ToF16 on every float32 whose top 16 bits vary (and a spread of low
// bits), and f32ToF16 rounds to nearest even as checked against f16ToF32.
func TestFP16Exhaustive(t *testing.T) {
	for hi := uint32(0); hi < 1<<16; hi++ {
		for _, lo := range []uint32{0, 1, 0x0fff, 0x1000, 0x1001, 0x2000, 0xffff} {
			b := hi<<16 | lo
			if b&0x7f800000 == 0x7f800000 {
				continue
			}
			v := math.Float32frombits(b)
			got := appendFP16(nil, []float32{v})
			h := uint16(got[0]) | uint16(got[1])<<8
			if want := f32ToF16(v); h != want {
				t.Fatalf("%g (%08x): fast path %04x, f32ToF16 %04x", v, b, h, want)
			}
			// Nearest: no other finite binary16 is strictly closer.
			d, _ := f16ToF32(h)
			if math.Abs(float64(v)) <= 65504 {
				err := math.Abs(float64(v) - float64(d))
				for _, nb := range []uint16{h - 1, h + 1} {
					if nd, ok := f16ToF32(nb); ok && nb&0x7fff <= 0x7bff && (nb^h)&0x8000 == 0 && math.Abs(float64(v)-float64(nd)) < err {
						t.Fatalf("%g: coded %04x (%g), %04x (%g) is closer", v, h, d, nb, nd)
					}
				}
			}
		}
	}
}
