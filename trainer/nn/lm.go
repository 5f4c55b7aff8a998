package nn

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// lmProgram is a compiled language-model graph for n sequences with its bound input tensors.
type lmProgram struct {
	*program
	n      int
	tokens []int     // backing of the token ids [n·T]
	onehot []float32 // backing of the one-hot targets [n·T, V] (training only)
}

// lm is what the language models (CharLM, GPT) share once they build their graphs: the flat
// parameters, the batch contract, and Grad and Eval over compiled lmPrograms.
type lm struct {
	kind                             string // "charlm", "gpt": for error messages
	vocab, context, batch, evalBatch int
	layout                           Layout
	flat                             []float32

	train *lmProgram
	eval  evalCache[*lmProgram]
	// graphFor builds the model's graph for n sequences, with the loss and gradients when training.
	graphFor func(n int, training bool) (*lmProgram, error)
}

// lmInputs binds p.tokens (the token ids of N = n·T positions) and the positions 0..T−1 of every
// sequence as the graph's index inputs.
func lmInputs(g *G.ExprGraph, p *lmProgram, N, T int) (tok, pos *G.Node) {
	p.tokens = make([]int, N)
	tok = G.NewVector(g, tensor.Int, G.WithShape(N), G.WithName("tokens"),
		G.WithValue(tensor.New(tensor.WithShape(N), tensor.WithBacking(p.tokens))))
	posIdx := make([]int, N)
	for i := range posIdx {
		posIdx[i] = i % T
	}
	pos = G.NewVector(g, tensor.Int, G.WithShape(N), G.WithName("positions"),
		G.WithValue(tensor.New(tensor.WithShape(N), tensor.WithBacking(posIdx))))
	return tok, pos
}

// causalMask is a constant [count, T, T] of −1e9 above the diagonal: added to count score matrices
// before the softmax, it keeps every position from attending to later ones.
func causalMask(count, T int) *G.Node {
	vals := make([]float32, count*T*T)
	for s := 0; s < count; s++ {
		for i := 0; i < T; i++ {
			for j := i + 1; j < T; j++ {
				vals[(s*T+i)*T+j] = -1e9
			}
		}
	}
	return G.NewConstant(tensor.New(tensor.WithShape(count, T, T), tensor.WithBacking(vals)), G.WithName("causalmask"))
}

// finishLM completes a language model's graph from its log-probabilities [N, V] and compiles it:
// forward-only, or with the mean next-token cross-entropy against one-hot targets bound to
// p.onehot, differentiated with respect to params.
func finishLM(g *G.ExprGraph, p *lmProgram, logp *G.Node, N, V int, layout Layout, params map[string]*G.Node, training bool) error {
	var err error
	if !training {
		p.program, err = compile(g, nil, nil, logp)
		return err
	}
	p.onehot = make([]float32, N*V)
	oh := G.NewMatrix(g, tensor.Float32, G.WithShape(N, V), G.WithName("onehot"),
		G.WithValue(tensor.New(tensor.WithShape(N, V), tensor.WithBacking(p.onehot))))
	loss, err := crossEntropy(logp, oh, N)
	if err != nil {
		return err
	}
	p.program, err = compile(g, orderedParams(layout, params), loss, nil)
	return err
}

// checkBatch validates b and returns its number of sequences.
func (m *lm) checkBatch(b Batch) (int, error) {
	T := m.context
	if b.X != nil {
		return 0, fmt.Errorf("%w: %s takes Tokens, not X", ErrBatch, m.kind)
	}
	if len(b.Tokens)%T != 0 {
		return 0, fmt.Errorf("%w: %d tokens is not a multiple of the context %d", ErrBatch, len(b.Tokens), T)
	}
	if len(b.Y) != len(b.Tokens) {
		return 0, fmt.Errorf("%w: %d targets for %d tokens, want one target per token", ErrBatch, len(b.Y), len(b.Tokens))
	}
	if err := checkLabels(b.Tokens, m.vocab, "token"); err != nil {
		return 0, err
	}
	if err := checkLabels(b.Y, m.vocab, "target"); err != nil {
		return 0, err
	}
	return len(b.Tokens) / T, nil
}

// Grad writes dLoss/dθ for b (exactly BatchSize sequences of Context tokens, with one target per
// token) into grad and returns the mean cross-entropy over all positions.
func (m *lm) Grad(b Batch, grad []float32) (float32, error) {
	n, err := m.checkBatch(b)
	if err != nil {
		return 0, err
	}
	if n != m.batch {
		return 0, fmt.Errorf("%w: %d sequences, want batch size %d", ErrBatch, n, m.batch)
	}
	if len(grad) != len(m.flat) {
		return 0, fmt.Errorf("%w: %d, want %d", ErrGrad, len(grad), len(m.flat))
	}
	p := m.train
	copy(p.tokens, b.Tokens)
	V := m.vocab
	clear(p.onehot)
	for i, y := range b.Y {
		p.onehot[i*V+y] = 1
	}
	if err := p.run(); err != nil {
		return 0, err
	}
	if err := p.copyGrads(m.layout, grad); err != nil {
		return 0, err
	}
	return scalarF32(p.loss)
}

// Eval returns the summed next-token cross-entropy, the number of positions whose arg-max equals the
// target, and the number of positions, over any number of sequences. It runs forward-only graphs of
// EvalBatch sequences (a final partial chunk gets its own cached graph) and touches neither
// parameters nor gradients.
func (m *lm) Eval(b Batch) (lossSum float64, correct, count int, err error) {
	total, err := m.checkBatch(b)
	if err != nil {
		return 0, 0, 0, err
	}
	T, V := m.context, m.vocab
	for start := 0; start < total; start += m.evalBatch {
		seqs := min(m.evalBatch, total-start)
		p, err := m.eval.get(seqs, m.evalBatch, func(n int) (*lmProgram, error) { return m.graphFor(n, false) })
		if err != nil {
			return 0, 0, 0, err
		}
		copy(p.tokens, b.Tokens[start*T:(start+seqs)*T])
		if err := p.run(); err != nil {
			return 0, 0, 0, err
		}
		logp, ok := float32s(p.logp)
		if !ok {
			return 0, 0, 0, fmt.Errorf("%w: log-probabilities have type %T", ErrGraph, p.logp.Data())
		}
		l, c := scoreRows(logp, V, b.Y[start*T:(start+seqs)*T], seqs*T)
		lossSum += l
		correct += c
	}
	return lossSum, correct, total * T, nil
}
