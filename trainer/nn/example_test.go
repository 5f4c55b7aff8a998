package nn_test

import (
	"fmt"
	"math/rand/v2"

	"github.com/cohortlab/cohort/trainer/nn"
)

// The loop a trainer runs: Grad on a batch, update Params in place, Eval now and then.
func Example() {
	m, err := nn.NewFromName("mlp:4-16-2", 8, 1)
	if err != nil {
		panic(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	batch := func(n int) nn.Batch { // label: is x0 + x1 > 0?
		b := nn.Batch{X: make([]float32, n*4), Y: make([]int, n)}
		for i := range b.Y {
			for j := 0; j < 4; j++ {
				b.X[i*4+j] = float32(r.NormFloat64())
			}
			if b.X[i*4]+b.X[i*4+1] > 0 {
				b.Y[i] = 1
			}
		}
		return b
	}
	grad := make([]float32, len(m.Params()))
	for step := 0; step < 300; step++ {
		if _, err := m.Grad(batch(m.BatchSize()), grad); err != nil {
			panic(err)
		}
		for i, g := range grad { // plain SGD; the trainer uses AdamW on the same flat vectors
			m.Params()[i] -= 0.1 * g
		}
	}
	_, correct, count, err := m.Eval(batch(1000))
	if err != nil {
		panic(err)
	}
	fmt.Println(m.Name(), len(m.Params()), "params")
	for _, t := range m.Layout() {
		fmt.Println(t.Name, t.Shape, t.Offset)
	}
	fmt.Println("accuracy above 90%:", float64(correct)/float64(count) > 0.9)
	// Output:
	// mlp:4-16-2 114 params
	// fc0.w [4 16] 0
	// fc0.b [16] 64
	// fc1.w [16 2] 80
	// fc1.b [2] 112
	// accuracy above 90%: true
}
