// Package generate samples text from a trained GPT (an exported model: trainer/export) without
// the training graph: a plain-Go float32 forward pass of the architecture nn.GPT documents, and a
// seeded sampler. The same model, prompt, temperature and seed give the same text on any machine.
//
//	p, layout, theta, err := export.Import(file, safetensors.Limits{})
//	m, err := generate.New(p.Spec, layout, theta)
//	text, err := m.Generate([]byte("ROMEO:"), generate.Options{Tokens: 300, Temperature: 0.8, Seed: 1})
package generate

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/cohortlab/cohort/trainer/nn"
)

// ErrModel is wrapped when the parameters do not make the model their spec names.
var ErrModel = errors.New("generate: not a usable model")

// MaxTokens bounds one Generate call.
const MaxTokens = 1 << 16

// Model is a GPT ready for inference. Safe for concurrent use (it holds no scratch state).
type Model struct {
	cfg    nn.GPTConfig
	layout nn.Layout
	theta  []float32
	off    map[string]int
}

// New checks that layout and theta are those of the GPT spec names ("gpt:L-D-NH-T").
func New(spec string, layout nn.Layout, theta []float32) (*Model, error) {
	cfg, err := nn.ParseGPTName(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	if cfg.Vocab == 0 {
		cfg.Vocab = 256
	}
	if layout.Size() != len(theta) {
		return nil, fmt.Errorf("%w: %d parameters for a layout of %d", ErrModel, len(theta), layout.Size())
	}
	m := &Model{cfg: cfg, layout: layout, theta: theta, off: map[string]int{}}
	want := map[string]int{"transformer.wte.weight": cfg.Vocab * cfg.Embed, "transformer.wpe.weight": cfg.Context * cfg.Embed,
		"transformer.ln_f.weight": cfg.Embed, "transformer.ln_f.bias": cfg.Embed}
	D := cfg.Embed
	for i := 0; i < cfg.Layers; i++ {
		for name, n := range map[string]int{"ln_1.weight": D, "ln_1.bias": D, "attn.c_attn.weight": 3 * D * D, "attn.c_attn.bias": 3 * D,
			"attn.c_proj.weight": D * D, "attn.c_proj.bias": D, "ln_2.weight": D, "ln_2.bias": D,
			"mlp.c_fc.weight": 4 * D * D, "mlp.c_fc.bias": 4 * D, "mlp.c_proj.weight": 4 * D * D, "mlp.c_proj.bias": D} {
			want[block(i, name)] = n
		}
	}
	for _, t := range layout {
		m.off[t.Name] = t.Offset
		if n, ok := want[t.Name]; !ok || n != t.Size() {
			return nil, fmt.Errorf("%w: tensor %q of %d values is not part of %s", ErrModel, t.Name, t.Size(), spec)
		}
	}
	if len(m.off) != len(want) {
		return nil, fmt.Errorf("%w: %d tensors, %s has %d", ErrModel, len(m.off), spec, len(want))
	}
	return m, nil
}

func block(i int, name string) string { return fmt.Sprintf("transformer.h.%d.%s", i, name) }

func (m *Model) w(name string) []float32 {
	for _, t := range m.layout {
		if t.Name == name {
			return m.theta[t.Offset : t.Offset+t.Size()]
		}
	}
	panic("generate: no tensor " + name) // New checked every name
}

// Context is the model's context length T: Logits sees at most the last T tokens.
func (m *Model) Context() int { return m.cfg.Context }

// Logits returns the next-token logits after tokens (at most the last Context of them are used;
// at least one token is needed). Reference loop: nn.GPT's documentation, with the output head tied
// to the token embedding.
func (m *Model) Logits(tokens []int) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%w: no token to continue", ErrModel)
	}
	if len(tokens) > m.cfg.Context {
		tokens = tokens[len(tokens)-m.cfg.Context:]
	}
	D, NH, V := m.cfg.Embed, m.cfg.Heads, m.cfg.Vocab
	hd, N := D/NH, len(tokens)
	wte, wpe := m.w("transformer.wte.weight"), m.w("transformer.wpe.weight")
	x := make([]float32, N*D)
	for r, tok := range tokens {
		if tok < 0 || tok >= V {
			return nil, fmt.Errorf("%w: token %d outside the vocabulary of %d", ErrModel, tok, V)
		}
		for d := 0; d < D; d++ {
			x[r*D+d] = wte[tok*D+d] + wpe[r*D+d]
		}
	}
	scale := float32(1 / math.Sqrt(float64(hd)))
	for i := 0; i < m.cfg.Layers; i++ {
		w := func(n string) []float32 { return m.w(block(i, n)) }
		qkv := affine(layerNorm(x, D, w("ln_1.weight"), w("ln_1.bias")), N, D, w("attn.c_attn.weight"), w("attn.c_attn.bias"), 3*D)
		y := make([]float32, N*D)
		att := make([]float32, N)
		for r := 0; r < N; r++ {
			for h := 0; h < NH; h++ {
				q := qkv[r*3*D+h*hd : r*3*D+(h+1)*hd]
				mx := float32(math.Inf(-1))
				for j := 0; j <= r; j++ { // causal
					k := qkv[j*3*D+D+h*hd : j*3*D+D+(h+1)*hd]
					var dot float32
					for d := range q {
						dot += q[d] * k[d]
					}
					att[j] = dot * scale
					mx = max(mx, att[j])
				}
				var z float32
				for j := 0; j <= r; j++ {
					att[j] = float32(math.Exp(float64(att[j] - mx)))
					z += att[j]
				}
				for j := 0; j <= r; j++ {
					v := qkv[j*3*D+2*D+h*hd : j*3*D+2*D+(h+1)*hd]
					a := att[j] / z
					for d := range v {
						y[r*D+h*hd+d] += a * v[d]
					}
				}
			}
		}
		o := affine(y, N, D, w("attn.c_proj.weight"), w("attn.c_proj.bias"), D)
		for j := range x {
			x[j] += o[j]
		}
		f := affine(layerNorm(x, D, w("ln_2.weight"), w("ln_2.bias")), N, D, w("mlp.c_fc.weight"), w("mlp.c_fc.bias"), 4*D)
		for j, v := range f {
			f[j] = gelu(v)
		}
		f = affine(f, N, 4*D, w("mlp.c_proj.weight"), w("mlp.c_proj.bias"), D)
		for j := range x {
			x[j] += f[j]
		}
	}
	h := layerNorm(x[(N-1)*D:], D, m.w("transformer.ln_f.weight"), m.w("transformer.ln_f.bias"))
	logits := make([]float32, V)
	for c := 0; c < V; c++ {
		var s float32
		for d := 0; d < D; d++ {
			s += h[d] * wte[c*D+d]
		}
		logits[c] = s
	}
	return logits, nil
}

// gelu is the tanh approximation nn.GPT trains with.
func gelu(z float32) float32 {
	zz := float64(z)
	return float32(0.5 * zz * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(zz+0.044715*zz*zz*zz))))
}

// affine returns x·w + b for x [n, in], w [in, out] (Cohort's layout), b [out].
func affine(x []float32, n, in int, w, b []float32, out int) []float32 {
	y := make([]float32, n*out)
	for r := 0; r < n; r++ {
		row := y[r*out : (r+1)*out]
		copy(row, b)
		for k := 0; k < in; k++ {
			xv := x[r*in+k]
			wk := w[k*out : (k+1)*out]
			for c := range row {
				row[c] += xv * wk[c]
			}
		}
	}
	return y
}

// layerNorm normalises each row of x [·, d]: (z − mean)/√(var + 1e-5)·g + b.
func layerNorm(x []float32, d int, g, b []float32) []float32 {
	out := make([]float32, len(x))
	for r := 0; r+d <= len(x); r += d {
		row := x[r : r+d]
		var mean, v float64
		for _, z := range row {
			mean += float64(z)
		}
		mean /= float64(d)
		for _, z := range row {
			v += (float64(z) - mean) * (float64(z) - mean)
		}
		inv := 1 / math.Sqrt(v/float64(d)+1e-5)
		for i, z := range row {
			out[r+i] = float32((float64(z)-mean)*inv)*g[i] + b[i]
		}
	}
	return out
}

// Options configures Generate. Tokens is required (1 to MaxTokens).
type Options struct {
	Tokens int
	// Temperature divides the logits before sampling; 0 picks the most likely byte every time.
	Temperature float64
	// Seed seeds the sampler (PCG).
	Seed uint64
}

// Generate continues prompt (bytes; the byte vocabulary) by opt.Tokens sampled bytes and returns
// them. The bytes need not be valid UTF-8 at every cut: the model learnt UTF-8 from its text.
func (m *Model) Generate(prompt []byte, opt Options) ([]byte, error) {
	if opt.Tokens < 1 || opt.Tokens > MaxTokens {
		return nil, fmt.Errorf("generate: %d tokens: want 1 to %d", opt.Tokens, MaxTokens)
	}
	if !(opt.Temperature >= 0) || math.IsInf(opt.Temperature, 0) {
		return nil, fmt.Errorf("generate: temperature %v: want ≥ 0", opt.Temperature)
	}
	if len(prompt) == 0 {
		prompt = []byte{'\n'}
	}
	toks := make([]int, 0, len(prompt)+opt.Tokens)
	for _, c := range prompt {
		toks = append(toks, int(c))
	}
	rng := rand.New(rand.NewPCG(opt.Seed, 0x9e3779b97f4a7c15))
	out := make([]byte, 0, opt.Tokens)
	for range opt.Tokens {
		logits, err := m.Logits(toks)
		if err != nil {
			return nil, err
		}
		next := sample(logits, opt.Temperature, rng)
		if next > 255 {
			return nil, fmt.Errorf("%w: token %d is not a byte", ErrModel, next)
		}
		toks = append(toks, next)
		out = append(out, byte(next))
	}
	return out, nil
}

func sample(logits []float32, temp float64, rng *rand.Rand) int {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	if temp == 0 {
		return best
	}
	p := make([]float64, len(logits))
	var z float64
	for i, v := range logits {
		p[i] = math.Exp((float64(v) - float64(logits[best])) / temp)
		z += p[i]
	}
	u := rng.Float64() * z
	for i, pi := range p {
		if u -= pi; u < 0 {
			return i
		}
	}
	return best
}
