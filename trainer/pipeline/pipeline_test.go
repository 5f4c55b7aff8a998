package pipeline

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

func TestScheduleOps(t *testing.T) {
	for _, tc := range []struct {
		k        Schedule
		S, M     int
		perStage []string
	}{
		{OneFOneB, 1, 3, []string{"F0 B0 F1 B1 F2 B2"}},
		{OneFOneB, 2, 3, []string{"F0 F1 B0 F2 B1 B2", "F0 B0 F1 B1 F2 B2"}},
		{OneFOneB, 3, 4, []string{"F0 F1 F2 B0 F3 B1 B2 B3", "F0 F1 B0 F2 B1 F3 B2 B3", "F0 B0 F1 B1 F2 B2 F3 B3"}},
		{OneFOneB, 4, 2, []string{"F0 F1 B0 B1", "F0 F1 B0 B1", "F0 F1 B0 B1", "F0 B0 F1 B1"}},
		{GPipe, 3, 3, []string{"F0 F1 F2 B0 B1 B2", "F0 F1 F2 B0 B1 B2", "F0 B0 F1 B1 F2 B2"}},
	} {
		for s, want := range tc.perStage {
			ops, err := tc.k.Ops(s, tc.S, tc.M)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, op := range ops {
				got = append(got, op.String())
			}
			if g := strings.Join(got, " "); g != want {
				t.Errorf("%v S=%d M=%d stage %d: %s, want %s", tc.k, tc.S, tc.M, s, g, want)
			}
		}
	}
	for _, bad := range [][3]int{{0, 0, 1}, {2, 2, 1}, {0, 2, 0}, {-1, 2, 1}} {
		if _, err := OneFOneB.Ops(bad[0], bad[1], bad[2]); !errors.Is(err, ErrConfig) {
			t.Errorf("Ops(%v): %v, want ErrConfig", bad, err)
		}
	}
}

// TestSimulate checks that the schedules never deadlock and take the textbook time: with equal
// costs f and b on every stage, (M + S − 1)·(f + b), a bubble of (S − 1)/(M + S − 1).
func TestSimulate(t *testing.T) {
	for _, k := range []Schedule{OneFOneB, GPipe} {
		for S := 1; S <= 5; S++ {
			for M := 1; M <= 9; M++ {
				f, b := make([]float64, S), make([]float64, S)
				for s := range f {
					f[s], b[s] = 1, 2
				}
				tl, err := Simulate(k, S, M, f, b)
				if err != nil {
					t.Fatal(err)
				}
				if want := float64(M+S-1) * 3; tl.Makespan != want {
					t.Errorf("%v S=%d M=%d: makespan %v, want %v", k, S, M, tl.Makespan, want)
				}
				if u, want := tl.Utilisation(0), float64(M)/float64(M+S-1); math.Abs(u-want) > 1e-12 {
					t.Errorf("%v S=%d M=%d: utilisation %v, want %v", k, S, M, u, want)
				}
			}
		}
	}
}

var tinyGPT = nn.GPTConfig{Layers: 3, Embed: 32, Heads: 2, Context: 16, Vocab: 64, Seed: 5}

func newStages(t testing.TB, cfg nn.GPTConfig, S int, pc Config) []*Stage {
	t.Helper()
	specs, err := nn.SplitStages(cfg.Layers, S)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*Stage, S)
	for s, spec := range specs {
		m, err := nn.NewGPTStage(cfg, spec)
		if err != nil {
			t.Fatal(err)
		}
		if out[s], err = NewStage(m, pc); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func randomBatch(r *rand.Rand, cfg nn.GPTConfig, seqs int) nn.Batch {
	n := seqs * cfg.Context
	b := nn.Batch{Tokens: make([]int, n), Y: make([]int, n)}
	for i := range b.Tokens {
		b.Tokens[i] = r.IntN(cfg.Vocab)
		b.Y[i] = (b.Tokens[i]*7 + 3) % cfg.Vocab // learnable
	}
	return b
}

// runGroup runs every stage's Step for each batch, one goroutine per stage, and returns the
// stats of each step and stage. The first error cancels the others.
func runGroup(t testing.TB, stages []*Stage, links []Link, batches []nn.Batch) [][]StepStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stats := make([][]StepStats, len(batches))
	for i := range stats {
		stats[i] = make([]StepStats, len(stages))
	}
	errs := make([]error, len(stages))
	var wg sync.WaitGroup
	for s := range stages {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k, b := range batches {
				st, err := stages[s].Step(ctx, links[s], k, b)
				if err != nil {
					errs[s] = err
					cancel()
					return
				}
				stats[k][s] = st
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return stats
}

// gather assembles the stages' owned parameters into the whole model's layout.
func gather(stages []*Stage) []float32 {
	whole := make([]float32, stages[0].Model().WholeSize())
	for _, st := range stages {
		st.Model().ToWhole(whole, st.Model().Params())
	}
	return whole
}

// TestStagesTrainLikeWholeModel: S stage goroutines over in-process links train k inner steps
// and end with the parameters of the whole GPT trained k steps on the same batches with the same
// AdamW (clipping by the global norm included), and the tied wte's two copies stay bit-identical.
func TestStagesTrainLikeWholeModel(t *testing.T) {
	const steps = 4
	adam := trainer.AdamWConfig{LR: 3e-3, WeightDecay: 0.01, Warmup: 2, ClipNorm: 0.5}
	for _, tc := range []struct {
		name    string
		S, M, n int // stages, micro-batches, sequences per micro-batch
		k       Schedule
	}{
		{"S2-M1", 2, 1, 4, OneFOneB},
		{"S3-M1", 3, 1, 4, OneFOneB},
		{"S2-M4-1f1b", 2, 4, 1, OneFOneB},
		{"S3-M4-1f1b", 3, 4, 1, OneFOneB},
		{"S3-M4-gpipe", 3, 4, 1, GPipe},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wcfg := tinyGPT
			wcfg.Batch = tc.M * tc.n
			whole, err := nn.NewGPT(wcfg)
			if err != nil {
				t.Fatal(err)
			}
			opt, err := trainer.NewAdamW(len(whole.Params()), adam)
			if err != nil {
				t.Fatal(err)
			}
			scfg := tinyGPT
			scfg.Batch = tc.n
			stages := newStages(t, scfg, tc.S, Config{Micro: tc.M, Schedule: tc.k, AdamW: adam})
			r := rand.New(rand.NewPCG(9, 9))
			batches := make([]nn.Batch, steps)
			grad := make([]float32, len(whole.Params()))
			var wantLoss []float32
			var wantNorm []float32
			for k := range batches {
				batches[k] = randomBatch(r, tinyGPT, wcfg.Batch)
				loss, err := whole.Grad(batches[k], grad)
				if err != nil {
					t.Fatal(err)
				}
				wantLoss = append(wantLoss, loss)
				wantNorm = append(wantNorm, opt.StepAt(whole.Params(), grad, k))
			}
			if wantNorm[0] <= adam.ClipNorm {
				t.Fatalf("the first step's norm %v does not reach the clip %v: the test would not clip", wantNorm[0], adam.ClipNorm)
			}
			stats := runGroup(t, stages, NewLocalGroup(tc.S), batches)
			for k := range stats {
				for s, st := range stats[k] {
					if d := math.Abs(float64(st.Loss - wantLoss[k])); d > 1e-5*math.Abs(float64(wantLoss[k])) {
						t.Errorf("step %d stage %d: loss %v, whole model %v", k, s, st.Loss, wantLoss[k])
					}
					if d := math.Abs(float64(st.GradNorm - wantNorm[k])); d > 1e-5*float64(wantNorm[k]) {
						t.Errorf("step %d stage %d: norm %v, whole model %v", k, s, st.GradNorm, wantNorm[k])
					}
				}
			}
			got := gather(stages)
			var diff, scale float64
			for i, w := range whole.Params() {
				diff = math.Max(diff, math.Abs(float64(got[i]-w)))
				scale = math.Max(scale, math.Abs(float64(w)))
			}
			t.Logf("max |θ_stages − θ_whole| = %g (max |θ| %g)", diff, scale)
			// A step moves a parameter by up to LR; float32 rounding of the micro-batch sums may
			// change the last bits of a gradient, and AdamW's normalisation can make a relative
			// change in a tiny gradient a visible one in its update.
			if diff > 1e-5*scale {
				t.Errorf("parameters differ from the whole model's by %g (scale %g)", diff, scale)
			}
			if tc.M == 1 && diff != 0 {
				t.Errorf("one micro-batch: parameters differ from the whole model's by %g, want the same bits", diff)
			}
			lo, hi, _ := stages[0].Model().Tied()
			llo, lhi, _ := stages[tc.S-1].Model().Tied()
			a, b := stages[0].Model().Params()[lo:hi], stages[tc.S-1].Model().Params()[llo:lhi]
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("tied wte copies differ at %d: %v vs %v", i, a[i], b[i])
				}
			}
		})
	}
}

// TestSchedulesAgree: GPipe and 1F1B accumulate in the same order, so they train to the same bits.
func TestSchedulesAgree(t *testing.T) {
	cfg := tinyGPT
	cfg.Batch = 1
	r := rand.New(rand.NewPCG(1, 2))
	batches := []nn.Batch{randomBatch(r, cfg, 3), randomBatch(r, cfg, 3)}
	var results [][]float32
	for _, k := range []Schedule{OneFOneB, GPipe} {
		stages := newStages(t, cfg, 3, Config{Micro: 3, Schedule: k})
		runGroup(t, stages, NewLocalGroup(3), batches)
		results = append(results, gather(stages))
	}
	for i := range results[0] {
		if math.Float32bits(results[0][i]) != math.Float32bits(results[1][i]) {
			t.Fatalf("1f1b and gpipe differ at %d", i)
		}
	}
}

// scriptLink is stage 1 of a 2-stage group whose stage 0 is a script of frames.
type scriptLink struct {
	in   []Frame
	sent []Frame
}

func (l *scriptLink) Send(_ context.Context, _ int, f Frame) error {
	l.sent = append(l.sent, f)
	return nil
}

func (l *scriptLink) Recv(ctx context.Context, _ int) (Frame, error) {
	if len(l.in) == 0 {
		return Frame{}, errors.New("script ended")
	}
	f := l.in[0]
	l.in = l.in[1:]
	return f, nil
}

func TestStageRejectsBadFrames(t *testing.T) {
	cfg := tinyGPT
	cfg.Batch = 1
	stages := newStages(t, cfg, 2, Config{})
	last := stages[1]
	good, err := last.Codecs().Encode(nil, Activation, make([]float32, last.Model().ActivationLen()))
	if err != nil {
		t.Fatal(err)
	}
	b := randomBatch(rand.New(rand.NewPCG(1, 1)), cfg, 1)
	for _, tc := range []struct {
		name string
		f    Frame
		want error
	}{
		{"wrong kind", Frame{Kind: Gradient, Payload: good}, ErrProtocol},
		{"wrong step", Frame{Kind: Activation, Step: 7, Payload: good}, ErrProtocol},
		{"wrong micro-batch", Frame{Kind: Activation, Micro: 1, Payload: good}, ErrProtocol},
		{"truncated payload", Frame{Kind: Activation, Payload: good[:len(good)-9]}, ErrFrame},
		{"garbage payload", Frame{Kind: Activation, Payload: []byte("not a tensor")}, ErrFrame},
		{"empty payload", Frame{Kind: Activation}, ErrFrame},
	} {
		_, err := last.Step(context.Background(), &scriptLink{in: []Frame{tc.f}}, 0, b)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A short activation message of the right setting but fewer values.
	short, err := compress.New(compress.Config{})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := short.Encode(nil, make([]float32, 10))
	if _, err := last.Step(context.Background(), &scriptLink{in: []Frame{{Kind: Activation, Payload: p}}}, 0, b); !errors.Is(err, ErrFrame) {
		t.Errorf("short activation: %v, want ErrFrame", err)
	}
	if _, err := stages[0].Step(context.Background(), &scriptLink{}, 0, nn.Batch{Tokens: b.Tokens[:5]}); !errors.Is(err, ErrBatch) {
		t.Errorf("short batch: %v, want ErrBatch", err)
	}
}

func TestFrameRoundTrip(t *testing.T) {
	f := Frame{Kind: Tie, Step: 1 << 30, Micro: 7, Payload: []byte{1, 2, 3}}
	b := f.AppendBinary(nil)
	if len(b) != f.Size() {
		t.Fatalf("wire form of %d bytes, Size %d", len(b), f.Size())
	}
	g, err := ParseFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if g.Kind != f.Kind || g.Step != f.Step || g.Micro != f.Micro || string(g.Payload) != string(f.Payload) {
		t.Errorf("round trip: %+v, want %+v", g, f)
	}
	for _, bad := range [][]byte{nil, {1, 0, 0}, append([]byte{9}, make([]byte, 11)...), append([]byte{1, 1}, make([]byte, 10)...),
		append([]byte{byte(NormTotal)}, make([]byte, 12)...)} {
		if _, err := ParseFrame(bad); !errors.Is(err, ErrFrame) {
			t.Errorf("ParseFrame(% x): %v, want ErrFrame", bad, err)
		}
	}
}

// FuzzDecodeFrame: any bytes from a peer parse and decode to a frame or an error, never a panic
// and never more than the shape's values.
func FuzzDecodeFrame(f *testing.F) {
	for _, set := range []string{"fp32", "q8"} {
		c, err := NewCodecs(compress.MustParse(set), 64, 16, 32)
		if err != nil {
			f.Fatal(err)
		}
		p, _ := c.Encode(nil, Activation, make([]float32, 64))
		f.Add(set == "q8", Frame{Kind: Activation, Payload: p}.AppendBinary(nil))
		p, _ = c.Encode(nil, Tie, make([]float32, 32))
		f.Add(set == "q8", Frame{Kind: Tie, Payload: p}.AppendBinary(nil))
	}
	f.Add(false, Frame{Kind: NormTotal, Payload: normPayload(1, 2)}.AppendBinary(nil))
	codecs := map[bool]*Codecs{}
	for _, q8 := range []bool{false, true} {
		set := "fp32"
		if q8 {
			set = "q8"
		}
		c, err := NewCodecs(compress.MustParse(set), 64, 16, 32)
		if err != nil {
			f.Fatal(err)
		}
		codecs[q8] = c
	}
	f.Fuzz(func(t *testing.T, q8 bool, b []byte) {
		fr, err := ParseFrame(b)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("ParseFrame error %v does not wrap ErrFrame", err)
			}
			return
		}
		switch fr.Kind {
		case Activation, Gradient:
			_ = codecs[q8].Decode(make([]float32, 64), fr)
		case Tie:
			_ = codecs[q8].Decode(make([]float32, 32), fr)
		default:
			_, _, _ = parseNorm(fr)
		}
	})
}

func TestCodecs(t *testing.T) {
	const rows, D = 6, 32
	r := rand.New(rand.NewPCG(5, 5))
	x := make([]float32, rows*D)
	for i := range x {
		x[i] = float32(r.NormFloat64()) * float32(1+i/D*10) // rows of very different scales
	}
	for _, tc := range []struct {
		setting string
		bytes   int // payload bytes for x, without the compress header
	}{
		{"fp32", 4 * rows * D},
		{"q8", rows*D + 4*rows},
	} {
		c, err := NewCodecs(compress.MustParse(tc.setting), rows*D, D, 8)
		if err != nil {
			t.Fatal(err)
		}
		p, err := c.Encode(nil, Activation, x)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) < tc.bytes || len(p) > tc.bytes+64 {
			t.Errorf("%s: %d bytes, want %d plus a header", tc.setting, len(p), tc.bytes)
		}
		if n := FrameHeaderLen + len(p); n > c.MaxFrame() {
			t.Errorf("%s: a frame of %d bytes exceeds MaxFrame %d", tc.setting, n, c.MaxFrame())
		}
		got := make([]float32, len(x))
		if err := c.Decode(got, Frame{Kind: Gradient, Payload: p}); err != nil {
			t.Fatal(err)
		}
		for row := 0; row < rows; row++ {
			var absmax float64
			for _, v := range x[row*D : (row+1)*D] {
				absmax = math.Max(absmax, math.Abs(float64(v)))
			}
			for i := row * D; i < (row+1)*D; i++ {
				bound := 0.0 // fp32 is exact
				if tc.setting == "q8" {
					bound = absmax/254 + 1e-6*absmax // the row's own scale: half a step of 127 levels
				}
				if d := math.Abs(float64(got[i] - x[i])); d > bound {
					t.Fatalf("%s: element %d off by %g, bound %g", tc.setting, i, d, bound)
				}
			}
		}
		if err := c.Decode(got, Frame{Kind: Tie, Payload: p}); err == nil {
			t.Errorf("%s: an activation message decoded as the tie of another length", tc.setting)
		}
	}
	for _, bad := range []string{"topk:0.1", "lowrank:2"} {
		if _, err := NewCodecs(compress.MustParse(bad), rows*D, D, 8); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", bad, err)
		}
	}
	if _, err := NewCodecs(compress.Setting{}, 10, 3, 0); !errors.Is(err, ErrConfig) {
		t.Errorf("rows that do not divide the activation: %v, want ErrConfig", err)
	}
}
