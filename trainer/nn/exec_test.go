package nn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRepeatedRunsMatchFreshModels: a model whose executors write every run into the tensors of
// the first gives, on every later Grad and Eval, bit-identical results to a fresh model with the
// same parameters, and no run writes into the parameters. Batches alternate so that a stale
// destination would show.
func TestRepeatedRunsMatchFreshModels(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	cases := []struct {
		name  string
		make  func() Model
		batch func() Batch
	}{
		{"mlp", func() Model {
			return newTestMLP(t, MLPConfig{Sizes: []int{20, 16, 12, 5}, Batch: 6, EvalBatch: 4, Seed: 2})
		},
			func() Batch { return randomMLPBatch(r, 20, 5, 6) }},
		{"charlm", func() Model {
			return newTestCharLM(t, CharLMConfig{Vocab: 13, Context: 5, Embed: 8, Hidden: 12, Batch: 3, Seed: 2})
		},
			func() Batch { return randomLMBatch(r, 13, 5, 3) }},
		{"charlm-ln", func() Model {
			return newTestCharLM(t, CharLMConfig{Vocab: 13, Context: 5, Embed: 8, Hidden: 12, Batch: 3, Seed: 2, LayerNorm: true})
		}, func() Batch { return randomLMBatch(r, 13, 5, 3) }},
		{"gpt", func() Model { return newTestGPT(t, tinyGPT) }, func() Batch { return randomLMBatch(r, 11, 4, 2) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.make()
			batches := []Batch{tc.batch(), tc.batch(), tc.batch()}
			for run := range 7 {
				b := batches[run%len(batches)]
				before := slices.Clone(m.Params())
				g := make([]float32, len(m.Params()))
				loss, err := m.Grad(b, g)
				if err != nil {
					t.Fatal(err)
				}
				if !bitsEqual(before, m.Params()) {
					t.Fatalf("run %d: Grad changed the parameters", run)
				}
				fresh := tc.make()
				copy(fresh.Params(), m.Params())
				fg := make([]float32, len(g))
				floss, err := fresh.Grad(b, fg)
				if err != nil {
					t.Fatal(err)
				}
				if math.Float32bits(loss) != math.Float32bits(floss) || !bitsEqual(g, fg) {
					t.Fatalf("run %d: repeated Grad differs from a fresh model's (loss %v vs %v)", run, loss, floss)
				}
				ls, c, _, err := m.Eval(b)
				if err != nil {
					t.Fatal(err)
				}
				fls, fc, _, _ := fresh.Eval(b)
				if math.Float64bits(ls) != math.Float64bits(fls) || c != fc {
					t.Fatalf("run %d: repeated Eval differs from a fresh model's", run)
				}
				// Move the parameters so that the next run sees new values.
				for i := range m.Params() {
					m.Params()[i] -= 0.01 * g[i]
				}
			}
		})
	}
}
