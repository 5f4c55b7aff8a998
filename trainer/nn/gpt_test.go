package nn

import (
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// refGPTLogp is a plain-Go float64 forward pass of the GPT documented on the type, written from the
// architecture (not from the graph): it returns the log-probabilities [n·T, V].
func refGPTLogp(cfg GPTConfig, l Layout, p []float64, tokens []int) []float64 {
	L, D, NH, T, V := cfg.Layers, cfg.Embed, cfg.Heads, cfg.Context, cfg.Vocab
	hd := D / NH
	N := len(tokens)
	wte, wpe := view(l, p, "transformer.wte.weight"), view(l, p, "transformer.wpe.weight")
	x := make([]float64, N*D)
	for r, tok := range tokens {
		for d := 0; d < D; d++ {
			x[r*D+d] = wte[tok*D+d] + wpe[(r%T)*D+d]
		}
	}
	for i := 0; i < L; i++ {
		w := func(t string) []float64 { return view(l, p, gptBlockName(i, t)) }
		a := refLayerNorm(x, D, w("ln_1.weight"), w("ln_1.bias"))
		qkv := affine(a, N, D, w("attn.c_attn.weight"), w("attn.c_attn.bias"), 3*D)
		y := make([]float64, N*D)
		for r := 0; r < N; r++ {
			seqStart := r - r%T
			for h := 0; h < NH; h++ {
				q := qkv[r*3*D+h*hd : r*3*D+(h+1)*hd]
				weights := make([]float64, r-seqStart+1) // causal: own sequence, up to r
				m := math.Inf(-1)
				for j := seqStart; j <= r; j++ {
					k := qkv[j*3*D+D+h*hd : j*3*D+D+(h+1)*hd]
					dot := 0.0
					for d := range q {
						dot += q[d] * k[d]
					}
					weights[j-seqStart] = dot / math.Sqrt(float64(hd))
					m = max(m, weights[j-seqStart])
				}
				z := 0.0
				for j := range weights {
					weights[j] = math.Exp(weights[j] - m)
					z += weights[j]
				}
				for j := seqStart; j <= r; j++ {
					v := qkv[j*3*D+2*D+h*hd : j*3*D+2*D+(h+1)*hd]
					for d := range v {
						y[r*D+h*hd+d] += weights[j-seqStart] / z * v[d]
					}
				}
			}
		}
		o := affine(y, N, D, w("attn.c_proj.weight"), w("attn.c_proj.bias"), D)
		for j := range x {
			x[j] += o[j]
		}
		f := refLayerNorm(x, D, w("ln_2.weight"), w("ln_2.bias"))
		f = affine(f, N, D, w("mlp.c_fc.weight"), w("mlp.c_fc.bias"), 4*D)
		for j, z := range f {
			f[j] = 0.5 * z * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(z+0.044715*z*z*z)))
		}
		f2 := affine(f, N, 4*D, w("mlp.c_proj.weight"), w("mlp.c_proj.bias"), D)
		for j := range x {
			x[j] += f2[j]
		}
	}
	h := refLayerNorm(x, D, view(l, p, "transformer.ln_f.weight"), view(l, p, "transformer.ln_f.bias"))
	logits := make([]float64, N*V)
	for r := 0; r < N; r++ {
		for c := 0; c < V; c++ {
			s := 0.0
			for d := 0; d < D; d++ {
				s += h[r*D+d] * wte[c*D+d]
			}
			logits[r*V+c] = s
		}
	}
	return logSoftmaxRows(logits, V)
}

func newTestGPT(t testing.TB, cfg GPTConfig) *GPT {
	t.Helper()
	m, err := NewGPT(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tinyGPT is the gradient-check size: L=2, D=8, NH=2, T=4, batch 2, a small vocabulary so that the
// tied head's gradients are large enough to check.
var tinyGPT = GPTConfig{Layers: 2, Embed: 8, Heads: 2, Context: 4, Vocab: 11, Batch: 2, Seed: 5}

func TestGPTGradMatchesFiniteDifferences(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  GPTConfig
	}{
		{"tiny", tinyGPT},
		{"bytes", GPTConfig{Layers: 2, Embed: 8, Heads: 2, Context: 4, Batch: 2, Seed: 6}},
		{"one-head", GPTConfig{Layers: 1, Embed: 6, Heads: 1, Context: 3, Vocab: 7, Batch: 3, Seed: 7}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newTestGPT(t, tc.cfg)
			// Perturb every parameter (biases and LayerNorm weights start at 0 and 1) so that all
			// paths are exercised in general position; scale up so attention is far from uniform.
			r := rand.New(rand.NewPCG(3, 4))
			for i := range m.Params() {
				m.Params()[i] += float32(r.NormFloat64() * 0.3)
			}
			cfg := m.Config()
			b := randomLMBatch(r, cfg.Vocab, cfg.Context, cfg.Batch)
			grad := make([]float32, len(m.Params()))
			loss, err := m.Grad(b, grad)
			if err != nil {
				t.Fatal(err)
			}
			lossAt := func(p []float64) float64 {
				return meanNLL(refGPTLogp(cfg, m.Layout(), p, b.Tokens), cfg.Vocab, b.Y)
			}
			if ref := lossAt(toF64(m.Params())); math.Abs(float64(loss)-ref) > lossTol {
				t.Fatalf("loss %.8g, reference %.8g", loss, ref)
			}
			checkGradients(t, m.Layout(), m.Params(), grad, 16, lossAt)
		})
	}
}

func TestGPTLayout(t *testing.T) {
	m := newTestGPT(t, GPTConfig{Layers: 2, Embed: 8, Heads: 2, Context: 4, Batch: 1})
	want := []struct {
		name  string
		shape []int
	}{
		{"transformer.wte.weight", []int{256, 8}},
		{"transformer.wpe.weight", []int{4, 8}},
	}
	for i := 0; i < 2; i++ {
		p := "transformer.h." + itoa(i) + "."
		want = append(want, []struct {
			name  string
			shape []int
		}{
			{p + "ln_1.weight", []int{8}}, {p + "ln_1.bias", []int{8}},
			{p + "attn.c_attn.weight", []int{8, 24}}, {p + "attn.c_attn.bias", []int{24}},
			{p + "attn.c_proj.weight", []int{8, 8}}, {p + "attn.c_proj.bias", []int{8}},
			{p + "ln_2.weight", []int{8}}, {p + "ln_2.bias", []int{8}},
			{p + "mlp.c_fc.weight", []int{8, 32}}, {p + "mlp.c_fc.bias", []int{32}},
			{p + "mlp.c_proj.weight", []int{32, 8}}, {p + "mlp.c_proj.bias", []int{8}},
		}...)
	}
	want = append(want, struct {
		name  string
		shape []int
	}{"transformer.ln_f.weight", []int{8}}, struct {
		name  string
		shape []int
	}{"transformer.ln_f.bias", []int{8}})
	l := m.Layout()
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(l) != len(want) {
		t.Fatalf("%d tensors, want %d", len(l), len(want))
	}
	for i, w := range want {
		if l[i].Name != w.name || !slices.Equal(l[i].Shape, w.shape) {
			t.Errorf("tensor %d is %s %v, want %s %v", i, l[i].Name, l[i].Shape, w.name, w.shape)
		}
	}
	if got, want := l.Size(), int(gptParamCount(2, 8, 4, 256)); got != want || got != len(m.Params()) {
		t.Errorf("layout size %d, counted %d, params %d", got, want, len(m.Params()))
	}
	if m.Name() != "gpt:2-8-2-4" {
		t.Errorf("Name() = %q", m.Name())
	}
}

func TestGPTInit(t *testing.T) {
	const L = 3
	m := newTestGPT(t, GPTConfig{Layers: L, Embed: 64, Heads: 4, Context: 32, Batch: 1, Seed: 9})
	for _, ten := range m.Layout() {
		v := m.Params()[ten.Offset : ten.Offset+ten.Size()]
		mean, sq := 0.0, 0.0
		for _, x := range v {
			mean += float64(x)
			sq += float64(x) * float64(x)
		}
		mean /= float64(len(v))
		std := math.Sqrt(sq/float64(len(v)) - mean*mean)
		switch {
		case strings.HasSuffix(ten.Name, "c_proj.weight"):
			want := 0.02 / math.Sqrt(2*L)
			if math.Abs(std-want) > 0.1*want {
				t.Errorf("%s std %.5f, want %.5f", ten.Name, std, want)
			}
		case len(ten.Shape) == 2:
			if math.Abs(std-0.02) > 0.002 {
				t.Errorf("%s std %.5f, want 0.02", ten.Name, std)
			}
		case strings.HasSuffix(ten.Name, "bias"):
			if mean != 0 || std != 0 {
				t.Errorf("%s is not zero", ten.Name)
			}
		default: // LayerNorm weights
			if mean != 1 || std != 0 {
				t.Errorf("%s is not one (mean %v)", ten.Name, mean)
			}
		}
	}
	// Small initial weights: predictions near uniform, loss near ln 256.
	r := rand.New(rand.NewPCG(1, 1))
	b := randomLMBatch(r, 256, 32, 1)
	loss, _, count, err := m.Eval(b)
	if err != nil {
		t.Fatal(err)
	}
	if mean := loss / float64(count); math.Abs(mean-math.Log(256)) > 0.15 {
		t.Errorf("initial loss %.4f, want ln 256 = %.4f ± 0.15", mean, math.Log(256))
	}
}

func TestGPTDeterminism(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	b := randomLMBatch(r, tinyGPT.Vocab, tinyGPT.Context, tinyGPT.Batch)
	seeded := func(s uint64) *GPT {
		c := tinyGPT
		c.Seed = s
		return newTestGPT(t, c)
	}
	a, a2, c := seeded(42), seeded(42), seeded(43)
	if !bitsEqual(a.Params(), a2.Params()) {
		t.Fatal("same seed, different parameters")
	}
	if bitsEqual(a.Params(), c.Params()) {
		t.Fatal("different seeds, same parameters")
	}
	ga, la := gradTwice(t, a, b)
	gb, lb := gradTwice(t, a2, b)
	if math.Float32bits(la) != math.Float32bits(lb) || !bitsEqual(ga, gb) {
		t.Fatal("two instances with the same parameters give different gradients")
	}
	copy(c.Params(), a.Params())
	gc, lc := gradTwice(t, c, b)
	if math.Float32bits(la) != math.Float32bits(lc) || !bitsEqual(ga, gc) {
		t.Fatal("copied parameters give different gradients")
	}
}

func TestParseGPTName(t *testing.T) {
	for _, tc := range []struct {
		name string
		want GPTConfig
	}{
		{"gpt:4-128-4-64", GPTConfig{Layers: 4, Embed: 128, Heads: 4, Context: 64}},
		{"gpt:2-32-2-16", GPTConfig{Layers: 2, Embed: 32, Heads: 2, Context: 16}},
		{"gpt:1-8-8-2-v11", GPTConfig{Layers: 1, Embed: 8, Heads: 8, Context: 2, Vocab: 11}},
		{"gpt:6-512-8-1024", GPTConfig{Layers: 6, Embed: 512, Heads: 8, Context: 1024}},
	} {
		got, err := ParseGPTName(tc.name)
		if err != nil || got != tc.want {
			t.Errorf("ParseGPTName(%q) = %+v, %v; want %+v", tc.name, got, err, tc.want)
			continue
		}
		if n := got.name(); n != tc.name {
			t.Errorf("%q parses and names back as %q", tc.name, n)
		}
	}
	for _, bad := range []string{
		"", "gpt:", "gpt:4-128-4", "gpt:4-128-4-64-1", "gpt:4-128-3-64", "gpt:0-128-4-64", "gpt:4-128-4-1",
		"gpt:4-128-4-2048", "gpt:4-+128-4-64", "gpt:4-128-4-64-v1", "gpt:4-128-4-64-vx", "charlm:4-128-4-64",
		"gpt:a-b-c-d", "gpt:12-768-12-1024", "gpt:4-128--4-64", "gpt:64-4096-32-1024", "gpt:4-128-256-64",
	} {
		if _, err := ParseGPTName(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("ParseGPTName(%q) error %v, want ErrConfig", bad, err)
		}
	}
}

func TestGPTValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  GPTConfig
		ok   bool
	}{
		{"zero is the default", GPTConfig{}, true},
		{"tiny", tinyGPT, true},
		{"heads do not divide embed", GPTConfig{Embed: 10, Heads: 4}, false},
		{"more heads than width", GPTConfig{Embed: 4, Heads: 8}, false},
		{"negative layers", GPTConfig{Layers: -1}, false},
		{"too deep", GPTConfig{Layers: GPTMaxLayers + 1}, false},
		{"width one", GPTConfig{Embed: 1, Heads: 1}, false},
		{"context one", GPTConfig{Context: 1}, false},
		{"context too long", GPTConfig{Context: GPTMaxContext + 1}, false},
		{"context at the bound", GPTConfig{Layers: 1, Embed: 8, Heads: 1, Context: GPTMaxContext, Batch: 1}, true},
		{"vocab one", GPTConfig{Vocab: 1}, false},
		{"vocab too big", GPTConfig{Vocab: GPTMaxVocab + 1}, false},
		{"negative batch", GPTConfig{Batch: -1}, false},
		{"negative eval batch", GPTConfig{EvalBatch: -1}, false},
		{"gpt-2 small fits", GPTConfig{Layers: 6, Embed: 768, Heads: 12, Context: 256, Batch: 1}, true},
		{"too many parameters", GPTConfig{Layers: 12, Embed: 768, Heads: 12}, false},
		{"huge width", GPTConfig{Layers: 1, Embed: 1 << 20, Heads: 1}, false},
		{"too many tokens per batch", GPTConfig{Batch: 1 << 20}, false},
		{"too many attention scores", GPTConfig{Context: 1024, Heads: 16, Batch: 8}, false},
		{"eval batch too big", GPTConfig{EvalBatch: 1 << 20}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.ok && err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
			if !tc.ok && !errors.Is(err, ErrConfig) {
				t.Errorf("Validate() = %v, want ErrConfig", err)
			}
			if !tc.ok {
				if _, err := NewGPT(tc.cfg); !errors.Is(err, ErrConfig) {
					t.Errorf("NewGPT error %v, want ErrConfig", err)
				}
			}
		})
	}
	m := newTestGPT(t, GPTConfig{Layers: 1, Embed: 8, Heads: 2, Context: 4})
	want := GPTConfig{Layers: 1, Embed: 8, Heads: 2, Context: 4, Vocab: 256, Batch: 12, EvalBatch: 12}
	if m.Config() != want || m.BatchSize() != 12 || m.Vocab() != 256 || m.Context() != 4 {
		t.Errorf("defaults %+v, want %+v", m.Config(), want)
	}
}

func TestGPTInvalidBatches(t *testing.T) {
	m := newTestGPT(t, GPTConfig{Layers: 1, Embed: 4, Heads: 2, Context: 3, Vocab: 5, Batch: 2})
	g := make([]float32, len(m.Params()))
	ok := []int{0, 1, 2, 3, 4, 0}
	tests := []struct {
		name string
		b    Batch
		grad []float32
		want error
		eval bool // also invalid for Eval
	}{
		{"token too big", Batch{Tokens: []int{0, 1, 5, 3, 4, 0}, Y: ok}, g, ErrBatch, true},
		{"negative token", Batch{Tokens: []int{0, 1, -2, 3, 4, 0}, Y: ok}, g, ErrBatch, true},
		{"target too big", Batch{Tokens: ok, Y: []int{0, 1, 2, 3, 4, 9}}, g, ErrBatch, true},
		{"partial sequence", Batch{Tokens: ok[:5], Y: ok[:5]}, g, ErrBatch, true},
		{"targets mismatch", Batch{Tokens: ok, Y: ok[:3]}, g, ErrBatch, true},
		{"wrong batch size", Batch{Tokens: ok[:3], Y: ok[:3]}, g, ErrBatch, false},
		{"X", Batch{X: []float32{1}, Tokens: ok, Y: ok}, g, ErrBatch, true},
		{"long grad", Batch{Tokens: ok, Y: ok}, append(g, 0), ErrGrad, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(m.Params())
			if _, err := m.Grad(tc.b, tc.grad); !errors.Is(err, tc.want) {
				t.Errorf("Grad error %v, want %v", err, tc.want)
			}
			if _, _, _, err := m.Eval(tc.b); tc.eval && !errors.Is(err, ErrBatch) {
				t.Errorf("Eval error %v, want %v", err, ErrBatch)
			}
			if !slices.Equal(before, m.Params()) {
				t.Error("a rejected batch changed the parameters")
			}
		})
	}
	if _, err := m.Grad(Batch{Tokens: ok, Y: ok}, g); err != nil {
		t.Error(err)
	}
}

func TestGPTEvalChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	cfg := GPTConfig{Layers: 2, Embed: 8, Heads: 2, Context: 5, Vocab: 7, Batch: 2, EvalBatch: 3, Seed: 2}
	m := newTestGPT(t, cfg)
	for i := range m.Params() { // away from the near-uniform initial predictions
		m.Params()[i] += float32(r.NormFloat64() * 0.3)
	}
	b := randomLMBatch(r, 7, 5, 7) // chunks of 3, 3, 1 sequences
	logp := refGPTLogp(m.Config(), m.Layout(), toF64(m.Params()), b.Tokens)
	wantLoss, wantCorrect := refScore(logp, 7, b.Y)
	before := slices.Clone(m.Params())
	for rep := 0; rep < 2; rep++ {
		loss, correct, count, err := m.Eval(b)
		if err != nil {
			t.Fatal(err)
		}
		if count != 35 || correct != wantCorrect || math.Abs(loss-wantLoss) > 1e-4 {
			t.Errorf("Eval = %v, %d, %d; reference %v, %d, 35", loss, correct, count, wantLoss, wantCorrect)
		}
	}
	for _, seqs := range []int{1, 2, 4} {
		sub := Batch{Tokens: b.Tokens[:seqs*5], Y: b.Y[:seqs*5]}
		wantLoss, wantCorrect := refScore(logp[:seqs*5*7], 7, sub.Y)
		loss, correct, count, err := m.Eval(sub)
		if err != nil || count != seqs*5 || correct != wantCorrect || math.Abs(loss-wantLoss) > 1e-4 {
			t.Errorf("Eval of %d sequences = %v, %d, %d, %v; reference %v, %d", seqs, loss, correct, count, err, wantLoss, wantCorrect)
		}
	}
	if loss, correct, count, err := m.Eval(Batch{}); err != nil || loss != 0 || correct != 0 || count != 0 {
		t.Errorf("empty Eval = %v %v %v %v", loss, correct, count, err)
	}
	if !bitsEqual(before, m.Params()) {
		t.Error("Eval changed the parameters")
	}
}

// TestGPTIsCausal: changing a token changes no log-probability at earlier positions.
func TestGPTIsCausal(t *testing.T) {
	m := newTestGPT(t, GPTConfig{Layers: 2, Embed: 8, Heads: 2, Context: 5, Vocab: 6, Batch: 1, Seed: 4})
	r := rand.New(rand.NewPCG(2, 8))
	for i := range m.Params() {
		m.Params()[i] += float32(r.NormFloat64() * 0.3)
	}
	b := randomLMBatch(r, 6, 5, 1)
	perPos := func(tokens []int) []float64 {
		out := make([]float64, 5)
		for p := 0; p < 5; p++ {
			y := make([]int, 5)
			y[p] = b.Y[p]
			// Only position p's target varies between the two evaluations, so the difference is
			// position p's log-probability gap between two targets.
			full, _, _, err := m.Eval(Batch{Tokens: tokens, Y: y})
			if err != nil {
				t.Fatal(err)
			}
			y[p] = (y[p] + 1) % 6
			alt, _, _, err := m.Eval(Batch{Tokens: tokens, Y: y})
			if err != nil {
				t.Fatal(err)
			}
			out[p] = alt - full
		}
		return out
	}
	base := perPos(b.Tokens)
	changed := slices.Clone(b.Tokens)
	changed[3] = (changed[3] + 1) % 6
	moved := perPos(changed)
	for p := 0; p < 3; p++ {
		if base[p] != moved[p] {
			t.Errorf("position %d depends on the token at position 3", p)
		}
	}
	if base[3] == moved[3] && base[4] == moved[4] {
		t.Error("changing token 3 changed no prediction at positions 3 and 4")
	}
}

func TestNewFromNameGPT(t *testing.T) {
	m, err := NewFromName("gpt:1-8-2-4", 3, 7)
	if err != nil {
		t.Fatal(err)
	}
	g, ok := m.(*GPT)
	if !ok || g.Name() != "gpt:1-8-2-4" || g.BatchSize() != 3 || g.Config().Seed != 7 {
		t.Fatalf("NewFromName gave %T %s batch %d", m, m.Name(), m.BatchSize())
	}
	if _, err := NewFromName("gpt:1-8-3-4", 3, 7); !errors.Is(err, ErrConfig) {
		t.Errorf("bad gpt name: error %v, want ErrConfig", err)
	}
}

// BenchmarkGPTGrad measures one Grad call of gpt:4-128-4-64 at batch 12 (768 tokens).
func BenchmarkGPTGrad(b *testing.B) {
	m := newTestGPT(b, GPTConfig{Layers: 4, Embed: 128, Heads: 4, Context: 64, Batch: 12})
	r := rand.New(rand.NewPCG(1, 2))
	bt := randomLMBatch(r, 256, m.Context(), m.BatchSize())
	grad := make([]float32, len(m.Params()))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Grad(bt, grad); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(bt.Tokens))/b.Elapsed().Seconds(), "tokens/s")
}

// TestGPTGradIndependentOfGOMAXPROCS: replicas on machines with different core counts compute the
// same bits, for a small GPT and for one whose products are large enough to be split among
// goroutines (256 tokens of width 128: 2·m·n·k from 8 Mi up).
func TestGPTGradIndependentOfGOMAXPROCS(t *testing.T) {
	for _, cfg := range []GPTConfig{
		{Layers: 2, Embed: 32, Heads: 4, Context: 16, Batch: 4, Seed: 1},
		{Layers: 1, Embed: 128, Heads: 4, Context: 64, Batch: 4, Seed: 2},
	} {
		m := newTestGPT(t, cfg)
		b := randomLMBatch(rand.New(rand.NewPCG(8, 8)), 256, cfg.Context, cfg.Batch)
		var first []float32
		var firstLoss float32
		for i, procs := range []int{1, 2, 4} {
			old := runtime.GOMAXPROCS(procs)
			g := make([]float32, len(m.Params()))
			l, err := m.Grad(b, g)
			runtime.GOMAXPROCS(old)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first, firstLoss = g, l
			} else if !bitsEqual(first, g) || math.Float32bits(firstLoss) != math.Float32bits(l) {
				t.Errorf("%+v: GOMAXPROCS %d changes the gradient", cfg, procs)
			}
		}
	}
}
