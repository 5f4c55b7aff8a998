package trainer

import (
	"math/rand/v2"
	"testing"

	"github.com/cohortlab/cohort/trainer/nn"
)

// BenchmarkTrainStep measures one full training step in steady state, as Worker.InnerSteps takes
// it: Grad, then AdamW (lr 1e-3, weight decay 0.01 as torch.optim.AdamW's default) with the
// global-norm clip at 1 for the GPT. The batch is fixed random data from a seeded PCG.
// scripts/vs_pytorch.py is the PyTorch counterpart of the same two steps and
// scripts/vs-pytorch.sh puts the two side by side.
//
//	mlp: mlp:784-256-10 at batch 64, in samples/s
//	gpt: gpt:4-128-4-64 at batch 12 (12×64 tokens), in tokens/s
func BenchmarkTrainStep(b *testing.B) {
	for _, tc := range []struct {
		name, model string
		batch       int
		clip        float32
	}{
		{"mlp", "mlp:784-256-10", 64, 0},
		{"gpt", "gpt:4-128-4-64", 12, 1},
	} {
		b.Run(tc.name, func(b *testing.B) {
			m, err := nn.NewFromName(tc.model, tc.batch, 1)
			if err != nil {
				b.Fatal(err)
			}
			r := rand.New(rand.NewPCG(1, 2))
			var bt nn.Batch
			var units int
			var unit string
			switch m := m.(type) {
			case *nn.MLP:
				bt = randomClassBatch(r, m.Features(), m.Classes(), tc.batch)
				units, unit = tc.batch, "samples/s"
			case *nn.GPT:
				bt = randomTokenBatch(r, m.Vocab(), m.Context(), tc.batch)
				units, unit = len(bt.Tokens), "tokens/s"
			default:
				b.Fatalf("no batch maker for %T", m)
			}
			params := m.Params()
			grad := make([]float32, len(params))
			opt, err := NewAdamW(len(params), AdamWConfig{LR: 1e-3, WeightDecay: 0.01, ClipNorm: tc.clip})
			if err != nil {
				b.Fatal(err)
			}
			step := func() {
				if _, err := m.Grad(bt, grad); err != nil {
					b.Fatal(err)
				}
				opt.Step(params, grad)
			}
			// Warm up: the first steps fill gorgonia's and the allocator's caches.
			for range 3 {
				step()
			}
			b.ReportAllocs()
			for b.Loop() {
				step()
			}
			b.ReportMetric(float64(b.N*units)/b.Elapsed().Seconds(), unit)
		})
	}
}

// randomClassBatch draws n samples of standard normal features and uniform labels.
func randomClassBatch(r *rand.Rand, features, classes, n int) nn.Batch {
	bt := nn.Batch{X: make([]float32, n*features), Y: make([]int, n)}
	for i := range bt.X {
		bt.X[i] = float32(r.NormFloat64())
	}
	for i := range bt.Y {
		bt.Y[i] = r.IntN(classes)
	}
	return bt
}

// randomTokenBatch draws n sequences of context uniform tokens and uniform next-token targets.
func randomTokenBatch(r *rand.Rand, vocab, context, n int) nn.Batch {
	bt := nn.Batch{Tokens: make([]int, n*context), Y: make([]int, n*context)}
	for i := range bt.Tokens {
		bt.Tokens[i] = r.IntN(vocab)
	}
	for i := range bt.Y {
		bt.Y[i] = r.IntN(vocab)
	}
	return bt
}
