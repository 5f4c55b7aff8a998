package nn

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Pipeline stages of the GPT.
//
// A stage group of S stages holds one replica of a GPT: stage s holds the consecutive blocks
// [First, Last), the first stage also the embeddings (wte, wpe), the last also the final
// LayerNorm and the tied head. A micro-batch of n sequences flows forward as activations
// x [n·T, D] and backward as their gradients dLoss/dx [n·T, D].
//
// The tie: the head is wte itself, so the last stage holds a copy of wte (the same name in its
// layout, marked Tied in its spans). After every step's backward passes the first and last
// stages exchange their wte gradients and both add them (first's + last's, in that order, so the
// sum is the same bits on both), and both apply the same AdamW update to the same state: the two
// copies stay bit-identical, and the first stage owns the tensor (what goes to the whole model's
// layout). The other choice, computing the head on the first stage (the last stage sending its
// final hidden states around the ring), would put the largest product of a byte-level model on
// the first stage in the middle of the pipeline and add a round trip per micro-batch; the
// exchange costs one V×D tensor each way per step, off the pipeline's critical path.
//
// Backward on a non-last stage runs a training graph whose cost is Σ(out ⊙ dOut), dOut the
// gradient of the stage's output received from the next stage: gorgonia's Grad of that scalar
// gives dLoss/dθ for the stage's parameters and dLoss/dx for its input. That graph recomputes
// the forward pass (re-materialisation, as GPipe does): a stage keeps only the inputs of the
// micro-batches in flight, never their intermediate activations, at the cost of one more
// forward pass per micro-batch on every stage but the last (whose forward and backward are one
// run of its loss graph).

// StageSpec places one stage in its group: it is stage Index of Count and holds the blocks
// [First, Last).
type StageSpec struct {
	Index, Count int
	First, Last  int
}

// IsFirst reports whether the stage holds the embeddings.
func (s StageSpec) IsFirst() bool { return s.Index == 0 }

// IsLast reports whether the stage holds the final LayerNorm and the head.
func (s StageSpec) IsLast() bool { return s.Index == s.Count-1 }

// SplitStages cuts layers blocks into stages consecutive ranges of sizes differing by at most
// one, the earlier stages taking the extra blocks (the last stage also runs the head).
func SplitStages(layers, stages int) ([]StageSpec, error) {
	if stages < 1 || layers < stages {
		return nil, fmt.Errorf("%w: %d stages for %d blocks, want 1 ≤ stages ≤ blocks", ErrConfig, stages, layers)
	}
	out := make([]StageSpec, stages)
	first := 0
	for s := range out {
		n := layers / stages
		if s < layers%stages {
			n++
		}
		out[s] = StageSpec{Index: s, Count: stages, First: first, Last: first + n}
		first += n
	}
	return out, nil
}

func (s StageSpec) validate(layers int) error {
	switch {
	case s.Count < 1 || s.Index < 0 || s.Index >= s.Count:
		return fmt.Errorf("%w: stage %d of %d", ErrConfig, s.Index, s.Count)
	case s.First < 0 || s.Last > layers || s.First > s.Last:
		return fmt.Errorf("%w: stage blocks [%d, %d) of %d", ErrConfig, s.First, s.Last, layers)
	case s.First == s.Last && !s.IsFirst() && !s.IsLast():
		return fmt.Errorf("%w: middle stage %d holds no block", ErrConfig, s.Index)
	case s.IsFirst() && s.First != 0, s.IsLast() && s.Last != layers:
		return fmt.Errorf("%w: stage %d of %d holds blocks [%d, %d); the first starts at 0 and the last ends at %d", ErrConfig, s.Index, s.Count, s.First, s.Last, layers)
	}
	return nil
}

// Span maps one tensor of a stage's flat vector onto the whole model's: elements
// [Stage, Stage+Len) of the stage are [Whole, Whole+Len) of the whole GPT's layout.
type Span struct {
	Name         string
	Stage, Whole int
	Len          int
	// Tied marks the last stage's copy of wte: the first stage owns that tensor.
	Tied bool
}

// StageMicro is one micro-batch as a stage sees it: Tokens (n·T ids) on the first stage, the
// input activation X ([n·T, D] row-major) on the others, and the targets Y (n·T) on the last.
type StageMicro struct {
	Tokens []int
	X      []float32
	Y      []int
}

// GPTStage is one pipeline stage of a GPT (see StageSpec and the notes above): its own flat
// parameter vector, laid out with the whole model's tensor names, and two compiled graphs for a
// micro-batch of Config().Batch sequences: forward (non-last stages) and training. Not safe for
// concurrent use.
type GPTStage struct {
	cfg    GPTConfig
	spec   StageSpec
	layout Layout
	flat   []float32
	spans  []Span
	whole  int // the whole model's parameter count

	fwd, train *stageProgram
	eval       evalCache[*stageProgram] // forward-only graphs of Eval (the last stage's with the head)
}

// stageProgram is a compiled stage graph with its bound inputs.
type stageProgram struct {
	*program
	tokens []int     // first stage: token ids [N]
	x      []float32 // other stages: input activation [N·D]
	up     []float32 // non-last training: gradient of the output [N·D]
	onehot []float32 // last training: one-hot targets [N·V]
	dx     *G.Node   // non-first training: gradient of the input
}

// NewGPTStage builds stage spec of the GPT cfg, with cfg.Batch sequences per micro-batch, and
// initialises its parameters to the whole model's initial values for cfg.Seed (NewGPT's).
func NewGPTStage(cfg GPTConfig, spec StageSpec) (*GPTStage, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := spec.validate(cfg.Layers); err != nil {
		return nil, err
	}
	whole := gptLayout(cfg)
	s := &GPTStage{cfg: cfg, spec: spec, whole: whole.Size()}
	var lb layoutBuilder
	for _, t := range whole {
		if !s.holds(t.Name) {
			continue
		}
		s.spans = append(s.spans, Span{Name: t.Name, Stage: lb.off, Whole: t.Offset, Len: t.Size(),
			Tied: t.Name == "transformer.wte.weight" && !spec.IsFirst()})
		lb.add(t.Name, t.Shape...)
	}
	s.layout = lb.l
	s.flat = make([]float32, lb.off)
	// The whole model's initial values, drawn in its order; only the stage's tensors are kept (a
	// stage never holds the whole vector).
	at := make(map[string]Span, len(s.spans))
	for _, sp := range s.spans {
		at[sp.Name] = sp
	}
	gptInitTensors(cfg, whole, func(t Tensor) []float32 {
		if sp, ok := at[t.Name]; ok {
			return s.flat[sp.Stage : sp.Stage+sp.Len]
		}
		return nil
	})
	var err error
	if !spec.IsLast() {
		if s.fwd, err = s.build(cfg.Batch, false); err != nil {
			return nil, err
		}
	}
	if s.train, err = s.build(cfg.Batch, true); err != nil {
		return nil, err
	}
	return s, nil
}

// holds reports whether the stage's layout has the whole model's tensor name.
func (s *GPTStage) holds(name string) bool {
	switch name {
	case "transformer.wte.weight":
		return s.spec.IsFirst() || s.spec.IsLast()
	case "transformer.wpe.weight":
		return s.spec.IsFirst()
	case "transformer.ln_f.weight", "transformer.ln_f.bias":
		return s.spec.IsLast()
	}
	for i := s.spec.First; i < s.spec.Last; i++ {
		for _, t := range gptBlockTensors {
			if name == gptBlockName(i, t) {
				return true
			}
		}
	}
	return false
}

// Config is the model's configuration with defaults filled in; Batch is the micro-batch size.
func (s *GPTStage) Config() GPTConfig { return s.cfg }

// Spec is the stage's place in its group.
func (s *GPTStage) Spec() StageSpec { return s.spec }

// Layout is the stage's parameter layout (the whole model's names, stage offsets).
func (s *GPTStage) Layout() Layout { return s.layout }

// Params is the live flat parameter vector of the stage.
func (s *GPTStage) Params() []float32 { return s.flat }

// Spans maps the stage's tensors onto the whole model's layout, in layout order.
func (s *GPTStage) Spans() []Span { return s.spans }

// WholeSize is the whole model's parameter count.
func (s *GPTStage) WholeSize() int { return s.whole }

// ActivationLen is the length of an activation or its gradient between stages: n·T·D.
func (s *GPTStage) ActivationLen() int { return s.cfg.Batch * s.cfg.Context * s.cfg.Embed }

// TiedLen is the length of the tied wte tensor (V·D), exchanged between the first and last stage.
func (s *GPTStage) TiedLen() int { return s.cfg.Vocab * s.cfg.Embed }

// Tied returns the stage's range of the tied wte tensor: [lo, hi) of its vector, and whether it
// holds it (the first and the last stage).
func (s *GPTStage) Tied() (lo, hi int, ok bool) {
	for _, sp := range s.spans {
		if sp.Name == "transformer.wte.weight" {
			return sp.Stage, sp.Stage + sp.Len, true
		}
	}
	return 0, 0, false
}

// Owned is the range of the whole model's vector the stage owns, and where it sits in the
// stage's: elements [stage, stage+n) of Params() are [whole, whole+n) of the whole model's. The
// whole layout runs wte, wpe, the blocks in order, ln_f, so every stage owns one contiguous range
// and the stages' ranges tile the whole vector in stage order (what a stage's pseudo-gradient
// covers); only the last stage's tied copy of wte lies outside it.
func (s *GPTStage) Owned() (stage, whole, n int) {
	first := true
	for _, sp := range s.spans {
		if sp.Tied {
			continue
		}
		if first {
			stage, whole, first = sp.Stage, sp.Whole, false
		}
		n += sp.Len
	}
	return stage, whole, n
}

// FromWhole copies the stage's tensors out of whole (a vector in the whole model's layout) into
// dst (the stage's length).
func (s *GPTStage) FromWhole(dst, whole []float32) {
	for _, sp := range s.spans {
		copy(dst[sp.Stage:sp.Stage+sp.Len], whole[sp.Whole:sp.Whole+sp.Len])
	}
}

// ToWhole copies the tensors the stage owns (all but a tied copy) from src into whole.
func (s *GPTStage) ToWhole(whole, src []float32) {
	for _, sp := range s.spans {
		if !sp.Tied {
			copy(whole[sp.Whole:sp.Whole+sp.Len], src[sp.Stage:sp.Stage+sp.Len])
		}
	}
}

// AddToWhole adds every tensor of src (a tied copy too) into whole: the stages' raw gradients,
// added up this way, are the whole model's.
func (s *GPTStage) AddToWhole(whole, src []float32) {
	for _, sp := range s.spans {
		w, g := whole[sp.Whole:sp.Whole+sp.Len], src[sp.Stage:sp.Stage+sp.Len]
		for i, v := range g {
			w[i] += v
		}
	}
}

// build compiles the stage's graph for micro-batches of n sequences: the training graph, or the
// forward-only one (a non-last stage's output activation, the last stage's log-probabilities).
func (s *GPTStage) build(n int, training bool) (*stageProgram, error) {
	p := &stageProgram{}
	err := buildSafely(func() error {
		D, T, V := s.cfg.Embed, s.cfg.Context, s.cfg.Vocab
		N := n * T
		g := G.NewGraph()
		params := graphParams(g, s.layout, s.flat)
		var x, xin *G.Node
		var err error
		if s.spec.IsFirst() {
			lp := &lmProgram{}
			tok, pos := lmInputs(g, lp, N, T)
			p.tokens = lp.tokens
			if x, err = gptEmbed(params, tok, pos); err != nil {
				return err
			}
		} else {
			p.x = make([]float32, N*D)
			xin = G.NewMatrix(g, tensor.Float32, G.WithShape(N, D), G.WithName("x_in"),
				G.WithValue(tensor.New(tensor.WithShape(N, D), tensor.WithBacking(p.x))))
			x = xin
		}
		if x, err = gptBlocks(params, x, s.cfg, n, s.spec.First, s.spec.Last); err != nil {
			return err
		}
		wrt := orderedParams(s.layout, params)
		if xin != nil {
			wrt = append(wrt, xin)
		}
		var cost *G.Node
		switch {
		case !training && s.spec.IsLast():
			logp, err := gptHead(params, x)
			if err != nil {
				return err
			}
			p.program, err = compile(g, nil, nil, logp)
			return err
		case !training:
			p.program, err = compile(g, nil, nil, x) // the output activation, read through p.logp
			return err
		case s.spec.IsLast():
			logp, err := gptHead(params, x)
			if err != nil {
				return err
			}
			p.onehot = make([]float32, N*V)
			oh := G.NewMatrix(g, tensor.Float32, G.WithShape(N, V), G.WithName("onehot"),
				G.WithValue(tensor.New(tensor.WithShape(N, V), tensor.WithBacking(p.onehot))))
			if cost, err = crossEntropy(logp, oh, N); err != nil {
				return err
			}
		default:
			p.up = make([]float32, N*D)
			up := G.NewMatrix(g, tensor.Float32, G.WithShape(N, D), G.WithName("d_out"),
				G.WithValue(tensor.New(tensor.WithShape(N, D), tensor.WithBacking(p.up))))
			prod, err := G.HadamardProd(x, up)
			if err != nil {
				return err
			}
			if cost, err = G.Sum(prod); err != nil {
				return err
			}
		}
		if p.program, err = compile(g, wrt, cost, nil); err != nil {
			return err
		}
		if xin != nil {
			p.dx = p.grads[len(s.layout)]
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("nn: building stage %d/%d (blocks [%d, %d)) of %s for %d sequences: %w", s.spec.Index, s.spec.Count, s.spec.First, s.spec.Last, s.cfg.name(), n, err)
	}
	return p, nil
}

// Eval runs the stage forward only on a chunk of n validation sequences, 1 ≤ n ≤ EvalBatch (as
// many as mb carries: Tokens on the first stage, X on the others). A non-last stage writes its
// output activation into out (n·T·D values); the last stage scores its log-probabilities against
// mb.Y and returns the summed next-token cross-entropy and the positions whose arg-max is the
// target (the whole GPT's Eval figures for the chunk; out unused). It touches neither parameters
// nor gradients; the graphs are cached, one for chunks of EvalBatch and one for the latest
// other size.
func (s *GPTStage) Eval(mb StageMicro, out []float32) (lossSum float64, correct int, err error) {
	T, D := s.cfg.Context, s.cfg.Embed
	var n int
	if s.spec.IsFirst() {
		if len(mb.Tokens) == 0 || len(mb.Tokens)%T != 0 {
			return 0, 0, fmt.Errorf("%w: stage 0 evaluates whole sequences of %d tokens, got %d tokens", ErrBatch, T, len(mb.Tokens))
		}
		n = len(mb.Tokens) / T
	} else {
		if len(mb.X) == 0 || len(mb.X)%(T*D) != 0 {
			return 0, 0, fmt.Errorf("%w: stage %d evaluates activations of whole sequences (%d values each), got %d values", ErrBatch, s.spec.Index, T*D, len(mb.X))
		}
		n = len(mb.X) / (T * D)
	}
	if n > s.cfg.EvalBatch {
		return 0, 0, fmt.Errorf("%w: a chunk of %d sequences, more than EvalBatch %d", ErrBatch, n, s.cfg.EvalBatch)
	}
	N := n * T
	last := s.spec.IsLast()
	switch {
	case last && len(mb.Y) != N:
		return 0, 0, fmt.Errorf("%w: the last stage scores %d targets, got %d", ErrBatch, N, len(mb.Y))
	case !last && len(out) != N*D:
		return 0, 0, fmt.Errorf("%w: output of %d values, want %d", ErrGrad, len(out), N*D)
	}
	p, err := s.eval.get(n, s.cfg.EvalBatch, func(n int) (*stageProgram, error) { return s.build(n, false) })
	if err != nil {
		return 0, 0, err
	}
	if s.spec.IsFirst() {
		if err := checkLabels(mb.Tokens, s.cfg.Vocab, "token"); err != nil {
			return 0, 0, err
		}
		copy(p.tokens, mb.Tokens)
	} else {
		copy(p.x, mb.X)
	}
	if last {
		if err := checkLabels(mb.Y, s.cfg.Vocab, "target"); err != nil {
			return 0, 0, err
		}
	}
	if err := p.run(); err != nil {
		return 0, 0, err
	}
	if !last {
		return 0, 0, copyValue(out, p.logp)
	}
	logp, ok := float32s(p.logp)
	if !ok {
		return 0, 0, fmt.Errorf("%w: log-probabilities have type %T", ErrGraph, p.logp.Data())
	}
	lossSum, correct = scoreRows(logp, s.cfg.Vocab, mb.Y, N)
	return lossSum, correct, nil
}

// bind checks mb against what the stage takes and writes it into p's inputs.
func (s *GPTStage) bind(p *stageProgram, mb StageMicro, training bool) error {
	N := s.cfg.Batch * s.cfg.Context
	if s.spec.IsFirst() {
		if len(mb.Tokens) != N {
			return fmt.Errorf("%w: stage 0 takes %d tokens, got %d", ErrBatch, N, len(mb.Tokens))
		}
		if err := checkLabels(mb.Tokens, s.cfg.Vocab, "token"); err != nil {
			return err
		}
		copy(p.tokens, mb.Tokens)
	} else {
		if len(mb.X) != len(p.x) {
			return fmt.Errorf("%w: stage %d takes an activation of %d values, got %d", ErrBatch, s.spec.Index, len(p.x), len(mb.X))
		}
		copy(p.x, mb.X)
	}
	if training && s.spec.IsLast() {
		if len(mb.Y) != N {
			return fmt.Errorf("%w: the last stage takes %d targets, got %d", ErrBatch, N, len(mb.Y))
		}
		if err := checkLabels(mb.Y, s.cfg.Vocab, "target"); err != nil {
			return err
		}
		clear(p.onehot)
		V := s.cfg.Vocab
		for i, y := range mb.Y {
			p.onehot[i*V+y] = 1
		}
	}
	return nil
}

// Forward runs a non-last stage forward on mb and writes its output activation into out
// (ActivationLen values).
func (s *GPTStage) Forward(mb StageMicro, out []float32) error {
	if s.spec.IsLast() {
		return fmt.Errorf("%w: the last stage has no forward-only pass; Backward computes the loss", ErrBatch)
	}
	if len(out) != s.ActivationLen() {
		return fmt.Errorf("%w: output of %d values, want %d", ErrGrad, len(out), s.ActivationLen())
	}
	p := s.fwd
	if err := s.bind(p, mb, false); err != nil {
		return err
	}
	if err := p.run(); err != nil {
		return err
	}
	return copyValue(out, p.logp)
}

// Backward runs the stage's training graph on mb: on the last stage it computes the mean loss of
// the micro-batch (dOut nil); on the others dOut is the gradient of the stage's output. It
// overwrites grad (len(Params())) with dLoss/dθ of the stage's tensors and, on every stage but
// the first, dx (ActivationLen values) with dLoss/dx of its input. The loss is returned by the
// last stage, 0 by the others.
func (s *GPTStage) Backward(mb StageMicro, dOut, grad, dx []float32) (float32, error) {
	p := s.train
	switch {
	case len(grad) != len(s.flat):
		return 0, fmt.Errorf("%w: %d, want %d", ErrGrad, len(grad), len(s.flat))
	case !s.spec.IsFirst() && len(dx) != s.ActivationLen():
		return 0, fmt.Errorf("%w: input gradient of %d values, want %d", ErrGrad, len(dx), s.ActivationLen())
	case s.spec.IsLast() && dOut != nil:
		return 0, fmt.Errorf("%w: the last stage takes no output gradient", ErrBatch)
	case !s.spec.IsLast() && len(dOut) != s.ActivationLen():
		return 0, fmt.Errorf("%w: output gradient of %d values, want %d", ErrBatch, len(dOut), s.ActivationLen())
	}
	if err := s.bind(p, mb, true); err != nil {
		return 0, err
	}
	if p.up != nil {
		copy(p.up, dOut)
	}
	if err := p.run(); err != nil {
		return 0, err
	}
	if err := p.copyGrads(s.layout, grad); err != nil {
		return 0, err
	}
	if p.dx != nil {
		if err := copyValue(dx, p.ex.value(p.dx)); err != nil {
			return 0, err
		}
	}
	if !s.spec.IsLast() {
		return 0, nil
	}
	return scalarF32(p.loss)
}

// copyValue copies a float32 tensor value of len(dst) elements into dst in row-major order.
func copyValue(dst []float32, v G.Value) error {
	if v == nil {
		return fmt.Errorf("%w: value was not computed", ErrGraph)
	}
	if d, ok := v.(*tensor.Dense); ok && d.IsView() {
		if m, ok := d.Materialize().(*tensor.Dense); ok {
			v = m
		}
	}
	src, ok := float32s(v)
	if !ok || len(src) != len(dst) {
		return fmt.Errorf("%w: value has %T of length %d, want []float32 of %d", ErrGraph, v.Data(), len(src), len(dst))
	}
	copy(dst, src)
	return nil
}
