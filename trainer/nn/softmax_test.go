package nn

import (
	"math"
	"testing"
)

// gorgonia's own (log-)softmax takes each row's maximum from the tensor's first element, so a
// later row whose first logit is far above it overflowed to NaN. The composed one stays finite.
func TestLargeLogitsStayFinite(t *testing.T) {
	m, err := NewMLP(MLPConfig{Sizes: []int{2, 2, 3}, Batch: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := m.Params()
	clear(p)
	for _, tn := range m.Layout() {
		switch tn.Name {
		case "fc0.w": // identity: hidden = relu(x)
			p[tn.Offset], p[tn.Offset+3] = 1, 1
		case "fc1.w": // class 0's logit = 300·hidden₀
			p[tn.Offset] = 300
		}
	}
	// Row 0 has all-zero logits; row 1's class-0 logit is 300.
	b := Batch{X: []float32{0, 0, 1, 0}, Y: []int{0, 1}}
	grad := make([]float32, len(p))
	loss, err := m.Grad(b, grad)
	if err != nil {
		t.Fatal(err)
	}
	// Row 0 costs ln 3, row 1 costs 300 (its label is class 1): mean ≈ 150.55.
	if math.IsNaN(float64(loss)) || math.Abs(float64(loss)-(math.Log(3)+300)/2) > 0.01 {
		t.Fatalf("loss %v, want %.3f", loss, (math.Log(3)+300)/2)
	}
	for i, g := range grad {
		if math.IsNaN(float64(g)) || math.IsInf(float64(g), 0) {
			t.Fatalf("grad[%d] = %v", i, g)
		}
	}
	lossSum, _, n, err := m.Eval(b)
	if err != nil || math.Abs(lossSum-(math.Log(3)+300)) > 0.02 || n != 2 {
		t.Fatalf("eval loss sum %v over %d (err %v), want %.3f", lossSum, n, err, math.Log(3)+300)
	}
}
