package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Plain-Go float64 reference forward passes of both models, written independently of gorgonia from
// the architecture documented on MLP and CharLM. They check the graphs' losses and, through central
// finite differences, the graphs' gradients.

// view returns the float64 parameters of the named tensor.
func view(l Layout, p []float64, name string) []float64 {
	for _, t := range l {
		if t.Name == name {
			return p[t.Offset : t.Offset+t.Size()]
		}
	}
	panic("nn test: no tensor " + name)
}

func has(l Layout, name string) bool {
	for _, t := range l {
		if t.Name == name {
			return true
		}
	}
	return false
}

// affine returns x·w + b for x [rows, in], w [in, out], b [out] (b may be nil).
func affine(x []float64, rows, in int, w, b []float64, out int) []float64 {
	y := make([]float64, rows*out)
	for r := 0; r < rows; r++ {
		for o := 0; o < out; o++ {
			s := 0.0
			if b != nil {
				s = b[o]
			}
			for i := 0; i < in; i++ {
				s += x[r*in+i] * w[i*out+o]
			}
			y[r*out+o] = s
		}
	}
	return y
}

func relu(x []float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = max(v, 0)
	}
	return y
}

// logSoftmaxRows returns the log-softmax of each row of x [rows, c].
func logSoftmaxRows(x []float64, c int) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < len(x)/c; r++ {
		row := x[r*c : (r+1)*c]
		m := row[0]
		for _, v := range row {
			m = max(m, v)
		}
		s := 0.0
		for _, v := range row {
			s += math.Exp(v - m)
		}
		lse := m + math.Log(s)
		for i, v := range row {
			y[r*c+i] = v - lse
		}
	}
	return y
}

// refMLPLogp returns the log-probabilities [n, classes] of the reference MLP.
func refMLPLogp(sizes []int, l Layout, p []float64, x []float32) []float64 {
	n := len(x) / sizes[0]
	h := make([]float64, len(x))
	for i, v := range x {
		h[i] = float64(v)
	}
	for i := 0; i+1 < len(sizes); i++ {
		h = affine(h, n, sizes[i], view(l, p, "fc"+itoa(i)+".w"), view(l, p, "fc"+itoa(i)+".b"), sizes[i+1])
		if i+2 < len(sizes) {
			h = relu(h)
		}
	}
	return logSoftmaxRows(h, sizes[len(sizes)-1])
}

// refCharLMLogp returns the log-probabilities [n·T, V] of the reference CharLM.
func refCharLMLogp(cfg CharLMConfig, l Layout, p []float64, tokens []int) []float64 {
	V, T, D, H := cfg.Vocab, cfg.Context, cfg.Embed, cfg.Hidden
	N := len(tokens)
	n := N / T
	te, pe := view(l, p, "tok.emb"), view(l, p, "pos.emb")
	x := make([]float64, N*D)
	for r, tok := range tokens {
		for d := 0; d < D; d++ {
			x[r*D+d] = te[tok*D+d] + pe[(r%T)*D+d]
		}
	}
	ln := cfg.LayerNorm
	a := x
	if ln {
		a = refLayerNorm(x, D, view(l, p, "ln1.g"), view(l, p, "ln1.b"))
	}
	q := affine(a, N, D, view(l, p, "attn.wq"), nil, D)
	k := affine(a, N, D, view(l, p, "attn.wk"), nil, D)
	v := affine(a, N, D, view(l, p, "attn.wv"), nil, D)
	ctx := make([]float64, N*D)
	scale := 1 / math.Sqrt(float64(D))
	for s := 0; s < n; s++ {
		for i := 0; i < T; i++ {
			qi := q[(s*T+i)*D : (s*T+i+1)*D]
			w := make([]float64, i+1) // causal: positions 0..i only
			m := math.Inf(-1)
			for j := 0; j <= i; j++ {
				kj := k[(s*T+j)*D : (s*T+j+1)*D]
				dot := 0.0
				for d := range qi {
					dot += qi[d] * kj[d]
				}
				w[j] = dot * scale
				m = max(m, w[j])
			}
			z := 0.0
			for j := range w {
				w[j] = math.Exp(w[j] - m)
				z += w[j]
			}
			for j := range w {
				for d := 0; d < D; d++ {
					ctx[(s*T+i)*D+d] += w[j] / z * v[(s*T+j)*D+d]
				}
			}
		}
	}
	o := affine(ctx, N, D, view(l, p, "attn.wo"), view(l, p, "attn.bo"), D)
	h := make([]float64, N*D)
	for i := range h {
		h[i] = x[i] + o[i]
	}
	if H > 0 {
		f := h
		if ln {
			f = refLayerNorm(h, D, view(l, p, "ln2.g"), view(l, p, "ln2.b"))
		}
		f = relu(affine(f, N, D, view(l, p, "mlp.w1"), view(l, p, "mlp.b1"), H))
		f2 := affine(f, N, H, view(l, p, "mlp.w2"), view(l, p, "mlp.b2"), D)
		for i := range h {
			h[i] += f2[i]
		}
	}
	if ln {
		h = refLayerNorm(h, D, view(l, p, "lnf.g"), view(l, p, "lnf.b"))
	}
	logits := affine(h, N, D, view(l, p, "out.w"), view(l, p, "out.b"), V)
	return logSoftmaxRows(logits, V)
}

// refLayerNorm normalises each row of x [*, d]: (x − mean)/√(var + 1e-5)·g + b.
func refLayerNorm(x []float64, d int, g, b []float64) []float64 {
	y := make([]float64, len(x))
	for r := 0; r < len(x)/d; r++ {
		row := x[r*d : (r+1)*d]
		mean, vr := 0.0, 0.0
		for _, v := range row {
			mean += v
		}
		mean /= float64(d)
		for _, v := range row {
			vr += (v - mean) * (v - mean)
		}
		vr /= float64(d)
		inv := 1 / math.Sqrt(vr+1e-5)
		for i, v := range row {
			y[r*d+i] = (v-mean)*inv*g[i] + b[i]
		}
	}
	return y
}

// meanNLL is the mean negative log-likelihood of targets under logp [len(targets), c].
func meanNLL(logp []float64, c int, targets []int) float64 {
	s := 0.0
	for r, y := range targets {
		s -= logp[r*c+y]
	}
	return s / float64(len(targets))
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

func toF64(p []float32) []float64 {
	q := make([]float64, len(p))
	for i, v := range p {
		q[i] = float64(v)
	}
	return q
}

// Gradient check tolerance. The model computes in float32; the finite differences are taken on the
// float64 reference with step gradEps, whose truncation and rounding errors are ~1e-9. The float32
// gradient carries relative rounding errors of ~1e-6 accumulated over the few dozen terms of these
// tiny models, so |analytic − numeric| ≤ gradAtol + gradRtol·|numeric| leaves a wide margin while a
// wrong gradient (missing term, wrong scale, transposed weight) misses by orders of magnitude.
const (
	gradEps  = 1e-6
	gradAtol = 2e-5
	gradRtol = 1e-3
	lossTol  = 1e-5 // |float32 graph loss − float64 reference loss|
)

// checkGradients compares grad (from the model) with central finite differences of lossAt over up
// to perTensor randomly chosen parameters of every tensor.
func checkGradients(t *testing.T, l Layout, params []float32, grad []float32, perTensor int, lossAt func([]float64) float64) {
	t.Helper()
	p := toF64(params)
	r := rand.New(rand.NewPCG(7, 11))
	checked := 0
	for _, ten := range l {
		idx := r.Perm(ten.Size())
		if len(idx) > perTensor {
			idx = idx[:perTensor]
		}
		nonzero := 0
		for _, j := range idx {
			i := ten.Offset + j
			orig := p[i]
			p[i] = orig + gradEps
			up := lossAt(p)
			p[i] = orig - gradEps
			down := lossAt(p)
			p[i] = orig
			num := (up - down) / (2 * gradEps)
			got := float64(grad[i])
			if math.Abs(got-num) > gradAtol+gradRtol*math.Abs(num) {
				t.Errorf("%s[%d]: gradient %.8g, finite difference %.8g", ten.Name, j, got, num)
			}
			if math.Abs(num) > 1e-6 {
				nonzero++
			}
			checked++
		}
		if nonzero == 0 {
			t.Errorf("%s: all %d checked gradients are zero; the check proves nothing for this tensor", ten.Name, len(idx))
		}
	}
	t.Logf("checked %d parameters", checked)
}

func TestMLPGradMatchesFiniteDifferences(t *testing.T) {
	for _, sizes := range [][]int{{5, 2}, {6, 7, 4}, {5, 6, 5, 3}} {
		t.Run(itoa(len(sizes))+"layers", func(t *testing.T) {
			const n = 4
			m, err := NewMLP(MLPConfig{Sizes: sizes, Batch: n, Seed: 3})
			if err != nil {
				t.Fatal(err)
			}
			// Non-zero biases so that their gradients through ReLUs are exercised in general position.
			r := rand.New(rand.NewPCG(1, 2))
			for i := range m.Params() {
				m.Params()[i] += float32(r.NormFloat64() * 0.1)
			}
			b := randomMLPBatch(r, sizes[0], sizes[len(sizes)-1], n)
			grad := make([]float32, len(m.Params()))
			loss, err := m.Grad(b, grad)
			if err != nil {
				t.Fatal(err)
			}
			lossAt := func(p []float64) float64 {
				return meanNLL(refMLPLogp(sizes, m.Layout(), p, b.X), sizes[len(sizes)-1], b.Y)
			}
			if ref := lossAt(toF64(m.Params())); math.Abs(float64(loss)-ref) > lossTol {
				t.Fatalf("loss %.8g, reference %.8g", loss, ref)
			}
			checkGradients(t, m.Layout(), m.Params(), grad, 24, lossAt)
		})
	}
}

func TestCharLMGradMatchesFiniteDifferences(t *testing.T) {
	for _, tc := range []struct {
		hidden int
		ln     bool
	}{{6, false}, {-1, false}, {6, true}, {-1, true}} {
		t.Run(fmt.Sprintf("hidden=%d,layernorm=%v", tc.hidden, tc.ln), func(t *testing.T) {
			cfg := CharLMConfig{Vocab: 5, Context: 4, Embed: 4, Hidden: tc.hidden, Batch: 3, Seed: 5, LayerNorm: tc.ln}
			m, err := NewCharLM(cfg)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(3, 4))
			for i := range m.Params() {
				m.Params()[i] += float32(r.NormFloat64() * 0.1)
			}
			b := randomLMBatch(r, cfg.Vocab, cfg.Context, cfg.Batch)
			grad := make([]float32, len(m.Params()))
			loss, err := m.Grad(b, grad)
			if err != nil {
				t.Fatal(err)
			}
			full := m.Config()
			lossAt := func(p []float64) float64 {
				return meanNLL(refCharLMLogp(full, m.Layout(), p, b.Tokens), cfg.Vocab, b.Y)
			}
			if ref := lossAt(toF64(m.Params())); math.Abs(float64(loss)-ref) > lossTol {
				t.Fatalf("loss %.8g, reference %.8g", loss, ref)
			}
			checkGradients(t, m.Layout(), m.Params(), grad, 24, lossAt)
		})
	}
}

// randomMLPBatch draws n samples with features N(0,1) and uniform labels.
func randomMLPBatch(r *rand.Rand, features, classes, n int) Batch {
	b := Batch{X: make([]float32, n*features), Y: make([]int, n)}
	for i := range b.X {
		b.X[i] = float32(r.NormFloat64())
	}
	for i := range b.Y {
		b.Y[i] = r.IntN(classes)
	}
	return b
}

// randomLMBatch draws n sequences of uniform tokens; targets are the next token (the last position's
// target is drawn too).
func randomLMBatch(r *rand.Rand, vocab, context, n int) Batch {
	seq := make([]int, n*(context+1))
	for i := range seq {
		seq[i] = r.IntN(vocab)
	}
	return lmBatchFromSequences(seq, context, n)
}

// lmBatchFromSequences cuts n windows of context+1 tokens from seq (consecutive, each starting
// context+1 after the previous) into inputs and next-token targets.
func lmBatchFromSequences(seq []int, context, n int) Batch {
	b := Batch{Tokens: make([]int, 0, n*context), Y: make([]int, 0, n*context)}
	for s := 0; s < n; s++ {
		w := seq[s*(context+1) : (s+1)*(context+1)]
		b.Tokens = append(b.Tokens, w[:context]...)
		b.Y = append(b.Y, w[1:]...)
	}
	return b
}
