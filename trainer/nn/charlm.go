package nn

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// CharLMConfig configures a CharLM. The zero value is a byte-level model (Vocab 256) with Context 64,
// Embed 64, an MLP of width 128 (2×Embed), batch 32 sequences, seed 0.
type CharLMConfig struct {
	// Vocab is the number of distinct tokens; tokens are 0 ≤ t < Vocab. Zero means 256; otherwise ≥ 2.
	Vocab int
	// Context is the sequence length T of every sample. Zero means 64; otherwise ≥ 2.
	Context int
	// Embed is the model width D. Zero means 64; otherwise ≥ 2.
	Embed int
	// Hidden is the width of the block's MLP. Zero means 2×Embed; negative means no MLP.
	Hidden int
	// Batch is the number of sequences Grad expects. Zero means 32; otherwise ≥ 1.
	Batch int
	// Seed seeds the weight initialisation (PCG). Same Seed ⇒ bit-identical parameters.
	Seed uint64
	// EvalBatch is the number of sequences per Eval graph. Zero means Batch; otherwise ≥ 1.
	EvalBatch int
	// LayerNorm adds pre-LayerNorms (before attention, before the MLP, before the output projection),
	// composed from primitive ops. False means none.
	LayerNorm bool
}

func (c CharLMConfig) withDefaults() CharLMConfig {
	if c.Vocab == 0 {
		c.Vocab = 256
	}
	if c.Context == 0 {
		c.Context = 64
	}
	if c.Embed == 0 {
		c.Embed = 64
	}
	if c.Hidden == 0 {
		c.Hidden = 2 * c.Embed
	}
	if c.Batch == 0 {
		c.Batch = 32
	}
	if c.EvalBatch == 0 {
		c.EvalBatch = c.Batch
	}
	return c
}

// Validate reports whether c (after defaults) describes a buildable model.
func (c CharLMConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Vocab < 2:
		return fmt.Errorf("%w: charlm Vocab %d, want ≥ 2", ErrConfig, c.Vocab)
	case c.Context < 2:
		return fmt.Errorf("%w: charlm Context %d, want ≥ 2", ErrConfig, c.Context)
	case c.Embed < 2:
		return fmt.Errorf("%w: charlm Embed %d, want ≥ 2", ErrConfig, c.Embed)
	case c.Hidden == 1:
		return fmt.Errorf("%w: charlm Hidden 1, want ≥ 2 or negative for no MLP", ErrConfig)
	case c.Batch < 1:
		return fmt.Errorf("%w: charlm Batch %d, want ≥ 1", ErrConfig, c.Batch)
	case c.EvalBatch < 1:
		return fmt.Errorf("%w: charlm EvalBatch %d, want ≥ 1", ErrConfig, c.EvalBatch)
	}
	return nil
}

// CharLM is a one-block causal transformer over characters:
//
//	x  = tok.emb[token] + pos.emb[position]                      [n·T, D]
//	q, k, v = x·attn.wq, x·attn.wk, x·attn.wv                   (x → LN1(x) with LayerNorm)
//	a  = softmax(q·kᵀ/√D + mask) per sequence, mask = −1e9 above the diagonal (causal)
//	h  = x + (a·v)·attn.wo + attn.bo
//	h  = h + relu(h·mlp.w1 + mlp.b1)·mlp.w2 + mlp.b2             (if Hidden > 0; h → LN2(h) inside)
//	logits = h·out.w + out.b                                      [n·T, Vocab] (h → LNf(h))
//
// LayerNorm is off by default; with it, the input of the attention, of the MLP and of the output
// projection is normalised per row, (z − mean)/√(var + 1e-5)·gain + bias (pre-LN; the residual
// stream itself is not normalised).
//
// The loss is the mean cross-entropy of the next token over all n·T positions; Eval's correct counts
// positions whose arg-max is the target. Layout, in this order: "tok.emb" [V,D], "pos.emb" [T,D],
// ["ln1.g", "ln1.b" [D]], "attn.wq", "attn.wk", "attn.wv", "attn.wo" [D,D], "attn.bo" [D], then if
// Hidden > 0 ["ln2.g", "ln2.b"], "mlp.w1" [D,H], "mlp.b1" [H], "mlp.w2" [H,D], "mlp.b2" [D], then
// ["lnf.g", "lnf.b"], "out.w" [D,V], "out.b" [V]; bracketed tensors only with LayerNorm.
// Initialisation: embeddings U(−0.1, 0.1), attention projections and mlp.w2 Glorot-uniform, mlp.w1
// He-uniform, out.w U(±1/√D), LayerNorm gains 1, biases 0. Not safe for concurrent use.
type CharLM struct {
	cfg CharLMConfig
	lm
}

var _ Model = (*CharLM)(nil)

// NewCharLM builds a CharLM and initialises its parameters from cfg.Seed.
func NewCharLM(cfg CharLMConfig) (*CharLM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &CharLM{cfg: cfg}
	m.lm = lm{kind: "charlm", vocab: cfg.Vocab, context: cfg.Context, batch: cfg.Batch, evalBatch: cfg.EvalBatch, graphFor: m.build}
	V, T, D, H := cfg.Vocab, cfg.Context, cfg.Embed, cfg.Hidden
	var lb layoutBuilder
	lb.add("tok.emb", V, D)
	lb.add("pos.emb", T, D)
	if cfg.LayerNorm {
		lb.add("ln1.g", D)
		lb.add("ln1.b", D)
	}
	lb.add("attn.wq", D, D)
	lb.add("attn.wk", D, D)
	lb.add("attn.wv", D, D)
	lb.add("attn.wo", D, D)
	lb.add("attn.bo", D)
	if H > 0 {
		if cfg.LayerNorm {
			lb.add("ln2.g", D)
			lb.add("ln2.b", D)
		}
		lb.add("mlp.w1", D, H)
		lb.add("mlp.b1", H)
		lb.add("mlp.w2", H, D)
		lb.add("mlp.b2", D)
	}
	if cfg.LayerNorm {
		lb.add("lnf.g", D)
		lb.add("lnf.b", D)
	}
	lb.add("out.w", D, V)
	lb.add("out.b", V)
	m.layout = lb.l
	m.flat = make([]float32, lb.off)

	r := initRand(cfg.Seed)
	for _, t := range m.layout {
		dst := m.flat[t.Offset : t.Offset+t.Size()]
		switch t.Name {
		case "ln1.g", "ln2.g", "lnf.g":
			for i := range dst {
				dst[i] = 1
			}
		case "tok.emb", "pos.emb":
			fillUniform(r, dst, 0.1)
		case "mlp.w1":
			fillUniform(r, dst, heLimit(t.Shape[0]))
		case "out.w":
			fillUniform(r, dst, outputLimit(t.Shape[0]))
		default:
			if len(t.Shape) == 2 {
				fillUniform(r, dst, glorotLimit(t.Shape[0], t.Shape[1]))
			}
		}
	}
	var err error
	if m.train, err = m.build(cfg.Batch, true); err != nil {
		return nil, err
	}
	return m, nil
}

// Name is like "charlm:v96-t64-d64-h128" (h0 when the block has no MLP, "-ln" appended with
// LayerNorm).
func (m *CharLM) Name() string {
	name := fmt.Sprintf("charlm:v%d-t%d-d%d-h%d", m.cfg.Vocab, m.cfg.Context, m.cfg.Embed, max(m.cfg.Hidden, 0))
	if m.cfg.LayerNorm {
		name += "-ln"
	}
	return name
}

// Config returns the configuration with defaults filled in.
func (m *CharLM) Config() CharLMConfig { return m.cfg }

// Layout is the parameter layout.
func (m *CharLM) Layout() Layout { return m.layout }

// Params is the live flat parameter vector.
func (m *CharLM) Params() []float32 { return m.flat }

// BatchSize is the number of sequences Grad expects; each holds Context tokens.
func (m *CharLM) BatchSize() int { return m.cfg.Batch }

// Context is the sequence length.
func (m *CharLM) Context() int { return m.cfg.Context }

// Vocab is the number of distinct tokens.
func (m *CharLM) Vocab() int { return m.cfg.Vocab }

func (m *CharLM) build(n int, training bool) (*lmProgram, error) {
	p := &lmProgram{n: n}
	err := buildSafely(func() error {
		V, T, D, H := m.cfg.Vocab, m.cfg.Context, m.cfg.Embed, m.cfg.Hidden
		N := n * T
		g := G.NewGraph()
		params := graphParams(g, m.layout, m.flat)

		tok, pos := lmInputs(g, p, N, T)
		mask := causalMask(n, T)

		var err error
		must := func(x *G.Node, e error) *G.Node {
			if e != nil && err == nil {
				err = e
			}
			return x
		}
		te := must(embed(params["tok.emb"], tok))
		pe := must(embed(params["pos.emb"], pos))
		if err != nil {
			return err
		}
		x := must(G.Add(te, pe))
		a := x
		if m.cfg.LayerNorm {
			a = must(layerNorm(x, params["ln1.g"], params["ln1.b"]))
		}
		q := must(G.Reshape(must(G.Mul(a, params["attn.wq"])), tensor.Shape{n, T, D}))
		k := must(G.Reshape(must(G.Mul(a, params["attn.wk"])), tensor.Shape{n, T, D}))
		v := must(G.Reshape(must(G.Mul(a, params["attn.wv"])), tensor.Shape{n, T, D}))
		if err != nil {
			return err
		}
		scores := must(G.BatchedMatMul(q, k, false, true))
		scaled := must(G.Mul(scores, G.NewConstant(float32(1/math.Sqrt(float64(D))))))
		// softmax over the last axis, as rows of a [n·T, T] matrix (see logSoftmax)
		logAtt := must(logSoftmax(must(G.Reshape(must(G.Add(scaled, mask)), tensor.Shape{n * T, T}))))
		att := must(G.Reshape(must(G.Exp(logAtt)), tensor.Shape{n, T, T}))
		ctx := must(G.Reshape(must(G.BatchedMatMul(att, v)), tensor.Shape{N, D}))
		if err != nil {
			return err
		}
		h := must(G.Add(x, must(dense(ctx, params["attn.wo"], params["attn.bo"]))))
		if H > 0 {
			f := h
			if m.cfg.LayerNorm {
				f = must(layerNorm(h, params["ln2.g"], params["ln2.b"]))
			}
			f = must(G.Rectify(must(dense(f, params["mlp.w1"], params["mlp.b1"]))))
			h = must(G.Add(h, must(dense(f, params["mlp.w2"], params["mlp.b2"]))))
		}
		if m.cfg.LayerNorm {
			h = must(layerNorm(h, params["lnf.g"], params["lnf.b"]))
		}
		logits := must(dense(h, params["out.w"], params["out.b"]))
		logp := must(logSoftmax(logits))
		if err != nil {
			return err
		}
		return finishLM(g, p, logp, N, V, m.layout, params, training)
	})
	if err != nil {
		return nil, fmt.Errorf("nn: building %s graph for %d sequences: %w", m.Name(), n, err)
	}
	return p, nil
}

// ParseCharLMName parses a name such as "charlm:v96-t64-d64-h128" or "charlm:v96-t64-d64-h128-ln"
// (as returned by Name) into the architecture fields of a config (Vocab, Context, Embed, Hidden,
// LayerNorm; h0 means no MLP). Batch, Seed and
// EvalBatch are left zero.
func ParseCharLMName(name string) (CharLMConfig, error) {
	var c CharLMConfig
	rest, ok := strings.CutPrefix(name, "charlm:")
	if !ok {
		return c, fmt.Errorf("%w: model name %q does not start with \"charlm:\"", ErrConfig, name)
	}
	rest, c.LayerNorm = strings.CutSuffix(rest, "-ln")
	parts := strings.Split(rest, "-")
	fields := []struct {
		prefix string
		dst    *int
	}{{"v", &c.Vocab}, {"t", &c.Context}, {"d", &c.Embed}, {"h", &c.Hidden}}
	if len(parts) != len(fields) {
		return CharLMConfig{}, fmt.Errorf("%w: model name %q, want charlm:v<vocab>-t<context>-d<embed>-h<hidden>", ErrConfig, name)
	}
	for i, f := range fields {
		digits, ok := strings.CutPrefix(parts[i], f.prefix)
		v, err := strconv.Atoi(digits)
		if !ok || err != nil || v < 0 || (v == 0 && f.prefix != "h") {
			return CharLMConfig{}, fmt.Errorf("%w: model name %q: bad field %q, want %s<positive number>", ErrConfig, name, parts[i], f.prefix)
		}
		*f.dst = v
	}
	if c.Hidden == 0 {
		c.Hidden = -1
	}
	if err := c.Validate(); err != nil {
		return CharLMConfig{}, fmt.Errorf("model name %q: %w", name, err)
	}
	return c, nil
}
