package pipeline

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// textRun trains gpt:2-64-4-32 on the embedded play for steps steps, as 2 stages of 2
// micro-batches of 6 sequences over in-process links with the given activation codec, and
// returns the validation loss per position of the trained parameters, the last 20 steps' mean
// training loss and the bytes stage 0 sent forward and received backward per step.
func textRun(t *testing.T, setting string, steps int) (val, train float64, fwd, bwd int64) {
	t.Helper()
	task, _, err := trainer.BuildTask(trainer.TaskSpec{Model: "gpt:2-64-4-32", DataDir: trainer.EmbeddedData, Workers: 1, Seed: 1, ValSamples: 256})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := nn.ParseGPTName("gpt:2-64-4-32")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Batch, cfg.Seed = 6, 1
	const M = 2
	stages := newStages(t, cfg, 2, Config{Micro: M, Codec: compress.MustParse(setting),
		AdamW: trainer.AdamWConfig{LR: 3e-3, Warmup: 20, ClipNorm: 1}})
	batches := make([]nn.Batch, steps)
	for k := range batches {
		task.Sources[0].Next(&batches[k], M*cfg.Batch)
	}
	stats := runGroup(t, stages, NewLocalGroup(2), batches)
	for _, st := range stats[len(stats)-20:] {
		train += float64(st[0].Loss) / 20
	}
	fwd = stats[0][0].Sent[Activation]
	bwd = stats[0][0].Received[Gradient]
	whole := cfg
	whole.EvalBatch = 32
	m, err := nn.NewGPT(whole)
	if err != nil {
		t.Fatal(err)
	}
	copy(m.Params(), gather(stages))
	lossSum, _, count, err := m.Eval(task.Val)
	if err != nil {
		t.Fatal(err)
	}
	return lossSum / float64(count), train, fwd, bwd
}

// TestQ8ActivationsCost measures what coding activations and their gradients as q8 (one scale
// per row) costs against fp32: the validation loss after 200 steps of gpt:2-64-4-32 on the
// embedded play, 2 stages, 2 micro-batches.
func TestQ8ActivationsCost(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two 200-step runs")
	}
	const steps = 200
	start := time.Now()
	v32, tr32, f32, b32 := textRun(t, "fp32", steps)
	v8, tr8, f8, b8 := textRun(t, "q8", steps)
	t.Logf("fp32: val loss %.4f, train loss (last 20) %.4f, stage 0 → 1 %d B/step, 1 → 0 %d B/step", v32, tr32, f32, b32)
	t.Logf("q8:   val loss %.4f, train loss (last 20) %.4f, stage 0 → 1 %d B/step, 1 → 0 %d B/step", v8, tr8, f8, b8)
	t.Logf("q8 − fp32: val %+.4f (%+.2f %%), bytes ×%.3f; %v", v8-v32, 100*(v8-v32)/v32, float64(f8)/float64(f32), time.Since(start))
	if math.Abs(v8-v32) > 0.02*v32 {
		t.Errorf("q8 activations cost %.4f of validation loss (fp32 %.4f), more than 2 %%", v8-v32, v32)
	}
	if float64(f8) > 0.3*float64(f32) {
		t.Errorf("q8 frames are %d bytes against fp32's %d, want under 30 %%", f8, f32)
	}
}

// TestStageGroupsCost: a cohort whose workers are stage groups (2 stages, 2 micro-batches, q8
// activations) ends within 2 % of the validation loss of the same cohort of whole-model workers
// on the same tokens: gpt:2-64-4-32 on the embedded play, 2 workers, 4 rounds of 10 inner steps.
func TestStageGroupsCost(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two small cohorts")
	}
	task := func() trainer.Task {
		task, _, err := trainer.BuildTask(trainer.TaskSpec{Model: "gpt:2-64-4-32", DataDir: trainer.EmbeddedData, Workers: 2, Seed: 1, ValSamples: 128})
		if err != nil {
			t.Fatal(err)
		}
		return task
	}
	rc := trainer.RunConfig{InnerSteps: 10, Rounds: 4, Seed: 1, Inner: trainer.AdamWConfig{LR: 3e-3, Warmup: 5, ClipNorm: 1}}
	start := time.Now()
	whole, err := trainer.Run(context.Background(), task(), rc)
	if err != nil {
		t.Fatal(err)
	}
	staged, err := RunDiLoCo(context.Background(), task(), RunConfig{RunConfig: rc, Stages: 2, Micro: 2, StageCodec: compress.MustParse("q8")})
	if err != nil {
		t.Fatal(err)
	}
	w, s := whole.FinalValLoss, staged.FinalValLoss
	t.Logf("whole-model workers: val loss %.4f; 2-stage groups (M=2, q8): %.4f (%+.2f %%); %v", w, s, 100*(s-w)/w, time.Since(start))
	if math.Abs(s-w) > 0.02*w {
		t.Errorf("stage groups end at val loss %.4f, whole-model workers at %.4f: more than 2 %% apart", s, w)
	}
}
