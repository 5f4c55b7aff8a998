package nn

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"testing"
)

func newTestMLP(t testing.TB, cfg MLPConfig) *MLP {
	t.Helper()
	m, err := NewMLP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newTestCharLM(t testing.TB, cfg CharLMConfig) *CharLM {
	t.Helper()
	m, err := NewCharLM(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLayouts(t *testing.T) {
	mlp := newTestMLP(t, MLPConfig{Sizes: []int{784, 256, 10}})
	lm := newTestCharLM(t, CharLMConfig{Vocab: 96, Context: 64, Embed: 64})
	lmNoMLP := newTestCharLM(t, CharLMConfig{Vocab: 8, Context: 4, Embed: 6, Hidden: -1, Batch: 2})
	lmLN := newTestCharLM(t, CharLMConfig{Vocab: 8, Context: 4, Embed: 6, Hidden: 10, Batch: 2, LayerNorm: true})
	tests := []struct {
		m      Model
		name   string
		tensor []string
		shapes [][]int
	}{
		{mlp, "mlp:784-256-10", []string{"fc0.w", "fc0.b", "fc1.w", "fc1.b"}, [][]int{{784, 256}, {256}, {256, 10}, {10}}},
		{lm, "charlm:v96-t64-d64-h128",
			[]string{"tok.emb", "pos.emb", "attn.wq", "attn.wk", "attn.wv", "attn.wo", "attn.bo", "mlp.w1", "mlp.b1", "mlp.w2", "mlp.b2", "out.w", "out.b"},
			[][]int{{96, 64}, {64, 64}, {64, 64}, {64, 64}, {64, 64}, {64, 64}, {64}, {64, 128}, {128}, {128, 64}, {64}, {64, 96}, {96}}},
		{lmNoMLP, "charlm:v8-t4-d6-h0",
			[]string{"tok.emb", "pos.emb", "attn.wq", "attn.wk", "attn.wv", "attn.wo", "attn.bo", "out.w", "out.b"},
			[][]int{{8, 6}, {4, 6}, {6, 6}, {6, 6}, {6, 6}, {6, 6}, {6}, {6, 8}, {8}}},
		{lmLN, "charlm:v8-t4-d6-h10-ln",
			[]string{"tok.emb", "pos.emb", "ln1.g", "ln1.b", "attn.wq", "attn.wk", "attn.wv", "attn.wo", "attn.bo",
				"ln2.g", "ln2.b", "mlp.w1", "mlp.b1", "mlp.w2", "mlp.b2", "lnf.g", "lnf.b", "out.w", "out.b"},
			[][]int{{8, 6}, {4, 6}, {6}, {6}, {6, 6}, {6, 6}, {6, 6}, {6, 6}, {6}, {6}, {6}, {6, 10}, {10}, {10, 6}, {6}, {6}, {6}, {6, 8}, {8}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.m.Name(); got != tc.name {
				t.Errorf("Name() = %q, want %q", got, tc.name)
			}
			l := tc.m.Layout()
			if err := l.Validate(); err != nil {
				t.Fatal(err)
			}
			var names []string
			var shapes [][]int
			for _, ten := range l {
				names = append(names, ten.Name)
				shapes = append(shapes, ten.Shape)
			}
			if !reflect.DeepEqual(names, tc.tensor) || !reflect.DeepEqual(shapes, tc.shapes) {
				t.Errorf("layout %v %v, want %v %v", names, shapes, tc.tensor, tc.shapes)
			}
			if l.Size() != len(tc.m.Params()) {
				t.Errorf("layout size %d, params %d", l.Size(), len(tc.m.Params()))
			}
		})
	}
}

func TestParseMLPName(t *testing.T) {
	m := newTestMLP(t, MLPConfig{Sizes: []int{20, 30, 40, 5}})
	sizes, err := ParseMLPName(m.Name())
	if err != nil || !slices.Equal(sizes, []int{20, 30, 40, 5}) {
		t.Fatalf("ParseMLPName(%q) = %v, %v", m.Name(), sizes, err)
	}
	for _, bad := range []string{"", "mlp:", "mlp:784", "mlp:784-x-10", "cnn:1-2", "mlp:784-1-10", "mlp:784--10"} {
		if _, err := ParseMLPName(bad); !errors.Is(err, ErrConfig) {
			t.Errorf("ParseMLPName(%q) error %v, want ErrConfig", bad, err)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	m := newTestMLP(t, MLPConfig{})
	if c := m.Config(); !slices.Equal(c.Sizes, []int{784, 256, 10}) || c.Batch != 64 || c.EvalBatch != 500 {
		t.Errorf("MLP defaults %+v", c)
	}
	if m.BatchSize() != 64 || m.Name() != "mlp:784-256-10" {
		t.Errorf("MLP BatchSize %d Name %q", m.BatchSize(), m.Name())
	}
	lm := newTestCharLM(t, CharLMConfig{})
	want := CharLMConfig{Vocab: 256, Context: 64, Embed: 64, Hidden: 128, Batch: 32, EvalBatch: 32}
	if c := lm.Config(); c != want {
		t.Errorf("CharLM defaults %+v, want %+v", c, want)
	}
}

func TestInvalidConfigs(t *testing.T) {
	mlps := []MLPConfig{
		{Sizes: []int{784}},
		{Sizes: []int{}},
		{Sizes: []int{784, 1, 10}},
		{Sizes: []int{784, 256, 0}},
		{Batch: 1},
		{Batch: -3},
		{EvalBatch: 1},
	}
	for _, c := range mlps {
		if _, err := NewMLP(c); !errors.Is(err, ErrConfig) {
			t.Errorf("NewMLP(%+v) error %v, want ErrConfig", c, err)
		}
	}
	lms := []CharLMConfig{
		{Vocab: 1}, {Vocab: -1}, {Context: 1}, {Embed: 1}, {Hidden: 1}, {Batch: -1}, {EvalBatch: -2},
	}
	for _, c := range lms {
		if _, err := NewCharLM(c); !errors.Is(err, ErrConfig) {
			t.Errorf("NewCharLM(%+v) error %v, want ErrConfig", c, err)
		}
	}
}

func TestInvalidBatches(t *testing.T) {
	mlp := newTestMLP(t, MLPConfig{Sizes: []int{3, 4, 2}, Batch: 2})
	lm := newTestCharLM(t, CharLMConfig{Vocab: 5, Context: 3, Embed: 4, Batch: 2})
	mg := make([]float32, len(mlp.Params()))
	lg := make([]float32, len(lm.Params()))
	okX := []float32{1, 2, 3, 4, 5, 6}
	okTok := []int{0, 1, 2, 3, 4, 0}
	tests := []struct {
		name string
		m    Model
		b    Batch
		grad []float32
		want error
		eval bool // also invalid for Eval
	}{
		{"mlp short X", mlp, Batch{X: okX[:5], Y: []int{0, 1}}, mg, ErrBatch, true},
		{"mlp label too big", mlp, Batch{X: okX, Y: []int{0, 2}}, mg, ErrBatch, true},
		{"mlp negative label", mlp, Batch{X: okX, Y: []int{-1, 0}}, mg, ErrBatch, true},
		{"mlp wrong batch size", mlp, Batch{X: okX[:3], Y: []int{0}}, mg, ErrBatch, false},
		{"mlp tokens", mlp, Batch{X: okX, Tokens: []int{0}, Y: []int{0, 1}}, mg, ErrBatch, true},
		{"mlp short grad", mlp, Batch{X: okX, Y: []int{0, 1}}, mg[1:], ErrGrad, false},
		{"lm token too big", lm, Batch{Tokens: []int{0, 1, 5, 3, 4, 0}, Y: okTok}, lg, ErrBatch, true},
		{"lm negative token", lm, Batch{Tokens: []int{0, 1, -2, 3, 4, 0}, Y: okTok}, lg, ErrBatch, true},
		{"lm target too big", lm, Batch{Tokens: okTok, Y: []int{0, 1, 2, 3, 4, 9}}, lg, ErrBatch, true},
		{"lm partial sequence", lm, Batch{Tokens: okTok[:5], Y: okTok[:5]}, lg, ErrBatch, true},
		{"lm targets mismatch", lm, Batch{Tokens: okTok, Y: okTok[:3]}, lg, ErrBatch, true},
		{"lm wrong batch size", lm, Batch{Tokens: okTok[:3], Y: okTok[:3]}, lg, ErrBatch, false},
		{"lm X", lm, Batch{X: okX, Tokens: okTok, Y: okTok}, lg, ErrBatch, true},
		{"lm long grad", lm, Batch{Tokens: okTok, Y: okTok}, append(lg, 0), ErrGrad, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := slices.Clone(tc.m.Params())
			if _, err := tc.m.Grad(tc.b, tc.grad); !errors.Is(err, tc.want) {
				t.Errorf("Grad error %v, want %v", err, tc.want)
			}
			if _, _, _, err := tc.m.Eval(tc.b); tc.eval && !errors.Is(err, ErrBatch) {
				t.Errorf("Eval error %v, want %v", err, ErrBatch)
			}
			if !slices.Equal(before, tc.m.Params()) {
				t.Error("a rejected batch changed the parameters")
			}
		})
	}
	// The models still work after rejecting bad batches.
	if _, err := mlp.Grad(Batch{X: okX, Y: []int{0, 1}}, mg); err != nil {
		t.Error(err)
	}
	if _, err := lm.Grad(Batch{Tokens: okTok, Y: okTok}, lg); err != nil {
		t.Error(err)
	}
}

// gradTwice runs Grad twice on b and checks that the results are bit-identical (no accumulation).
func gradTwice(t *testing.T, m Model, b Batch) ([]float32, float32) {
	t.Helper()
	g1 := make([]float32, len(m.Params()))
	g2 := make([]float32, len(m.Params()))
	params := slices.Clone(m.Params())
	defer func() {
		if !bitsEqual(params, m.Params()) {
			t.Error("Grad or Eval changed the parameters")
		}
	}()
	l1, err := m.Grad(b, g1)
	if err != nil {
		t.Fatal(err)
	}
	// Eval in between must not disturb gradients either.
	if _, _, _, err := m.Eval(b); err != nil {
		t.Fatal(err)
	}
	for i := range g2 {
		g2[i] = float32(i) // stale content must be overwritten
	}
	l2, err := m.Grad(b, g2)
	if err != nil {
		t.Fatal(err)
	}
	if math.Float32bits(l1) != math.Float32bits(l2) || !bitsEqual(g1, g2) {
		t.Fatalf("Grad not repeatable: loss %v then %v, gradients equal: %v", l1, l2, bitsEqual(g1, g2))
	}
	return g1, l1
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestDeterminism(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	mb := randomMLPBatch(r, 20, 4, 8)
	lb := randomLMBatch(r, 11, 8, 3)
	builders := []struct {
		name  string
		new   func(seed uint64) Model
		batch Batch
	}{
		{"mlp", func(s uint64) Model { return newTestMLP(t, MLPConfig{Sizes: []int{20, 16, 4}, Batch: 8, Seed: s}) }, mb},
		{"charlm", func(s uint64) Model {
			return newTestCharLM(t, CharLMConfig{Vocab: 11, Context: 8, Embed: 8, Batch: 3, Seed: s})
		}, lb},
	}
	for _, bt := range builders {
		t.Run(bt.name, func(t *testing.T) {
			a, b, c := bt.new(42), bt.new(42), bt.new(43)
			if !bitsEqual(a.Params(), b.Params()) {
				t.Fatal("same seed, different parameters")
			}
			if bitsEqual(a.Params(), c.Params()) {
				t.Fatal("different seeds, same parameters")
			}
			ga, la := gradTwice(t, a, bt.batch)
			gb, lb := gradTwice(t, b, bt.batch)
			if math.Float32bits(la) != math.Float32bits(lb) || !bitsEqual(ga, gb) {
				t.Fatal("two instances with the same parameters give different gradients")
			}
			// The same parameters copied into a differently seeded instance give the same results.
			copy(c.Params(), a.Params())
			gc, lc := gradTwice(t, c, bt.batch)
			if math.Float32bits(la) != math.Float32bits(lc) || !bitsEqual(ga, gc) {
				t.Fatal("copied parameters give different gradients")
			}
		})
	}
}

func TestParamsAreLive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	mlp := newTestMLP(t, MLPConfig{Sizes: []int{6, 5, 7}, Batch: 4})
	lm := newTestCharLM(t, CharLMConfig{Vocab: 9, Context: 5, Embed: 4, Batch: 2})
	for _, tc := range []struct {
		m       Model
		b       Batch
		classes int
	}{
		{mlp, randomMLPBatch(r, 6, 7, 4), 7},
		{lm, randomLMBatch(r, 9, 5, 2), 9},
	} {
		t.Run(tc.m.Name(), func(t *testing.T) {
			grad := make([]float32, len(tc.m.Params()))
			before, err := tc.m.Grad(tc.b, grad)
			if err != nil {
				t.Fatal(err)
			}
			// All-zero parameters give all-zero logits: the loss is exactly ln(classes).
			clear(tc.m.Params())
			after, err := tc.m.Grad(tc.b, grad)
			if err != nil {
				t.Fatal(err)
			}
			want := math.Log(float64(tc.classes))
			if math.Abs(float64(after)-want) > 1e-6 || math.Abs(float64(before)-want) < 1e-4 {
				t.Errorf("loss %v before and %v after zeroing the parameters, want ln(%d) = %v after", before, after, tc.classes, want)
			}
			lossSum, _, count, err := tc.m.Eval(tc.b)
			if err != nil || math.Abs(lossSum/float64(count)-want) > 1e-6 {
				t.Errorf("Eval after zeroing: mean loss %v (%v), want %v", lossSum/float64(count), err, want)
			}
		})
	}
}

func TestMLPEvalChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	sizes := []int{7, 9, 4}
	b := randomMLPBatch(r, 7, 4, 11)
	m := newTestMLP(t, MLPConfig{Sizes: sizes, Batch: 4, EvalBatch: 5}) // chunks 5, 5, 1
	whole := newTestMLP(t, MLPConfig{Sizes: sizes, Batch: 4, EvalBatch: 64})
	logp := refMLPLogp(sizes, m.Layout(), toF64(m.Params()), b.X)
	wantLoss, wantCorrect := refScore(logp, 4, b.Y)
	for _, tc := range []struct {
		name string
		m    *MLP
	}{{"chunked", m}, {"whole", whole}} {
		for rep := 0; rep < 2; rep++ { // second pass reuses the cached graphs
			loss, correct, count, err := tc.m.Eval(b)
			if err != nil {
				t.Fatal(err)
			}
			if count != 11 || correct != wantCorrect || math.Abs(loss-wantLoss) > 1e-4 {
				t.Errorf("%s: Eval = %v, %d, %d; reference %v, %d, 11", tc.name, loss, correct, count, wantLoss, wantCorrect)
			}
		}
	}
	before := slices.Clone(m.Params())
	// Remainder sizes that change from call to call (the remainder graph is rebuilt each time).
	for _, rows := range []int{1, 3, 1, 6, 2, 11} {
		loss, correct, count, err := m.Eval(Batch{X: b.X[:rows*7], Y: b.Y[:rows]})
		wantLoss, wantCorrect := refScore(logp[:rows*4], 4, b.Y[:rows])
		if err != nil || count != rows || correct != wantCorrect || math.Abs(loss-wantLoss) > 1e-4 {
			t.Errorf("Eval of %d rows = %v, %d, %d, %v; reference %v, %d", rows, loss, correct, count, err, wantLoss, wantCorrect)
		}
	}
	if loss, correct, count, err := m.Eval(Batch{}); err != nil || loss != 0 || correct != 0 || count != 0 {
		t.Errorf("empty Eval = %v %v %v %v", loss, correct, count, err)
	}
	if !bitsEqual(before, m.Params()) {
		t.Error("Eval changed the parameters")
	}
}

func TestCharLMEvalChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	cfg := CharLMConfig{Vocab: 7, Context: 6, Embed: 8, Batch: 2, EvalBatch: 3}
	b := randomLMBatch(r, 7, 6, 7) // chunks of 3, 3, 1 sequences
	m := newTestCharLM(t, cfg)
	logp := refCharLMLogp(m.Config(), m.Layout(), toF64(m.Params()), b.Tokens)
	wantLoss, wantCorrect := refScore(logp, 7, b.Y)
	for rep := 0; rep < 2; rep++ {
		loss, correct, count, err := m.Eval(b)
		if err != nil {
			t.Fatal(err)
		}
		if count != 42 || correct != wantCorrect || math.Abs(loss-wantLoss) > 1e-4 {
			t.Errorf("Eval = %v, %d, %d; reference %v, %d, 42", loss, correct, count, wantLoss, wantCorrect)
		}
	}
}

func refScore(logp []float64, classes int, y []int) (float64, int) {
	loss, correct := 0.0, 0
	for r, target := range y {
		row := logp[r*classes : (r+1)*classes]
		best := 0
		for c := range row {
			if row[c] > row[best] {
				best = c
			}
		}
		if best == target {
			correct++
		}
		loss -= row[target]
	}
	return loss, correct
}

// TestCharLMIsCausal: changing a token changes no prediction at earlier positions. The reference check
// already implies this; here it is asserted directly on the graph.
func TestCharLMIsCausal(t *testing.T) {
	m := newTestCharLM(t, CharLMConfig{Vocab: 6, Context: 5, Embed: 8, Batch: 1, EvalBatch: 1})
	r := rand.New(rand.NewPCG(2, 8))
	b := randomLMBatch(r, 6, 5, 1)
	// perPos measures each position's prediction through the change in summed loss when only that
	// position's target changes.
	perPos := func(tokens []int) []float64 {
		out := make([]float64, 5)
		full, _, _, err := m.Eval(Batch{Tokens: tokens, Y: b.Y})
		if err != nil {
			t.Fatal(err)
		}
		for p := 0; p < 5; p++ {
			y := slices.Clone(b.Y)
			y[p] = (y[p] + 1) % 6 // shift one target: the loss difference is local to position p
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

// TestGradIndependentOfGOMAXPROCS: replicas on machines with different core counts compute the same
// bits (gonum splits large products across goroutines by output block, never within a sum).
func TestGradIndependentOfGOMAXPROCS(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	mlp := newTestMLP(t, MLPConfig{Batch: 256})
	lm := newTestCharLM(t, CharLMConfig{Vocab: 50, Context: 32, Embed: 64, Batch: 8})
	for _, tc := range []struct {
		m Model
		b Batch
	}{
		{mlp, randomMLPBatch(r, 784, 10, 256)},
		{lm, randomLMBatch(r, 50, 32, 8)},
	} {
		var grads [][]float32
		var losses []float32
		for _, procs := range []int{1, 2, 4} {
			old := runtime.GOMAXPROCS(procs)
			g := make([]float32, len(tc.m.Params()))
			l, err := tc.m.Grad(tc.b, g)
			runtime.GOMAXPROCS(old)
			if err != nil {
				t.Fatal(err)
			}
			grads, losses = append(grads, g), append(losses, l)
		}
		for i := 1; i < len(grads); i++ {
			if !bitsEqual(grads[0], grads[i]) || math.Float32bits(losses[0]) != math.Float32bits(losses[i]) {
				t.Errorf("%s: results depend on GOMAXPROCS", tc.m.Name())
			}
		}
	}
}
