package compress

import (
	"math"
	"testing"
)

// With decay β the residual is e ← β·e + Δ − decode(msg): what was never sent fades.
func TestResidualDecay(t *testing.T) {
	const n = 4096
	c := newTestCodec(t, "topk:0.01+q4", n, 1)
	r, err := c.NewResidual(n)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetDecay(0); err == nil {
		t.Fatal("decay 0 accepted")
	}
	if err := r.SetDecay(1.5); err == nil {
		t.Fatal("decay 1.5 accepted")
	}
	if err := r.SetDecay(0.5); err != nil {
		t.Fatal(err)
	}
	d1, d2 := gaussian(n, 1, 1), gaussian(n, 1, 2)
	if _, err := r.Encode(nil, d1); err != nil {
		t.Fatal(err)
	}
	e1 := append([]float32(nil), r.Error()...)
	msg, err := r.Encode(nil, d2)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := c.Decode(nil, msg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range d2 {
		want := 0.5*e1[i] + d2[i]
		if got := dec[i] + r.Error()[i]; math.Abs(float64(got-want)) > 1e-5 {
			t.Fatalf("value %d: sent + kept %v, want 0.5·e + Δ = %v", i, got, want)
		}
	}
}

// Accumulate, in place or not, is the step Residual takes: a sender keeping its own residual
// gets the same bits.
func TestAccumulate(t *testing.T) {
	e, d := []float32{1, -2, 0.1, 3}, []float32{0.5, 0.5, 0.2, -3}
	for _, tc := range []struct {
		beta float32
		want []float32
	}{
		{0, []float32{1.5, -1.5, 0.1 + 0.2, 0}},
		{1, []float32{1.5, -1.5, 0.1 + 0.2, 0}},
		{0.5, []float32{1, -0.5, float32(0.5)*0.1 + 0.2, -1.5}},
	} {
		out := make([]float32, len(e))
		Accumulate(out, e, d, tc.beta)
		inPlace := append([]float32(nil), e...)
		Accumulate(inPlace, inPlace, d, tc.beta)
		for i := range out {
			if out[i] != tc.want[i] || inPlace[i] != tc.want[i] {
				t.Fatalf("β=%v: got %v (in place %v), want %v", tc.beta, out, inPlace, tc.want)
			}
		}
	}
}
