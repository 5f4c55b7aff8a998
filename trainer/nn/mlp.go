package nn

import (
	"fmt"
	"strconv"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// MLPConfig configures an MLP classifier. The zero value is the Fashion-MNIST model 784-256-10 with
// batch 64, seed 0.
type MLPConfig struct {
	// Sizes are the layer widths from input features to classes, e.g. {784, 256, 10}. At least two
	// entries, each ≥ 2. Nil means {784, 256, 10}.
	Sizes []int
	// Batch is the number of samples Grad expects. Zero means 64; otherwise ≥ 2.
	Batch int
	// Seed seeds the weight initialisation (PCG). Same Seed ⇒ bit-identical parameters.
	Seed uint64
	// EvalBatch is the chunk size Eval runs graphs with. Zero means 500; otherwise ≥ 2.
	EvalBatch int
}

func (c MLPConfig) withDefaults() MLPConfig {
	if c.Sizes == nil {
		c.Sizes = []int{784, 256, 10}
	}
	c.Sizes = append([]int(nil), c.Sizes...)
	if c.Batch == 0 {
		c.Batch = 64
	}
	if c.EvalBatch == 0 {
		c.EvalBatch = 500
	}
	return c
}

// Validate reports whether c (after defaults) describes a buildable model.
func (c MLPConfig) Validate() error {
	c = c.withDefaults()
	if len(c.Sizes) < 2 {
		return fmt.Errorf("%w: mlp Sizes %v needs at least input and output widths", ErrConfig, c.Sizes)
	}
	for i, s := range c.Sizes {
		if s < 2 {
			return fmt.Errorf("%w: mlp Sizes[%d] = %d, want ≥ 2", ErrConfig, i, s)
		}
	}
	if c.Batch < 2 {
		return fmt.Errorf("%w: mlp Batch %d, want ≥ 2", ErrConfig, c.Batch)
	}
	if c.EvalBatch < 2 {
		return fmt.Errorf("%w: mlp EvalBatch %d, want ≥ 2", ErrConfig, c.EvalBatch)
	}
	return nil
}

// ParseMLPName parses a model name such as "mlp:784-256-10" into layer sizes.
func ParseMLPName(name string) ([]int, error) {
	rest, ok := strings.CutPrefix(name, "mlp:")
	if !ok {
		return nil, fmt.Errorf("%w: model name %q does not start with \"mlp:\"", ErrConfig, name)
	}
	parts := strings.Split(rest, "-")
	sizes := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return nil, fmt.Errorf("%w: model name %q: layer %d: %v", ErrConfig, name, i, err)
		}
		sizes[i] = n
	}
	if err := (MLPConfig{Sizes: sizes}).Validate(); err != nil {
		return nil, fmt.Errorf("model name %q: %w", name, err)
	}
	return sizes, nil
}

// MLP is a fully connected classifier: ReLU hidden layers, softmax cross-entropy loss.
//
// Layout: "fc0.w" [Sizes[0], Sizes[1]], "fc0.b" [Sizes[1]], "fc1.w", ... in forward order. Hidden
// weights are He-uniform U(±√(6/in)), the last layer U(±1/√in) (so the initial loss is close to
// ln(classes) even for non-centred inputs such as pixel intensities), biases zero. Not safe for concurrent use.
type MLP struct {
	cfg    MLPConfig
	layout Layout
	flat   []float32

	train *mlpProgram
	eval  evalCache[*mlpProgram]
}

// mlpProgram is a compiled MLP graph for one batch size with its bound input tensors.
type mlpProgram struct {
	*program
	n      int
	x      []float32 // backing of the input [n, Sizes[0]]
	onehot []float32 // backing of the one-hot targets [n, classes] (training only)
}

var _ Model = (*MLP)(nil)

// NewMLP builds an MLP and initialises its parameters from cfg.Seed.
func NewMLP(cfg MLPConfig) (*MLP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &MLP{cfg: cfg}
	var lb layoutBuilder
	for i := 0; i+1 < len(cfg.Sizes); i++ {
		lb.add(fmt.Sprintf("fc%d.w", i), cfg.Sizes[i], cfg.Sizes[i+1])
		lb.add(fmt.Sprintf("fc%d.b", i), cfg.Sizes[i+1])
	}
	m.layout = lb.l
	m.flat = make([]float32, lb.off)
	r := initRand(cfg.Seed)
	last := len(cfg.Sizes) - 2
	for i := 0; i <= last; i++ {
		w := m.layout[2*i]
		in := cfg.Sizes[i]
		lim := heLimit(in)
		if i == last {
			lim = outputLimit(in)
		}
		fillUniform(r, m.flat[w.Offset:w.Offset+w.Size()], lim)
	}
	var err error
	if m.train, err = m.build(cfg.Batch, true); err != nil {
		return nil, err
	}
	return m, nil
}

// Name is "mlp:" followed by the layer sizes joined by "-", e.g. "mlp:784-256-10".
func (m *MLP) Name() string {
	s := make([]string, len(m.cfg.Sizes))
	for i, v := range m.cfg.Sizes {
		s[i] = strconv.Itoa(v)
	}
	return "mlp:" + strings.Join(s, "-")
}

// Config returns the configuration with defaults filled in.
func (m *MLP) Config() MLPConfig {
	c := m.cfg
	c.Sizes = append([]int(nil), c.Sizes...)
	return c
}

// Layout is the parameter layout.
func (m *MLP) Layout() Layout { return m.layout }

// Params is the live flat parameter vector.
func (m *MLP) Params() []float32 { return m.flat }

// BatchSize is the number of samples Grad expects.
func (m *MLP) BatchSize() int { return m.cfg.Batch }

// Features is the input width Sizes[0].
func (m *MLP) Features() int { return m.cfg.Sizes[0] }

// Classes is the output width.
func (m *MLP) Classes() int { return m.cfg.Sizes[len(m.cfg.Sizes)-1] }

func (m *MLP) build(n int, training bool) (*mlpProgram, error) {
	p := &mlpProgram{n: n}
	err := buildSafely(func() error {
		in, classes := m.Features(), m.Classes()
		g := G.NewGraph()
		params := graphParams(g, m.layout, m.flat)
		p.x = make([]float32, n*in)
		h := G.NewMatrix(g, tensor.Float32, G.WithShape(n, in), G.WithName("x"),
			G.WithValue(tensor.New(tensor.WithShape(n, in), tensor.WithBacking(p.x))))
		var err error
		for i := 0; i+1 < len(m.cfg.Sizes); i++ {
			if h, err = dense(h, params[fmt.Sprintf("fc%d.w", i)], params[fmt.Sprintf("fc%d.b", i)]); err != nil {
				return err
			}
			if i+2 < len(m.cfg.Sizes) {
				if h, err = G.Rectify(h); err != nil {
					return err
				}
			}
		}
		logp, err := logSoftmax(h)
		if err != nil {
			return err
		}
		if !training {
			p.program, err = compile(g, nil, nil, logp)
			return err
		}
		p.onehot = make([]float32, n*classes)
		oh := G.NewMatrix(g, tensor.Float32, G.WithShape(n, classes), G.WithName("onehot"),
			G.WithValue(tensor.New(tensor.WithShape(n, classes), tensor.WithBacking(p.onehot))))
		loss, err := crossEntropy(logp, oh, n)
		if err != nil {
			return err
		}
		p.program, err = compile(g, orderedParams(m.layout, params), loss, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("nn: building %s graph for batch %d: %w", m.Name(), n, err)
	}
	return p, nil
}

func (m *MLP) checkBatch(b Batch, n int) error {
	in := m.Features()
	if b.Tokens != nil {
		return fmt.Errorf("%w: mlp takes X, not Tokens", ErrBatch)
	}
	if len(b.X) != n*in {
		return fmt.Errorf("%w: X has %d values, want %d samples × %d features = %d", ErrBatch, len(b.X), n, in, n*in)
	}
	return checkLabels(b.Y, m.Classes(), "label")
}

// Grad writes dLoss/dθ for b (exactly BatchSize samples) into grad and returns the mean
// cross-entropy loss.
func (m *MLP) Grad(b Batch, grad []float32) (float32, error) {
	n := m.cfg.Batch
	if len(b.Y) != n {
		return 0, fmt.Errorf("%w: %d labels, want batch size %d", ErrBatch, len(b.Y), n)
	}
	if err := m.checkBatch(b, n); err != nil {
		return 0, err
	}
	if len(grad) != len(m.flat) {
		return 0, fmt.Errorf("%w: %d, want %d", ErrGrad, len(grad), len(m.flat))
	}
	p := m.train
	copy(p.x, b.X)
	classes := m.Classes()
	clear(p.onehot)
	for i, y := range b.Y {
		p.onehot[i*classes+y] = 1
	}
	if err := p.run(); err != nil {
		return 0, err
	}
	if err := p.copyGrads(m.layout, grad); err != nil {
		return 0, err
	}
	return scalarF32(p.loss)
}

// Eval returns the summed cross-entropy, the number of correct arg-max predictions and the number
// of samples in b (any number, len(b.Y)). It runs forward-only graphs in chunks of EvalBatch (a
// final partial chunk gets its own cached graph) and touches neither parameters nor gradients.
func (m *MLP) Eval(b Batch) (lossSum float64, correct, count int, err error) {
	total := len(b.Y)
	if err := m.checkBatch(b, total); err != nil {
		return 0, 0, 0, err
	}
	in, classes := m.Features(), m.Classes()
	for start := 0; start < total; start += m.cfg.EvalBatch {
		rows := min(m.cfg.EvalBatch, total-start)
		p, err := m.evalProgram(rows)
		if err != nil {
			return 0, 0, 0, err
		}
		copy(p.x, b.X[start*in:(start+rows)*in])
		if err := p.run(); err != nil {
			return 0, 0, 0, err
		}
		logp, ok := float32s(p.logp)
		if !ok {
			return 0, 0, 0, fmt.Errorf("%w: log-probabilities have type %T", ErrGraph, p.logp.Data())
		}
		l, c := scoreRows(logp, classes, b.Y[start:start+rows], rows)
		lossSum += l
		correct += c
	}
	return lossSum, correct, total, nil
}

// evalProgram returns the forward graph for chunks of rows samples. A single row is padded to a
// graph of two (a [1, n] matrix would be treated as a vector by gorgonia's Mul); padding rows are
// zero and not scored.
func (m *MLP) evalProgram(rows int) (*mlpProgram, error) {
	p, err := m.eval.get(max(rows, 2), m.cfg.EvalBatch, func(n int) (*mlpProgram, error) { return m.build(n, false) })
	if err != nil {
		return nil, err
	}
	if rows < p.n {
		clear(p.x[rows*m.Features():])
	}
	return p, nil
}
