package nn

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	G "gorgonia.org/gorgonia"
)

// Bounds that GPTConfig.Validate enforces, so that a typo in a model name is refused instead of
// exhausting memory.
const (
	// GPTMaxParams is the largest parameter count a GPT may have.
	GPTMaxParams = 50_000_000
	// GPTMaxContext is the longest context a GPT may have.
	GPTMaxContext = 1024
	// GPTMaxLayers is the deepest GPT.
	GPTMaxLayers = 96
	// GPTMaxVocab is the largest vocabulary.
	GPTMaxVocab = 65536
	// gptMaxBatchTokens caps sequences·Context of one graph (the one-hot targets and activations).
	gptMaxBatchTokens = 1 << 17
	// gptMaxScores caps sequences·Heads·Context² of one graph (the attention matrices).
	gptMaxScores = 1 << 26
)

// GPTConfig configures a GPT. The zero value is gpt:4-128-4-64 over bytes (Vocab 256), batch 12
// sequences, seed 0.
type GPTConfig struct {
	// Layers is the number of transformer blocks L. Zero means 4; otherwise 1 ≤ L ≤ GPTMaxLayers.
	Layers int
	// Embed is the model width D. Zero means 128; otherwise ≥ 2 and a multiple of Heads.
	Embed int
	// Heads is the number of attention heads NH. Zero means 4; otherwise 1 ≤ NH ≤ Embed.
	Heads int
	// Context is the sequence length T. Zero means 64; otherwise 2 ≤ T ≤ GPTMaxContext.
	Context int
	// Vocab is the number of distinct tokens. Zero means 256 (raw bytes); otherwise 2 ≤ V ≤ GPTMaxVocab.
	Vocab int
	// Batch is the number of sequences Grad expects. Zero means 12; otherwise ≥ 1.
	Batch int
	// EvalBatch is the number of sequences per Eval graph. Zero means Batch; otherwise ≥ 1.
	EvalBatch int
	// Seed seeds the weight initialisation (PCG). Same Seed ⇒ bit-identical parameters.
	Seed uint64
}

func (c GPTConfig) withDefaults() GPTConfig {
	if c.Layers == 0 {
		c.Layers = 4
	}
	if c.Embed == 0 {
		c.Embed = 128
	}
	if c.Heads == 0 {
		c.Heads = 4
	}
	if c.Context == 0 {
		c.Context = 64
	}
	if c.Vocab == 0 {
		c.Vocab = 256
	}
	if c.Batch == 0 {
		c.Batch = 12
	}
	if c.EvalBatch == 0 {
		c.EvalBatch = c.Batch
	}
	return c
}

// gptParamCount is the number of parameters of the layout, in int64 (bounded inputs cannot
// overflow it).
func gptParamCount(L, D, T, V int64) int64 {
	block := 2*D + (D*3*D + 3*D) + (D*D + D) + 2*D + (D*4*D + 4*D) + (4*D*D + D)
	return V*D + T*D + L*block + 2*D
}

// Validate reports whether c (after defaults) describes a model that can be built within the
// bounds above.
func (c GPTConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Layers < 1 || c.Layers > GPTMaxLayers:
		return fmt.Errorf("%w: gpt Layers %d, want 1..%d", ErrConfig, c.Layers, GPTMaxLayers)
	case c.Embed < 2 || c.Embed > 1<<14:
		return fmt.Errorf("%w: gpt Embed %d, want 2..%d", ErrConfig, c.Embed, 1<<14)
	case c.Heads < 1 || c.Heads > c.Embed:
		return fmt.Errorf("%w: gpt Heads %d, want 1..Embed (%d)", ErrConfig, c.Heads, c.Embed)
	case c.Embed%c.Heads != 0:
		return fmt.Errorf("%w: gpt Embed %d is not a multiple of Heads %d", ErrConfig, c.Embed, c.Heads)
	case c.Context < 2 || c.Context > GPTMaxContext:
		return fmt.Errorf("%w: gpt Context %d, want 2..%d", ErrConfig, c.Context, GPTMaxContext)
	case c.Vocab < 2 || c.Vocab > GPTMaxVocab:
		return fmt.Errorf("%w: gpt Vocab %d, want 2..%d", ErrConfig, c.Vocab, GPTMaxVocab)
	case c.Batch < 1:
		return fmt.Errorf("%w: gpt Batch %d, want ≥ 1", ErrConfig, c.Batch)
	case c.EvalBatch < 1:
		return fmt.Errorf("%w: gpt EvalBatch %d, want ≥ 1", ErrConfig, c.EvalBatch)
	}
	if n := gptParamCount(int64(c.Layers), int64(c.Embed), int64(c.Context), int64(c.Vocab)); n > GPTMaxParams {
		return fmt.Errorf("%w: gpt %d-%d-%d-%d has %d parameters, more than %d", ErrConfig, c.Layers, c.Embed, c.Heads, c.Context, n, GPTMaxParams)
	}
	for _, b := range []struct {
		what string
		n    int
	}{{"Batch", c.Batch}, {"EvalBatch", c.EvalBatch}} {
		if int64(b.n)*int64(c.Context) > gptMaxBatchTokens {
			return fmt.Errorf("%w: gpt %s %d × Context %d is more than %d tokens per graph", ErrConfig, b.what, b.n, c.Context, gptMaxBatchTokens)
		}
		if int64(b.n)*int64(c.Heads)*int64(c.Context)*int64(c.Context) > gptMaxScores {
			return fmt.Errorf("%w: gpt %s %d × Heads %d × Context² %d is more than %d attention scores per graph", ErrConfig, b.what, b.n, c.Heads, c.Context*c.Context, gptMaxScores)
		}
	}
	return nil
}

// GPT is a decoder-only transformer in the shape of nanoGPT's model.py:
//
//	x = wte[token] + wpe[position]                                         [n·T, D]
//	for each block i:
//	    a = LN1(x);  q, k, v = columns [0,D), [D,2D), [2D,3D) of a·c_attn.w + c_attn.b
//	    per head h (columns h·D/NH .. (h+1)·D/NH of q, k, v), per sequence:
//	        y_h = softmax(q_h·k_hᵀ/√(D/NH) + mask)·v_h, mask = −1e9 above the diagonal (causal)
//	    x = x + concat_h(y_h)·attn.c_proj.w + attn.c_proj.b
//	    x = x + gelu(LN2(x)·mlp.c_fc.w + mlp.c_fc.b)·mlp.c_proj.w + mlp.c_proj.b
//	logits = LN_f(x)·wteᵀ                                                   [n·T, V] (tied head)
//
// LayerNorm is (z − mean)/√(var + 1e-5)·weight + bias per row. GELU is the tanh approximation
// 0.5·z·(1 + tanh(√(2/π)·(z + 0.044715·z³))), since gorgonia has no erf; nanoGPT's nn.GELU is the
// exact one, so weights exported to PyTorch load as they are but outputs differ in the last digits.
// There is no dropout.
//
// The loss is the mean next-token cross-entropy over all n·T positions; Eval's correct counts
// positions whose arg-max is the target.
//
// Layout, in this order, with nanoGPT's state-dict names and Linear weights as [in, out]:
// "transformer.wte.weight" [V,D], "transformer.wpe.weight" [T,D], then for each block i
// "transformer.h.{i}." + "ln_1.weight", "ln_1.bias" [D], "attn.c_attn.weight" [D,3D],
// "attn.c_attn.bias" [3D], "attn.c_proj.weight" [D,D], "attn.c_proj.bias" [D], "ln_2.weight",
// "ln_2.bias" [D], "mlp.c_fc.weight" [D,4D], "mlp.c_fc.bias" [4D], "mlp.c_proj.weight" [4D,D],
// "mlp.c_proj.bias" [D]; then "transformer.ln_f.weight", "transformer.ln_f.bias" [D]. The output
// head is wte itself and has no tensor of its own.
//
// Initialisation (nanoGPT's): embeddings and Linear weights N(0, 0.02²), the two c_proj weights of
// every block N(0, (0.02/√(2L))²), biases 0, LayerNorm weights 1; drawn from PCG seeded with Seed, in
// layout order. Not safe for concurrent use.
type GPT struct {
	cfg GPTConfig
	lm
}

var _ Model = (*GPT)(nil)

// gptBlockTensors are the per-block tensor names after "transformer.h.{i}.", in layout order.
var gptBlockTensors = []string{
	"ln_1.weight", "ln_1.bias",
	"attn.c_attn.weight", "attn.c_attn.bias",
	"attn.c_proj.weight", "attn.c_proj.bias",
	"ln_2.weight", "ln_2.bias",
	"mlp.c_fc.weight", "mlp.c_fc.bias",
	"mlp.c_proj.weight", "mlp.c_proj.bias",
}

func gptBlockName(i int, tensor string) string {
	return "transformer.h." + strconv.Itoa(i) + "." + tensor
}

// NewGPT builds a GPT and initialises its parameters from cfg.Seed.
func NewGPT(cfg GPTConfig) (*GPT, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m := &GPT{cfg: cfg}
	m.lm = lm{kind: "gpt", vocab: cfg.Vocab, context: cfg.Context, batch: cfg.Batch, evalBatch: cfg.EvalBatch, graphFor: m.build}
	m.layout = gptLayout(cfg)
	m.flat = make([]float32, m.layout.Size())
	gptInit(cfg, m.layout, m.flat)
	var err error
	if m.train, err = m.build(cfg.Batch, true); err != nil {
		return nil, err
	}
	return m, nil
}

// gptLayout is the whole model's parameter layout for cfg (with defaults filled in).
func gptLayout(cfg GPTConfig) Layout {
	L, D, T, V := cfg.Layers, cfg.Embed, cfg.Context, cfg.Vocab
	var lb layoutBuilder
	lb.add("transformer.wte.weight", V, D)
	lb.add("transformer.wpe.weight", T, D)
	shapes := map[string][]int{
		"ln_1.weight": {D}, "ln_1.bias": {D},
		"attn.c_attn.weight": {D, 3 * D}, "attn.c_attn.bias": {3 * D},
		"attn.c_proj.weight": {D, D}, "attn.c_proj.bias": {D},
		"ln_2.weight": {D}, "ln_2.bias": {D},
		"mlp.c_fc.weight": {D, 4 * D}, "mlp.c_fc.bias": {4 * D},
		"mlp.c_proj.weight": {4 * D, D}, "mlp.c_proj.bias": {D},
	}
	for i := 0; i < L; i++ {
		for _, t := range gptBlockTensors {
			lb.add(gptBlockName(i, t), shapes[t]...)
		}
	}
	lb.add("transformer.ln_f.weight", D)
	lb.add("transformer.ln_f.bias", D)
	return lb.l
}

// gptInit writes the initial parameters of cfg into flat (laid out by layout, gptLayout's).
func gptInit(cfg GPTConfig, layout Layout, flat []float32) {
	gptInitTensors(cfg, layout, func(t Tensor) []float32 { return flat[t.Offset : t.Offset+t.Size()] })
}

// gptInitTensors draws the initial parameters of cfg tensor by tensor in layout order and writes
// each into dst(t); a tensor for which dst returns nil has its values drawn and dropped, so the
// tensors kept get the whole model's values without the whole vector being held (a stage's).
func gptInitTensors(cfg GPTConfig, layout Layout, dst func(t Tensor) []float32) {
	r := initRand(cfg.Seed)
	projStd := 0.02 / math.Sqrt(float64(2*cfg.Layers))
	for _, t := range layout {
		d := dst(t)
		switch {
		case strings.HasSuffix(t.Name, "c_proj.weight"):
			fillNormal(r, d, t.Size(), projStd)
		case len(t.Shape) == 2: // embeddings and the other Linear weights
			fillNormal(r, d, t.Size(), 0.02)
		case strings.Contains(t.Name, "ln_") && strings.HasSuffix(t.Name, ".weight"):
			for i := range d {
				d[i] = 1
			}
		} // biases stay 0
	}
}

// fillNormal draws n values of N(0, std²) from r, in index order, into dst (nil: dropped).
func fillNormal(r interface{ NormFloat64() float64 }, dst []float32, n int, std float64) {
	for i := 0; i < n; i++ {
		v := float32(r.NormFloat64() * std)
		if dst != nil {
			dst[i] = v
		}
	}
}

// Name is "gpt:L-D-NH-T", with "-v<Vocab>" appended when the vocabulary is not 256 bytes.
func (m *GPT) Name() string { return m.cfg.name() }

// WithDefaults is c with its zero fields replaced by the defaults documented on GPTConfig.
func (c GPTConfig) WithDefaults() GPTConfig { return c.withDefaults() }

// Name is the model name of the configuration (GPT.Name's).
func (c GPTConfig) Name() string { return c.name() }

func (c GPTConfig) name() string {
	c = c.withDefaults()
	s := fmt.Sprintf("gpt:%d-%d-%d-%d", c.Layers, c.Embed, c.Heads, c.Context)
	if c.Vocab != 256 {
		s += "-v" + strconv.Itoa(c.Vocab)
	}
	return s
}

// Config returns the configuration with defaults filled in.
func (m *GPT) Config() GPTConfig { return m.cfg }

// Layout is the parameter layout.
func (m *GPT) Layout() Layout { return m.layout }

// Params is the live flat parameter vector.
func (m *GPT) Params() []float32 { return m.flat }

// BatchSize is the number of sequences Grad expects; each holds Context tokens.
func (m *GPT) BatchSize() int { return m.cfg.Batch }

// Context is the sequence length.
func (m *GPT) Context() int { return m.cfg.Context }

// Vocab is the number of distinct tokens.
func (m *GPT) Vocab() int { return m.cfg.Vocab }

func (m *GPT) build(n int, training bool) (*lmProgram, error) {
	p := &lmProgram{n: n}
	err := buildSafely(func() error {
		L, T, V := m.cfg.Layers, m.cfg.Context, m.cfg.Vocab
		N := n * T
		g := G.NewGraph()
		params := graphParams(g, m.layout, m.flat)

		tok, pos := lmInputs(g, p, N, T)

		x, err := gptEmbed(params, tok, pos)
		if err != nil {
			return err
		}
		if x, err = gptBlocks(params, x, m.cfg, n, 0, L); err != nil {
			return err
		}
		logp, err := gptHead(params, x)
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

// gptEmbed is x = wte[tok] + wpe[pos], [n·T, D].
func gptEmbed(params map[string]*G.Node, tok, pos *G.Node) (*G.Node, error) {
	te, err := embed(params["transformer.wte.weight"], tok)
	if err != nil {
		return nil, err
	}
	pe, err := embed(params["transformer.wpe.weight"], pos)
	if err != nil {
		return nil, err
	}
	return G.Add(te, pe)
}

// gptHead is the log-probabilities [n·T, V] of the tied head: logSoftmax(LN_f(x)·wteᵀ).
func gptHead(params map[string]*G.Node, x *G.Node) (*G.Node, error) {
	h, err := layerNorm(x, params["transformer.ln_f.weight"], params["transformer.ln_f.bias"])
	if err != nil {
		return nil, err
	}
	logits, err := bmm(h, params["transformer.wte.weight"], false, true) // tied head: h·wteᵀ
	if err != nil {
		return nil, err
	}
	return logSoftmax(logits)
}

// gptBlocks applies blocks [from, to) of the GPT documented on the type to x [n·T, D].
func gptBlocks(params map[string]*G.Node, x *G.Node, cfg GPTConfig, n, from, to int) (*G.Node, error) {
	D, NH, T := cfg.Embed, cfg.Heads, cfg.Context
	hd := D / NH
	scale := float32(1 / math.Sqrt(float64(hd)))
	var err error
	must := func(x *G.Node, e error) *G.Node {
		if e != nil && err == nil {
			err = e
		}
		return x
	}
	for i := from; i < to; i++ {
		pr := func(t string) *G.Node { return params[gptBlockName(i, t)] }
		a := must(layerNorm(x, pr("ln_1.weight"), pr("ln_1.bias")))
		qkv := must(dense(a, pr("attn.c_attn.weight"), pr("attn.c_attn.bias")))
		if err != nil {
			return nil, err
		}
		y := must(attention(qkv, headLayout{n: n, T: T, NH: NH, hd: hd, W: 3 * D}, scale)) // [N, D], heads side by side
		x = must(G.Add(x, must(dense(y, pr("attn.c_proj.weight"), pr("attn.c_proj.bias")))))
		if err != nil {
			return nil, err
		}
		f := must(layerNorm(x, pr("ln_2.weight"), pr("ln_2.bias")))
		f = must(gelu(must(dense(f, pr("mlp.c_fc.weight"), pr("mlp.c_fc.bias")))))
		x = must(G.Add(x, must(dense(f, pr("mlp.c_proj.weight"), pr("mlp.c_proj.bias")))))
		if err != nil {
			return nil, err
		}
	}
	return x, nil
}

// ParseGPTName parses "gpt:L-D-NH-T" or "gpt:L-D-NH-T-v<Vocab>" (as returned by Name) into the
// architecture fields of a config (Layers, Embed, Heads, Context, Vocab); Batch, EvalBatch and Seed
// are left zero. The architecture is validated (as for one sequence per batch; the batch sizes are
// checked when the model is built).
func ParseGPTName(name string) (GPTConfig, error) {
	var c GPTConfig
	rest, ok := strings.CutPrefix(name, "gpt:")
	if !ok {
		return c, fmt.Errorf("%w: model name %q does not start with \"gpt:\"", ErrConfig, name)
	}
	parts := strings.Split(rest, "-")
	if len(parts) == 5 {
		digits, ok := strings.CutPrefix(parts[4], "v")
		v, err := strconv.Atoi(digits)
		if !ok || err != nil || v <= 0 {
			return GPTConfig{}, fmt.Errorf("%w: model name %q: bad vocabulary %q, want v<positive number>", ErrConfig, name, parts[4])
		}
		c.Vocab = v
		parts = parts[:4]
	}
	if len(parts) != 4 {
		return GPTConfig{}, fmt.Errorf("%w: model name %q, want gpt:<layers>-<embed>-<heads>-<context>", ErrConfig, name)
	}
	for i, dst := range []*int{&c.Layers, &c.Embed, &c.Heads, &c.Context} {
		v, err := strconv.Atoi(parts[i])
		if err != nil || v <= 0 || strconv.Itoa(v) != parts[i] {
			return GPTConfig{}, fmt.Errorf("%w: model name %q: bad field %q, want a positive number", ErrConfig, name, parts[i])
		}
		*dst = v
	}
	arch := c
	arch.Batch = 1
	if err := arch.Validate(); err != nil {
		return GPTConfig{}, fmt.Errorf("model name %q: %w", name, err)
	}
	return c, nil
}
