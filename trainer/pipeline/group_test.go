package pipeline

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// nullSource never yields a batch: the outer-step test trains nothing.
type nullSource struct{}

func (nullSource) Next(*nn.Batch, int) {}
func (nullSource) Len() int            { return 0 }

func sameBits(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// TestMemberOuterStepMatchesWorker: members applying each round's aggregate of their own range
// (plain and carried outer steps) hold, concatenated in stage order, the bits of a whole-model
// trainer.Worker's θ_{t+1} and momentum from the same aggregates; every stage's parameters are
// the whole model's restarted from θ_{t+1}, and the last stage's copy of wte is the first's.
func TestMemberOuterStepMatchesWorker(t *testing.T) {
	outer := trainer.OuterConfig{LR: 0.7, Momentum: 0.9}
	for _, S := range []int{1, 2, 3} {
		cfg := tinyGPT
		cfg.Batch = 2
		whole, err := nn.NewGPT(cfg)
		if err != nil {
			t.Fatal(err)
		}
		w, err := trainer.NewWorker(whole, nullSource{}, trainer.WorkerConfig{Outer: outer})
		if err != nil {
			t.Fatal(err)
		}
		g, err := NewGroup(cfg, S, Config{}, outer, nullSource{})
		if err != nil {
			t.Fatal(err)
		}
		if i := sameBits(g.Theta(), w.Global()); i >= 0 {
			t.Fatalf("S=%d: θ_0 differs at %d", S, i)
		}
		r := rand.New(rand.NewPCG(3, uint64(S)))
		n := len(w.Global())
		agg := make([]float32, n)
		for round := 0; round < 4; round++ {
			carry := round%2 == 1
			// Local progress on both sides, the same values: a carried step must keep it.
			wp := whole.Params()
			train := func() {
				for i := range wp {
					wp[i] += float32(r.NormFloat64()) * 1e-3
				}
				for _, m := range g.Members() {
					m.Stage().Model().FromWhole(m.Stage().Model().Params(), wp)
				}
			}
			train()
			if carry {
				w.MarkSent()
				g.MarkSent()
				train()
			}
			for i := range agg {
				agg[i] = float32(r.NormFloat64()) * 1e-2
			}
			aggs := make([][]float32, S)
			for s, m := range g.Members() {
				lo, hi := m.Range()
				aggs[s] = agg[lo:hi]
			}
			step := w.OuterStep
			if carry {
				step = w.OuterStepCarry
			}
			if err := step(agg); err != nil {
				t.Fatal(err)
			}
			if err := g.OuterStep(aggs, carry); err != nil {
				t.Fatal(err)
			}
			if i := sameBits(g.Theta(), w.Global()); i >= 0 {
				t.Fatalf("S=%d round %d: θ_{t+1} differs from the whole worker's at %d", S, round, i)
			}
			var mom []float32
			for _, m := range g.Members() {
				mom = append(mom, m.Momentum()...)
			}
			if i := sameBits(mom, w.Momentum()); i >= 0 {
				t.Fatalf("S=%d round %d: momentum differs at %d", S, round, i)
			}
			for s, m := range g.Members() {
				sm := m.Stage().Model()
				want := make([]float32, len(sm.Params()))
				sm.FromWhole(want, whole.Params())
				if i := sameBits(sm.Params(), want); i >= 0 {
					t.Fatalf("S=%d round %d stage %d: parameters differ from the whole model's at %d", S, round, s, i)
				}
			}
		}
	}
}

func TestMemberOuterStepRejects(t *testing.T) {
	cfg := tinyGPT
	cfg.Batch = 1
	g, err := NewGroup(cfg, 2, Config{}, trainer.OuterConfig{}, nullSource{})
	if err != nil {
		t.Fatal(err)
	}
	first, last := g.Members()[0], g.Members()[1]
	lo, hi := first.Range()
	llo, lhi := last.Range()
	wte := first.TiedGlobal()
	for _, tc := range []struct {
		name      string
		m         *Member
		agg, tied []float32
	}{
		{"short aggregate", first, make([]float32, hi-lo-1), nil},
		{"tie on the first stage", first, make([]float32, hi-lo), wte},
		{"no tie on the last stage", last, make([]float32, lhi-llo), nil},
		{"short tie", last, make([]float32, lhi-llo), wte[1:]},
	} {
		if err := tc.m.OuterStep(tc.agg, tc.tied); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", tc.name, err)
		}
	}
	if err := first.OuterStepCarry(make([]float32, hi-lo), nil); !errors.Is(err, ErrConfig) {
		t.Errorf("carry without MarkSent: %v, want ErrConfig", err)
	}
}

// tinyTask is a byte-level GPT of 3 blocks on the embedded play for 2 workers: built afresh for
// every run, its sources start over.
func tinyTask(t *testing.T) trainer.Task {
	t.Helper()
	task, _, err := trainer.BuildTask(trainer.TaskSpec{Model: "gpt:3-32-2-16", DataDir: trainer.EmbeddedData, Workers: 2, Seed: 3, Batch: 4, ValSamples: 32})
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func tinyRun(codec string, overlap int) trainer.RunConfig {
	codec, down, _ := strings.Cut(codec, " down ")
	return trainer.RunConfig{InnerSteps: 3, Rounds: 3, Overlap: overlap, Seed: 3, Codec: codec, DownCodec: down,
		Inner: trainer.AdamWConfig{LR: 3e-3, Warmup: 2, WeightDecay: 0.01, ClipNorm: 0.5}, Parallel: 2}
}

// TestRunDiLoCoMatchesRun: a cohort of stage groups trains to trainer.Run's bits (history,
// bytes, hash and θ): with one stage under any codec (the range is the whole vector, coded with
// the same seeds), and with two and three stages under raw fp32 as long as a micro-batch is the
// whole batch (the stages' gradients are then the whole model's bits). Several micro-batches
// land within float32 rounding.
func TestRunDiLoCoMatchesRun(t *testing.T) {
	for _, tc := range []struct {
		name      string
		codec     string
		overlap   int
		S, M      int
		bitwise   bool
		sameBytes bool
	}{
		{"S1-raw", "", 0, 1, 1, true, true},
		{"S1-q8", "q8", 0, 1, 1, true, true},
		{"S1-topk-overlap", "topk:0.1+q8", 1, 1, 1, true, true},
		{"S1-q8-down-q8", "q8 down q8+zstd", 0, 1, 1, true, true},
		{"S2-raw", "", 0, 2, 1, true, true},
		{"S2-raw-overlap", "", 1, 2, 1, true, true},
		{"S3-raw", "", 0, 3, 1, true, true},
		{"S2-M2-raw", "", 0, 2, 2, false, true},
		{"S2-q8", "q8", 0, 2, 1, false, false},
		{"S2-q8-down-q8", "q8 down q8+zstd", 0, 2, 1, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := trainer.Run(context.Background(), tinyTask(t), tinyRun(tc.codec, tc.overlap))
			if err != nil {
				t.Fatal(err)
			}
			var rounds int
			cfg := RunConfig{RunConfig: tinyRun(tc.codec, tc.overlap), Stages: tc.S, Micro: tc.M}
			cfg.Progress = func(trainer.RoundStats) { rounds++ }
			got, err := RunDiLoCo(context.Background(), tinyTask(t), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if rounds != cfg.Rounds || len(got.History) != cfg.Rounds || len(got.StageStats) != tc.S {
				t.Fatalf("%d progress calls, %d rounds recorded, %d stages described", rounds, len(got.History), len(got.StageStats))
			}
			if got.Parameters != want.Parameters || got.BatchSize != want.BatchSize || got.Codec != want.Codec || got.SamplesPerWorker != want.SamplesPerWorker {
				t.Errorf("summary %+v, trainer.Run's %+v", got.Summary, *want)
			}
			if tc.sameBytes && got.BytesPerWorker != want.BytesPerWorker {
				t.Errorf("sent %d B per worker, trainer.Run %d", got.BytesPerWorker, want.BytesPerWorker)
			}
			t.Logf("val loss %.6f (trainer.Run %.6f), %d B per worker (%d)", got.FinalValLoss, want.FinalValLoss, got.BytesPerWorker, want.BytesPerWorker)
			if !tc.bitwise {
				if d := math.Abs(got.FinalValLoss - want.FinalValLoss); d > 0.01*want.FinalValLoss {
					t.Errorf("val loss %v, trainer.Run %v", got.FinalValLoss, want.FinalValLoss)
				}
				return
			}
			for r := range want.History {
				if got.History[r] != want.History[r] {
					t.Errorf("round %d: %+v, trainer.Run %+v", r+1, got.History[r], want.History[r])
				}
			}
			if got.DownCodec != want.DownCodec || got.DownBytes != want.DownBytes {
				t.Errorf("down %s, %d B; trainer.Run %s, %d B", got.DownCodec, got.DownBytes, want.DownCodec, want.DownBytes)
			}
			if got.ModelHash != want.ModelHash || got.BytesPerWorker != want.BytesPerWorker {
				t.Errorf("hash %s, %d B; trainer.Run %s, %d B", got.ModelHash, got.BytesPerWorker, want.ModelHash, want.BytesPerWorker)
			}
			if i := sameBits(got.Theta, want.Theta); i >= 0 {
				t.Errorf("θ differs from trainer.Run's at %d", i)
			}
		})
	}
}

func TestRunDiLoCoRejects(t *testing.T) {
	base := func() RunConfig { return RunConfig{RunConfig: tinyRun("", 0), Stages: 2} }
	for _, tc := range []struct {
		name string
		edit func(*RunConfig)
		task func(*testing.T) trainer.Task
	}{
		{"more stages than blocks", func(c *RunConfig) { c.Stages = 4 }, tinyTask},
		{"negative stages", func(c *RunConfig) { c.Stages = -1 }, tinyTask},
		{"micro-batches that do not divide the batch", func(c *RunConfig) { c.Micro = 3 }, tinyTask},
		{"negative micro-batches", func(c *RunConfig) { c.Micro = -2 }, tinyTask},
		{"ddp", func(c *RunConfig) { c.Mode = trainer.ModeDDP }, tinyTask},
		{"a whole-vector exchange", func(c *RunConfig) { c.Exchange = fakeExchange{} }, tinyTask},
		{"a sparse stage codec", func(c *RunConfig) { c.StageCodec = compress.MustParse("topk:0.1") }, tinyTask},
		{"an mlp", func(c *RunConfig) {}, func(t *testing.T) trainer.Task {
			task, _, err := trainer.BuildTask(trainer.TaskSpec{Model: "mlp:784-8-10", DataDir: trainer.EmbeddedData, Workers: 1, ValSamples: 8})
			if err != nil {
				t.Fatal(err)
			}
			return task
		}},
	} {
		cfg := base()
		tc.edit(&cfg)
		if _, err := RunDiLoCo(context.Background(), tc.task(t), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", tc.name, err)
		}
	}
	if _, err := RunDiLoCo(context.Background(), trainer.Task{}, base()); err == nil {
		t.Error("no workers: no error")
	}
}

type fakeExchange struct{}

func (fakeExchange) Name() string { return "fake" }
func (fakeExchange) Exchange(_ int, d []float32) ([]float32, int, error) {
	return d, 0, nil
}

// shortSource yields batches one token short.
type shortSource struct{}

func (shortSource) Next(b *nn.Batch, n int) {
	b.Tokens, b.Y = make([]int, n*tinyGPT.Context-1), make([]int, n*tinyGPT.Context-1)
}
func (shortSource) Len() int { return 1 }

// TestGroupFailureStopsEveryStage: a stage that fails (here the first, on a bad batch) stops the
// others waiting for its frames, and the group reports that failure.
func TestGroupFailureStopsEveryStage(t *testing.T) {
	cfg := tinyGPT
	cfg.Batch = 2
	g, err := NewGroup(cfg, 3, Config{}, trainer.OuterConfig{}, shortSource{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := g.InnerSteps(ctx, 2); !errors.Is(err, ErrBatch) || !strings.Contains(err.Error(), "stage 0") {
		t.Fatalf("InnerSteps: %v, want stage 0's ErrBatch", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the group waited for the timeout")
	}
}
