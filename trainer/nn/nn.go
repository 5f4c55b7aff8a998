// Package nn holds the gorgonia models a Cohort peer trains, behind the small Model interface.
//
// A model owns one flat []float32 parameter vector with a fixed, named layout (Layout). Every
// parameter tensor is a zero-copy view of a range of that vector, so optimizers, codecs and the
// DiLoCo outer loop work on plain slices and never see gorgonia. gorgonia is used only inside this
// package.
//
// The contract each model keeps:
//   - Same config (including Seed) ⇒ bit-identical initial parameters; no clock-seeded initialisers
//     (weights come from math/rand/v2 PCG seeded with Seed; testdata/init.golden pins them).
//   - Grad(b, grad) overwrites grad with dLoss/dθ for batch b at the current parameters and returns the
//     mean loss of the batch. Gradients never accumulate across calls. Same parameters and batch ⇒
//     bit-identical loss and gradient, on any instance built with the same BLAS (see BLAS).
//   - Eval never changes parameters or gradients, and takes any number of samples.
//   - A malformed batch returns an error wrapping ErrBatch; nothing panics on bad input.
//   - Models are not safe for concurrent use.
//
// The loop a trainer drives:
//
//	m, _ := nn.NewFromName("mlp:784-256-10", 64, seed) // or NewMLP / NewCharLM / NewGPT with a config
//	grad := make([]float32, len(m.Params()))
//	for step := range steps {
//		loss, err := m.Grad(batch(step), grad) // len(b.Y) == m.BatchSize() samples (or sequences)
//		opt.Step(m.Params(), grad)             // any in-place update of the live vector
//	}
//	lossSum, correct, count, err := m.Eval(validation)
//
// Three models: MLP (a ReLU classifier, "mlp:784-256-10"), CharLM (a one-block causal
// self-attention character model, "charlm:v96-t64-d64-h128") and GPT (nanoGPT's decoder-only
// transformer over bytes, "gpt:4-128-4-64", with nanoGPT's parameter names). Each is checked against
// an independent float64 reference implementation by central finite differences (ref_test.go,
// gpt_test.go). GPTStage is one pipeline stage of a GPT (consecutive blocks, with the embeddings on
// the first stage and the tied head on the last; gpt_stage.go), whose chained stages give the whole
// model's loss and gradients.
//
// gorgonia v0.9.18 notes that shaped this code: each graph has a fixed batch size, so Grad uses one
// training graph and Eval caches one forward-only graph per chunk size (a forward-only graph also
// keeps evaluation from touching gradients); gradients are read from the symbolic gradient nodes
// after each run rather than from dual values, which gorgonia would accumulate across runs;
// InverseSqrt (wrong gradient) and the clock-seeded initialisers are not used; token inputs are Go
// int tensors for the embedding lookups (embed.go); cross-entropy is LogSoftMax ⊙ one-hot; the
// causal mask is a constant −1e9 tensor. Graphs are built and differentiated by gorgonia and run by
// an executor of this package (exec.go), not by gorgonia's tape machine. A [1, n] matrix is a vector to gorgonia's Mul, so graphs of one MLP sample are padded
// to two rows. Built with -tags openblas, matrix products use the system OpenBLAS (see BLAS).
package nn

import "fmt"

// Tensor is one named parameter tensor inside the flat parameter vector.
type Tensor struct {
	Name   string `json:"name" msgpack:"name"`
	Shape  []int  `json:"shape" msgpack:"shape"`
	Offset int    `json:"offset" msgpack:"offset"` // index of the first element in the flat vector
}

// Size is the number of elements of t.
func (t Tensor) Size() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Layout is the ordered list of a model's parameter tensors; tensors are contiguous and in order.
type Layout []Tensor

// Size is the total number of parameters.
func (l Layout) Size() int {
	if len(l) == 0 {
		return 0
	}
	last := l[len(l)-1]
	return last.Offset + last.Size()
}

// Validate checks that the tensors are contiguous, in order, and non-empty.
func (l Layout) Validate() error {
	off := 0
	for i, t := range l {
		if t.Name == "" {
			return fmt.Errorf("nn: layout tensor %d has no name", i)
		}
		if t.Offset != off {
			return fmt.Errorf("nn: layout tensor %q at offset %d, want %d", t.Name, t.Offset, off)
		}
		if t.Size() <= 0 {
			return fmt.Errorf("nn: layout tensor %q has empty shape %v", t.Name, t.Shape)
		}
		off += t.Size()
	}
	return nil
}

// Batch is one minibatch.
//
// Classifiers: X holds n×Features row-major inputs, Y holds n labels.
// Language models: Tokens holds n×Context token ids, Y holds n×Context targets (the next token at
// every position).
type Batch struct {
	X      []float32
	Tokens []int
	Y      []int
}

// Model is a trainable model with a flat parameter vector.
type Model interface {
	// Name is a short identifier such as "mlp:784-256-10".
	Name() string
	// Layout is the fixed, named layout of Params.
	Layout() Layout
	// Params is the live flat parameter vector: writing into it changes the model.
	Params() []float32
	// BatchSize is the number of samples Grad expects per batch.
	BatchSize() int
	// Grad writes dLoss/dθ for b into grad (len(grad) == len(Params())) and returns the mean loss.
	Grad(b Batch, grad []float32) (loss float32, err error)
	// Eval returns the summed loss, the number of correct predictions and the number of predictions
	// over b, which may hold any number of samples. It changes neither parameters nor gradients.
	Eval(b Batch) (lossSum float64, correct, count int, err error)
}
