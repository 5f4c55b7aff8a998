package nn

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// stageBatch draws n sequences of the config's context: tokens and next-token targets.
func stageBatch(r *rand.Rand, cfg GPTConfig, n int) Batch {
	cfg = cfg.withDefaults()
	N := n * cfg.Context
	b := Batch{Tokens: make([]int, N), Y: make([]int, N)}
	for i := range b.Tokens {
		b.Tokens[i] = r.IntN(cfg.Vocab)
		b.Y[i] = r.IntN(cfg.Vocab)
	}
	return b
}

func newTestStages(t testing.TB, cfg GPTConfig, S int) []*GPTStage {
	t.Helper()
	specs, err := SplitStages(cfg.withDefaults().Layers, S)
	if err != nil {
		t.Fatal(err)
	}
	stages := make([]*GPTStage, S)
	for s, spec := range specs {
		if stages[s], err = NewGPTStage(cfg, spec); err != nil {
			t.Fatal(err)
		}
	}
	return stages
}

// chainGrad runs a batch of M micro-batches through the stages in process and returns the mean
// loss and the whole-model gradient: the stages' gradients accumulated over the micro-batches,
// divided by M, and added into the whole layout (the tied wte's two parts summed).
func chainGrad(t testing.TB, stages []*GPTStage, b Batch, M int) (float32, []float32) {
	t.Helper()
	cfg := stages[0].Config()
	N := cfg.Batch * cfg.Context
	S := len(stages)
	acc := make([][]float32, S)
	for s, st := range stages {
		acc[s] = make([]float32, len(st.Params()))
	}
	var lossSum float32
	for m := 0; m < M; m++ {
		mbs := make([]StageMicro, S)
		mbs[0].Tokens = b.Tokens[m*N : (m+1)*N]
		mbs[S-1].Y = b.Y[m*N : (m+1)*N]
		for s := 0; s < S-1; s++ {
			out := make([]float32, stages[s].ActivationLen())
			if err := stages[s].Forward(mbs[s], out); err != nil {
				t.Fatal(err)
			}
			mbs[s+1].X = out
		}
		var up []float32
		for s := S - 1; s >= 0; s-- {
			grad := make([]float32, len(stages[s].Params()))
			var dx []float32
			if s > 0 {
				dx = make([]float32, stages[s].ActivationLen())
			}
			loss, err := stages[s].Backward(mbs[s], up, grad, dx)
			if err != nil {
				t.Fatal(err)
			}
			if s == S-1 {
				lossSum += loss
			}
			for i, g := range grad {
				acc[s][i] += g
			}
			up = dx
		}
	}
	whole := make([]float32, stages[0].WholeSize())
	for s, st := range stages {
		for i := range acc[s] {
			acc[s][i] /= float32(M)
		}
		st.AddToWhole(whole, acc[s])
	}
	return lossSum / float32(M), whole
}

// closeRel reports the largest |a−b| relative to the largest |b| (the gradient's scale).
func maxRelDiff(a, b []float32) float64 {
	var scale, diff float64
	for i := range b {
		scale = math.Max(scale, math.Abs(float64(b[i])))
		diff = math.Max(diff, math.Abs(float64(a[i])-float64(b[i])))
	}
	return diff / math.Max(scale, 1e-30)
}

// TestGPTStagesMatchWholeModel is the stages' contract: chained in process, S stages give the
// whole GPT's loss and gradient (in its layout, the tied wte's parts summed) — the same bits for
// one micro-batch — and a batch cut into M micro-batches with accumulated gradients gives the
// whole batch's to float32 rounding.
func TestGPTStagesMatchWholeModel(t *testing.T) {
	base := GPTConfig{Layers: 3, Embed: 32, Heads: 2, Context: 16, Vocab: 64, Seed: 11}
	for _, tc := range []struct {
		name     string
		S, M, mb int // stages, micro-batches, sequences per micro-batch
	}{
		{"S1", 1, 1, 4},
		{"S2", 2, 1, 4},
		{"S3", 3, 1, 4},
		{"S2-M4", 2, 4, 1},
		{"S3-M2", 3, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wcfg := base
			wcfg.Batch = tc.M * tc.mb
			whole, err := NewGPT(wcfg)
			if err != nil {
				t.Fatal(err)
			}
			scfg := base
			scfg.Batch = tc.mb
			stages := newTestStages(t, scfg, tc.S)
			for _, st := range stages { // same init as the whole model
				want := make([]float32, len(st.Params()))
				st.FromWhole(want, whole.Params())
				for i := range want {
					if want[i] != st.Params()[i] {
						t.Fatalf("stage %d init differs from the whole model's at %d", st.Spec().Index, i)
					}
				}
			}
			r := rand.New(rand.NewPCG(3, uint64(tc.S)))
			wg := make([]float32, len(whole.Params()))
			for k := 0; k < 3; k++ {
				b := stageBatch(r, base, wcfg.Batch)
				wl, err := whole.Grad(b, wg)
				if err != nil {
					t.Fatal(err)
				}
				sl, sg := chainGrad(t, stages, b, tc.M)
				if d := math.Abs(float64(sl-wl)) / math.Abs(float64(wl)); d > 1e-6 {
					t.Errorf("batch %d: loss %v, whole model %v (rel %g)", k, sl, wl, d)
				}
				d := maxRelDiff(sg, wg)
				// One micro-batch runs the whole model's ops in the whole model's order: the same bits.
				if tc.M == 1 && (d != 0 || sl != wl) {
					t.Errorf("batch %d: one micro-batch differs from the whole model (loss %v vs %v, gradient %g relative), want the same bits", k, sl, wl, d)
				}
				if d > 1e-5 {
					t.Errorf("batch %d: gradient differs from the whole model's by %g relative", k, d)
				}
				// Move the parameters so the next batch checks another point.
				for i := range whole.Params() {
					whole.Params()[i] -= 0.5 * wg[i]
				}
				for _, st := range stages {
					st.FromWhole(st.Params(), whole.Params())
				}
			}
		})
	}
}

func TestGPTStageSpans(t *testing.T) {
	cfg := GPTConfig{Layers: 4, Embed: 16, Heads: 2, Context: 8, Vocab: 32, Batch: 1}
	whole := gptLayout(cfg.withDefaults())
	for _, S := range []int{1, 2, 3, 4} {
		stages := newTestStages(t, cfg, S)
		// Every whole tensor is owned by exactly one stage; the last stage's wte is a tied copy.
		owned := make([]int, whole.Size())
		total := 0
		for _, st := range stages {
			if err := st.Layout().Validate(); err != nil {
				t.Fatal(err)
			}
			total += len(st.Params())
			for _, sp := range st.Spans() {
				if sp.Tied {
					if !st.Spec().IsLast() || sp.Name != "transformer.wte.weight" || S == 1 {
						t.Errorf("S=%d stage %d: unexpected tied span %+v", S, st.Spec().Index, sp)
					}
					continue
				}
				for i := sp.Whole; i < sp.Whole+sp.Len; i++ {
					owned[i]++
				}
			}
		}
		for i, n := range owned {
			if n != 1 {
				t.Fatalf("S=%d: whole element %d owned by %d stages", S, i, n)
			}
		}
		// The owned ranges are contiguous in both vectors and tile the whole one in stage order.
		next := 0
		for _, st := range stages {
			slo, wlo, n := st.Owned()
			if wlo != next {
				t.Errorf("S=%d stage %d owns from %d, want %d", S, st.Spec().Index, wlo, next)
			}
			for _, sp := range st.Spans() {
				if sp.Tied {
					continue
				}
				if sp.Whole-wlo != sp.Stage-slo || sp.Whole+sp.Len > wlo+n {
					t.Errorf("S=%d stage %d: span %+v outside its owned range [%d, %d) at stage offset %d", S, st.Spec().Index, sp, wlo, wlo+n, slo)
				}
			}
			next = wlo + n
		}
		if next != whole.Size() {
			t.Errorf("S=%d: owned ranges end at %d, want %d", S, next, whole.Size())
		}
		wantTotal := whole.Size()
		if S > 1 {
			wantTotal += cfg.Vocab * cfg.Embed
		}
		if total != wantTotal {
			t.Errorf("S=%d: stages hold %d parameters, want %d", S, total, wantTotal)
		}
	}
}

func TestSplitStages(t *testing.T) {
	for _, tc := range []struct {
		L, S int
		want [][2]int
	}{
		{3, 1, [][2]int{{0, 3}}},
		{3, 2, [][2]int{{0, 2}, {2, 3}}},
		{3, 3, [][2]int{{0, 1}, {1, 2}, {2, 3}}},
		{8, 3, [][2]int{{0, 3}, {3, 6}, {6, 8}}},
	} {
		specs, err := SplitStages(tc.L, tc.S)
		if err != nil {
			t.Fatal(err)
		}
		for s, sp := range specs {
			if [2]int{sp.First, sp.Last} != tc.want[s] || sp.Index != s || sp.Count != tc.S {
				t.Errorf("SplitStages(%d, %d)[%d] = %+v, want blocks %v", tc.L, tc.S, s, sp, tc.want[s])
			}
		}
	}
	if _, err := SplitStages(2, 3); !errors.Is(err, ErrConfig) {
		t.Errorf("3 stages of 2 blocks: %v, want ErrConfig", err)
	}
}

func TestGPTStageBadInput(t *testing.T) {
	cfg := GPTConfig{Layers: 2, Embed: 16, Heads: 2, Context: 8, Vocab: 32, Batch: 2}
	stages := newTestStages(t, cfg, 2)
	N := 2 * 8
	out := make([]float32, stages[0].ActivationLen())
	grad0 := make([]float32, len(stages[0].Params()))
	grad1 := make([]float32, len(stages[1].Params()))
	dx := make([]float32, stages[1].ActivationLen())
	for _, tc := range []struct {
		name string
		run  func() error
		want error
	}{
		{"short tokens", func() error { return stages[0].Forward(StageMicro{Tokens: make([]int, N-1)}, out) }, ErrBatch},
		{"token out of range", func() error {
			tok := make([]int, N)
			tok[3] = 32
			return stages[0].Forward(StageMicro{Tokens: tok}, out)
		}, ErrBatch},
		{"short output", func() error { return stages[0].Forward(StageMicro{Tokens: make([]int, N)}, out[:1]) }, ErrGrad},
		{"forward on last", func() error { return stages[1].Forward(StageMicro{X: out}, out) }, ErrBatch},
		{"short activation", func() error {
			_, err := stages[1].Backward(StageMicro{X: out[:5], Y: make([]int, N)}, nil, grad1, dx)
			return err
		}, ErrBatch},
		{"target out of range", func() error {
			y := make([]int, N)
			y[0] = -1
			_, err := stages[1].Backward(StageMicro{X: out, Y: y}, nil, grad1, dx)
			return err
		}, ErrBatch},
		{"missing dOut", func() error {
			_, err := stages[0].Backward(StageMicro{Tokens: make([]int, N)}, nil, grad0, nil)
			return err
		}, ErrBatch},
		{"short grad", func() error {
			_, err := stages[0].Backward(StageMicro{Tokens: make([]int, N)}, out, grad0[:3], nil)
			return err
		}, ErrGrad},
	} {
		if err := tc.run(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := NewGPTStage(cfg, StageSpec{Index: 1, Count: 3, First: 1, Last: 1}); !errors.Is(err, ErrConfig) {
		t.Errorf("empty middle stage: %v, want ErrConfig", err)
	}
	if _, err := NewGPTStage(cfg, StageSpec{Index: 0, Count: 2, First: 1, Last: 2}); !errors.Is(err, ErrConfig) {
		t.Errorf("first stage not at block 0: %v, want ErrConfig", err)
	}
}

// TestGPTStagesEvalLikeWholeModel: the stages' forward-only passes chained over a validation set
// in chunks of EvalBatch sequences (the last one shorter) give the whole GPT's Eval, the same
// bits, and a stage's initial values are the whole model's (drawn without holding them all).
func TestGPTStagesEvalLikeWholeModel(t *testing.T) {
	cfg := GPTConfig{Layers: 3, Embed: 32, Heads: 2, Context: 16, Vocab: 64, Batch: 3, Seed: 5}
	whole, err := NewGPT(cfg)
	if err != nil {
		t.Fatal(err)
	}
	val := stageBatch(rand.New(rand.NewPCG(1, 2)), cfg, 7) // chunks of 3, 3 and 1
	wantLoss, wantCorrect, wantCount, err := whole.Eval(val)
	if err != nil {
		t.Fatal(err)
	}
	for _, S := range []int{1, 2, 3} {
		stages := newTestStages(t, cfg, S)
		for s, st := range stages {
			for _, sp := range st.Spans() {
				w := whole.Params()[sp.Whole : sp.Whole+sp.Len]
				for i, v := range st.Params()[sp.Stage : sp.Stage+sp.Len] {
					if math.Float32bits(v) != math.Float32bits(w[i]) {
						t.Fatalf("S=%d stage %d: %s[%d] = %v, the whole model's is %v", S, s, sp.Name, i, v, w[i])
					}
				}
			}
		}
		T := cfg.Context
		var loss float64
		var correct, count int
		for start := 0; start < 7; start += cfg.Batch {
			n := min(cfg.Batch, 7-start)
			mb := StageMicro{Tokens: val.Tokens[start*T : (start+n)*T]}
			for s, st := range stages {
				if s == S-1 {
					mb.Y = val.Y[start*T : (start+n)*T]
					l, c, err := st.Eval(mb, nil)
					if err != nil {
						t.Fatal(err)
					}
					loss += l
					correct += c
					count += n * T
					break
				}
				out := make([]float32, n*T*cfg.Embed)
				if _, _, err := st.Eval(mb, out); err != nil {
					t.Fatal(err)
				}
				mb = StageMicro{X: out}
			}
		}
		if loss != wantLoss || correct != wantCorrect || count != wantCount {
			t.Errorf("S=%d: eval loss %v correct %d of %d, the whole model's %v, %d of %d", S, loss, correct, count, wantLoss, wantCorrect, wantCount)
		}
	}
	// Bad chunks are errors.
	st := newTestStages(t, cfg, 2)
	for _, tc := range []struct {
		s   int
		mb  StageMicro
		out []float32
	}{
		{0, StageMicro{Tokens: make([]int, 5)}, nil},
		{0, StageMicro{Tokens: make([]int, 4*cfg.Context)}, make([]float32, 4*cfg.Context*cfg.Embed)},
		{0, StageMicro{Tokens: make([]int, cfg.Context)}, make([]float32, 3)},
		{1, StageMicro{X: make([]float32, cfg.Context*cfg.Embed)}, nil},
		{1, StageMicro{X: make([]float32, 7)}, nil},
	} {
		if _, _, err := st[tc.s].Eval(tc.mb, tc.out); !errors.Is(err, ErrBatch) && !errors.Is(err, ErrGrad) {
			t.Errorf("stage %d: Eval(%d tokens, %d values) = %v, want ErrBatch or ErrGrad", tc.s, len(tc.mb.Tokens), len(tc.mb.X), err)
		}
	}
}
