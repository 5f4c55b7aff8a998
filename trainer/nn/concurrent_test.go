package nn

import (
	"math/rand/v2"
	"sync"
	"testing"
)

// TestSeparateModelsRunConcurrently: a model is not safe for concurrent use, but distinct models may
// run in parallel goroutines (one simulated peer each) and give exactly the sequential results.
func TestSeparateModelsRunConcurrently(t *testing.T) {
	const peers, steps = 4, 5
	cfg := CharLMConfig{Vocab: 9, Context: 6, Embed: 8, Batch: 2, Seed: 1}
	r := rand.New(rand.NewPCG(3, 3))
	batches := make([]Batch, steps)
	for i := range batches {
		batches[i] = randomLMBatch(r, 9, 6, 2)
	}
	train := func(m Model) []float32 {
		grad := make([]float32, len(m.Params()))
		for _, b := range batches {
			if _, err := m.Grad(b, grad); err != nil {
				t.Error(err)
				return nil
			}
			for i, g := range grad {
				m.Params()[i] -= 0.1 * g
			}
			if _, _, _, err := m.Eval(b); err != nil {
				t.Error(err)
			}
		}
		return m.Params()
	}
	want := train(newTestCharLM(t, cfg))
	models := make([]Model, peers)
	for i := range models {
		if i%2 == 0 {
			models[i] = newTestCharLM(t, cfg)
		} else {
			models[i] = newTestMLP(t, MLPConfig{Sizes: []int{5, 4, 3}, Batch: 2})
		}
	}
	var wg sync.WaitGroup
	results := make([][]float32, peers)
	for i, m := range models {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if lm, ok := m.(*CharLM); ok {
				results[i] = train(lm)
				return
			}
			b := randomMLPBatch(rand.New(rand.NewPCG(uint64(i), 0)), 5, 3, 2)
			grad := make([]float32, len(m.Params()))
			for range steps {
				if _, err := m.Grad(b, grad); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for i := 0; i < peers; i += 2 {
		if !bitsEqual(results[i], want) {
			t.Errorf("peer %d trained concurrently differs from the sequential run", i)
		}
	}
}
