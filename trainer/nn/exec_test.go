package nn

import (
	"math"
	"math/rand/v2"
	"runtime"
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

// TestStepsAllocateLittle: in steady state, a Grad and an Eval of the MLP and of the GPT allocate a
// few dozen small objects (gorgonia's scalar ops at the loss), whatever the size of the model: the
// executor reuses its argument lists and every tensor, and the kernels their closures. With the
// tape machine the GPT's Grad took over a thousand. (The CharLM's attention still runs on
// gorgonia's batched products, which allocate per matrix.)
func TestStepsAllocateLittle(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts under -race include the race detector's")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	r := rand.New(rand.NewPCG(13, 14))
	for _, tc := range []struct {
		name  string
		model func() Model
		batch Batch
		max   float64
	}{
		{"mlp", func() Model {
			return newTestMLP(t, MLPConfig{Sizes: []int{784, 256, 10}, Batch: 64, EvalBatch: 64, Seed: 1})
		}, randomMLPBatch(r, 784, 10, 64), 80}, // at 2 threads gonum's pure-Go Sgemm starts goroutines of its own for the 64×784×256 products
		{"gpt", func() Model {
			return newTestGPT(t, GPTConfig{Layers: 4, Embed: 32, Heads: 4, Context: 16, Vocab: 20, Batch: 4, Seed: 3})
		}, randomLMBatch(r, 20, 16, 4), 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.model()
			g := make([]float32, len(m.Params()))
			grad := func() {
				if _, err := m.Grad(tc.batch, g); err != nil {
					t.Fatal(err)
				}
			}
			eval := func() {
				if _, _, _, err := m.Eval(tc.batch); err != nil {
					t.Fatal(err)
				}
			}
			// On one thread and on two: par.Runs's helpers are kept, not started a run.
			for _, procs := range []int{1, 2} {
				runtime.GOMAXPROCS(procs)
				for _, f := range []struct {
					name string
					run  func()
				}{{"Grad", grad}, {"Eval", eval}} {
					if a := allocsPerRun(3, f.run); a > tc.max {
						t.Errorf("%s at GOMAXPROCS=%d: %v allocations a run, want at most %v", f.name, procs, a, tc.max)
					} else {
						t.Logf("%s at GOMAXPROCS=%d: %v allocations a run", f.name, procs, a)
					}
				}
			}
		})
	}
}

// allocsPerRun is testing.AllocsPerRun at the current GOMAXPROCS (AllocsPerRun sets it to 1):
// the mean number of heap allocations of n runs of f, after one run to warm up.
func allocsPerRun(n int, f func()) float64 {
	f()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	for range n {
		f()
	}
	runtime.ReadMemStats(&m1)
	return float64(m1.Mallocs-m0.Mallocs) / float64(n)
}
