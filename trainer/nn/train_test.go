package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestInitialLossIsUniform(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 4))
	mlp := newTestMLP(t, MLPConfig{Seed: 1})
	b := Batch{X: make([]float32, 64*784), Y: make([]int, 64)}
	for i := range b.X {
		b.X[i] = float32(r.Float64()) // pixel intensities scaled to [0, 1]
	}
	for i := range b.Y {
		b.Y[i] = r.IntN(10)
	}
	grad := make([]float32, len(mlp.Params()))
	loss, err := mlp.Grad(b, grad)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mlp initial loss %.4f, ln 10 = %.4f", loss, math.Log(10))
	if math.Abs(float64(loss)-math.Log(10)) > 0.15 {
		t.Errorf("mlp initial loss %.4f, want ln 10 = %.4f ± 0.15", loss, math.Log(10))
	}
	lm := newTestCharLM(t, CharLMConfig{Vocab: 96, Context: 32, Embed: 32, Batch: 4, Seed: 1})
	lb := randomLMBatch(r, 96, 32, 4)
	lgrad := make([]float32, len(lm.Params()))
	lloss, err := lm.Grad(lb, lgrad)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("charlm initial loss %.4f, ln 96 = %.4f", lloss, math.Log(96))
	if math.Abs(float64(lloss)-math.Log(96)) > 0.1 {
		t.Errorf("charlm initial loss %.4f, want ln 96 = %.4f ± 0.1", lloss, math.Log(96))
	}
}

// sgd runs steps of plain SGD on m, drawing batches from next, and returns the mean loss of the
// first and last ten steps.
func sgd(t *testing.T, m Model, steps int, lr float32, next func() Batch) (first, last float64) {
	t.Helper()
	grad := make([]float32, len(m.Params()))
	for s := 0; s < steps; s++ {
		loss, err := m.Grad(next(), grad)
		if err != nil {
			t.Fatal(err)
		}
		for i, g := range grad {
			m.Params()[i] -= lr * g
		}
		if s < 10 {
			first += float64(loss) / 10
		}
		if s >= steps-10 {
			last += float64(loss) / 10
		}
	}
	return first, last
}

func TestMLPLearnsSeparableClasses(t *testing.T) {
	const features, classes, n = 12, 4, 16
	r := rand.New(rand.NewPCG(10, 10))
	centers := make([]float64, classes*features)
	for i := range centers {
		centers[i] = r.NormFloat64()
	}
	draw := func(rows int) Batch {
		b := Batch{X: make([]float32, rows*features), Y: make([]int, rows)}
		for i := range b.Y {
			c := r.IntN(classes)
			b.Y[i] = c
			for f := 0; f < features; f++ {
				b.X[i*features+f] = float32(centers[c*features+f] + 0.3*r.NormFloat64())
			}
		}
		return b
	}
	m := newTestMLP(t, MLPConfig{Sizes: []int{features, 32, classes}, Batch: n, Seed: 2})
	first, last := sgd(t, m, 300, 0.1, func() Batch { return draw(n) })
	t.Logf("loss %.4f → %.4f", first, last)
	if last > 0.2*first {
		t.Errorf("loss %.4f → %.4f, want a fall below 20%%", first, last)
	}
	loss, correct, count, err := m.Eval(draw(500))
	if err != nil {
		t.Fatal(err)
	}
	if acc := float64(correct) / float64(count); acc < 0.95 {
		t.Errorf("held-out accuracy %.3f (loss %.4f), want ≥ 0.95", acc, loss/float64(count))
	}
}

// TestCharLMLearnsRecurrence trains on x[t] = (x[t−1] + x[t−2]) mod V, which needs attention to the
// token two steps back: a model that only sees the current token stays near ln V.
func TestCharLMLearnsRecurrence(t *testing.T) {
	const vocab, context, n = 7, 8, 8
	var r *rand.Rand
	draw := func() Batch {
		seq := make([]int, n*(context+1))
		for s := 0; s < n; s++ {
			w := seq[s*(context+1) : (s+1)*(context+1)]
			w[0], w[1] = r.IntN(vocab), r.IntN(vocab)
			for i := 2; i < len(w); i++ {
				w[i] = (w[i-1] + w[i-2]) % vocab
			}
		}
		return lmBatchFromSequences(seq, context, n)
	}
	for _, ln := range []bool{false, true} {
		r = rand.New(rand.NewPCG(12, 12)) // the same data for both variants
		m := newTestCharLM(t, CharLMConfig{Vocab: vocab, Context: context, Embed: 16, Hidden: 32, Batch: n, Seed: 3, LayerNorm: ln})
		steps, lr := 900, float32(0.5)
		if ln {
			lr = 0.2 // plain SGD through the normalisations wants a smaller step
		}
		first, last := sgd(t, m, steps, lr, draw)
		t.Logf("%s: loss %.4f → %.4f (ln %d = %.4f)", m.Name(), first, last, vocab, math.Log(vocab))
		if last > 0.5*first {
			t.Errorf("%s: loss %.4f → %.4f, want a fall below 50%%", m.Name(), first, last)
		}
	}
}
