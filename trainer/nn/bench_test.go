package nn

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// BenchmarkMLPGrad measures one Grad call of the Fashion-MNIST MLP 784-256-10.
func BenchmarkMLPGrad(b *testing.B) {
	for _, batch := range []int{64, 256} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			m := newTestMLP(b, MLPConfig{Sizes: []int{784, 256, 10}, Batch: batch})
			r := rand.New(rand.NewPCG(1, 2))
			bt := Batch{X: make([]float32, batch*784), Y: make([]int, batch)}
			for i := range bt.X {
				bt.X[i] = float32(r.Float64())
			}
			for i := range bt.Y {
				bt.Y[i] = r.IntN(10)
			}
			grad := make([]float32, len(m.Params()))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Grad(bt, grad); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

// BenchmarkCharLMGrad measures one Grad call of the default-sized CharLM (Vocab 96, Context 64,
// Embed 64, Hidden 128, 32 sequences = 2048 tokens per batch), of the same model without MLP, and
// with LayerNorm.
func BenchmarkCharLMGrad(b *testing.B) {
	for _, tc := range []struct {
		name   string
		hidden int
		ln     bool
	}{{"h=128", 0, false}, {"h=0", -1, false}, {"h=128,ln", 0, true}} {
		b.Run(tc.name, func(b *testing.B) {
			m := newTestCharLM(b, CharLMConfig{Vocab: 96, Hidden: tc.hidden, LayerNorm: tc.ln})
			r := rand.New(rand.NewPCG(1, 2))
			bt := randomLMBatch(r, 96, m.Context(), m.BatchSize())
			grad := make([]float32, len(m.Params()))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.Grad(bt, grad); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(bt.Tokens))/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkEval measures Eval throughput on 1000 samples (MLP) and 64 sequences (CharLM).
func BenchmarkEval(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	b.Run("mlp", func(b *testing.B) {
		m := newTestMLP(b, MLPConfig{})
		bt := randomMLPBatch(r, 784, 10, 1000)
		for b.Loop() {
			if _, _, _, err := m.Eval(bt); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "samples/s")
	})
	b.Run("charlm", func(b *testing.B) {
		m := newTestCharLM(b, CharLMConfig{Vocab: 96})
		bt := randomLMBatch(r, 96, 64, 64)
		for b.Loop() {
			if _, _, _, err := m.Eval(bt); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*len(bt.Tokens))/b.Elapsed().Seconds(), "tokens/s")
	})
}
