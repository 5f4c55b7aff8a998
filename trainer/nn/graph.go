package nn

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrConfig reports an invalid model configuration.
	ErrConfig = errors.New("nn: invalid config")
	// ErrBatch reports a malformed batch: wrong lengths, labels or tokens out of range.
	ErrBatch = errors.New("nn: invalid batch")
	// ErrGrad reports a gradient buffer of the wrong length.
	ErrGrad = errors.New("nn: gradient buffer has wrong length")
	// ErrGraph reports a failure inside gorgonia (building or running a graph).
	ErrGraph = errors.New("nn: graph failure")
)

// layoutBuilder assigns contiguous offsets to named tensors in the order they are added.
type layoutBuilder struct {
	l   Layout
	off int
}

func (b *layoutBuilder) add(name string, shape ...int) {
	t := Tensor{Name: name, Shape: append([]int(nil), shape...), Offset: b.off}
	b.l = append(b.l, t)
	b.off += t.Size()
}

// initRand is the seeded generator used for initialisation. PCG with both words derived from the
// seed, so seeds 0 and 1 give unrelated streams.
func initRand(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// fillUniform fills dst with U(-limit, limit) drawn from r, in index order.
func fillUniform(r *rand.Rand, dst []float32, limit float64) {
	for i := range dst {
		dst[i] = float32((2*r.Float64() - 1) * limit)
	}
}

// heLimit is the He-uniform bound sqrt(6/fanIn), for weights followed by a ReLU.
func heLimit(fanIn int) float64 { return math.Sqrt(6 / float64(fanIn)) }

// outputLimit is the bound 1/sqrt(fanIn) used for output layers (PyTorch's default for Linear):
// small logits at initialisation, so the initial loss is close to ln(classes).
func outputLimit(fanIn int) float64 { return 1 / math.Sqrt(float64(fanIn)) }

// glorotLimit is the Glorot-uniform bound sqrt(6/(fanIn+fanOut)).
func glorotLimit(fanIn, fanOut int) float64 { return math.Sqrt(6 / float64(fanIn+fanOut)) }

// graphParams creates one graph node per layout tensor, each a zero-copy view of flat.
func graphParams(g *G.ExprGraph, layout Layout, flat []float32) map[string]*G.Node {
	m := make(map[string]*G.Node, len(layout))
	for _, t := range layout {
		back := flat[t.Offset : t.Offset+t.Size() : t.Offset+t.Size()]
		val := tensor.New(tensor.WithShape(t.Shape...), tensor.WithBacking(back))
		m[t.Name] = G.NewTensor(g, tensor.Float32, len(t.Shape), G.WithShape(t.Shape...), G.WithName(t.Name), G.WithValue(val))
	}
	return m
}

// orderedParams returns the parameter nodes in layout order.
func orderedParams(layout Layout, m map[string]*G.Node) G.Nodes {
	ns := make(G.Nodes, len(layout))
	for i, t := range layout {
		ns[i] = m[t.Name]
	}
	return ns
}

// program is one compiled graph of a fixed batch size: either a training graph (loss and
// gradients) or a forward-only evaluation graph (log-probabilities), run by an executor.
type program struct {
	ex       *executor
	grads    G.Nodes // gradient nodes in layout order; nil for evaluation graphs
	lossNode *G.Node // the mean loss (training graphs)
	logpNode *G.Node // the log-probabilities [rows, classes] (evaluation graphs)
	loss     G.Value // the loss of the last run (training graphs)
	logp     G.Value // the log-probabilities of the last run (evaluation graphs)
}

// run executes the program once. Inputs must already be written into the bound input tensors.
// Every run writes into the same intermediate tensors (see executor); the values read from the
// program (loss, logp, gradients) are those tensors and stay valid until the next run.
//
// Callers validate every input (lengths, label and token ranges) before running: ops index with
// them unchecked.
func (p *program) run() error {
	if err := p.ex.run(); err != nil {
		return err
	}
	if p.lossNode != nil {
		p.loss = p.ex.value(p.lossNode)
	}
	if p.logpNode != nil {
		p.logp = p.ex.value(p.logpNode)
	}
	return nil
}

// copyGrads writes the gradient values into dst in layout order.
func (p *program) copyGrads(layout Layout, dst []float32) error {
	for i, t := range layout {
		v := p.ex.value(p.grads[i])
		if v == nil {
			return fmt.Errorf("%w: no gradient value for %q", ErrGraph, t.Name)
		}
		if d, ok := v.(*tensor.Dense); ok && d.IsView() {
			// A strided view's backing array is not in row-major order; copy it out in order.
			if m, ok := d.Materialize().(*tensor.Dense); ok {
				v = m
			}
		}
		src, ok := float32s(v)
		if !ok || len(src) != t.Size() {
			return fmt.Errorf("%w: gradient of %q has %T of length %d, want []float32 of %d", ErrGraph, t.Name, v.Data(), len(src), t.Size())
		}
		copy(dst[t.Offset:t.Offset+t.Size()], src)
	}
	return nil
}

// float32s returns the float32 data of a dense tensor without boxing it (Data would allocate an
// interface for the slice header).
func float32s(v G.Value) ([]float32, bool) {
	if d, ok := v.(*tensor.Dense); ok {
		if d.Dtype() != tensor.Float32 {
			return nil, false
		}
		return d.Float32s(), true
	}
	f, ok := v.Data().([]float32)
	return f, ok
}

// scalarF32 extracts a float32 from a scalar or single-element value.
func scalarF32(v G.Value) (float32, error) {
	if v == nil {
		return 0, fmt.Errorf("%w: loss was not computed", ErrGraph)
	}
	switch d := v.Data().(type) {
	case float32:
		return d, nil
	case []float32:
		if len(d) == 1 {
			return d[0], nil
		}
	}
	return 0, fmt.Errorf("%w: loss has unexpected value %T", ErrGraph, v.Data())
}

// buildMu serialises graph construction across models: gorgonia v0.9.18 shares package-level
// nodes (the constants its Grad adds to every graph) whose hash codes it caches lazily, a data race
// when two goroutines build graphs at once (seen under -race with coordinators and peers in one
// process). Running built graphs concurrently is safe.
var buildMu sync.Mutex

// buildSafely runs a graph-building function, turning gorgonia panics into errors.
func buildSafely(f func() error) (err error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: panic while building graph: %v", ErrGraph, r)
		}
	}()
	return f()
}

// crossEntropy returns the mean negative log-likelihood of one-hot targets under log-probabilities
// logp [rows, classes]: −Σ(logp ⊙ onehot)/rows.
func crossEntropy(logp, onehot *G.Node, rows int) (*G.Node, error) {
	prod, err := G.HadamardProd(logp, onehot)
	if err != nil {
		return nil, err
	}
	sum, err := G.Sum(prod)
	if err != nil {
		return nil, err
	}
	scale := G.NewConstant(float32(-1 / float64(rows)))
	return G.Mul(sum, scale)
}

// dense applies x·w + b for x [rows, in], w [in, out], b [out]. The product is bmm's (one BLAS
// call, as gorgonia's matrix product makes, without its per-run transposed views and shape
// bookkeeping).
func dense(x, w, b *G.Node) (*G.Node, error) {
	mul := G.Mul
	if x.Dims() == 2 && w.Dims() == 2 {
		mul = func(x, w *G.Node) (*G.Node, error) { return bmm(x, w, false, false) }
	}
	xw, err := mul(x, w)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return xw, nil
	}
	return addRow(xw, b)
}

// compile finishes a graph: for training graphs it adds the gradient nodes of params with respect to
// loss; evaluation graphs read logp. It then plans the executor.
func compile(g *G.ExprGraph, params G.Nodes, loss, logp *G.Node) (*program, error) {
	p := &program{lossNode: loss, logpNode: logp}
	if loss != nil {
		grads, err := G.Grad(loss, params...)
		if err != nil {
			return nil, err
		}
		p.grads = grads
	}
	// Only what the program reads runs: without pruning, the executor would also run every
	// gradient Grad adds for non-parameters, such as dLoss/dx for the input batch (a third of the
	// MLP's matrix products).
	roots := append(G.Nodes(nil), p.grads...)
	if loss != nil {
		roots = append(roots, loss)
	}
	if logp != nil {
		roots = append(roots, logp)
	}
	ex, err := newExecutor(g.SubgraphRoots(roots...))
	if err != nil {
		return nil, err
	}
	p.ex = ex
	return p, nil
}

// scoreRows adds the negative log-likelihood of each row's target (in float64) and counts rows whose
// arg-max equals the target, over the first rows rows of logp [*, classes].
func scoreRows(logp []float32, classes int, targets []int, rows int) (lossSum float64, correct int) {
	for r := 0; r < rows; r++ {
		row := logp[r*classes : (r+1)*classes]
		best := 0
		for c := 1; c < classes; c++ {
			if row[c] > row[best] {
				best = c
			}
		}
		if best == targets[r] {
			correct++
		}
		lossSum -= float64(row[targets[r]])
	}
	return lossSum, correct
}

// checkLabels reports the first label outside [0, classes).
func checkLabels(y []int, classes int, what string) error {
	for i, v := range y {
		if v < 0 || v >= classes {
			return fmt.Errorf("%w: %s %d is %d, want 0 ≤ %s < %d", ErrBatch, what, i, v, what, classes)
		}
	}
	return nil
}

// close releases the program's tensors.
func (p *program) close() { p.ex = nil }

// evalCache holds the forward-only graphs of a model: one for full chunks and one for the most
// recent remainder size (a validation set of fixed size needs no rebuilds; odd sizes replace it).
type evalCache[P interface {
	comparable
	close()
}] struct {
	full, rem P
	remN      int
}

// get returns the graph for chunks of n rows (fullN for full chunks), building it if needed.
func (c *evalCache[P]) get(n, fullN int, build func(int) (P, error)) (P, error) {
	var zero P
	if n == fullN {
		if c.full == zero {
			p, err := build(n)
			if err != nil {
				return zero, err
			}
			c.full = p
		}
		return c.full, nil
	}
	if c.rem == zero || c.remN != n {
		p, err := build(n)
		if err != nil {
			return zero, err
		}
		if c.rem != zero {
			c.rem.close()
		}
		c.rem, c.remN = p, n
	}
	return c.rem, nil
}
