package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/internal/par"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// RunConfig configures RunDiLoCo: trainer.Run's configuration (DiLoCo only, Exchange unset: the
// pseudo-gradient of each stage's range is coded with Codec on its own, and its aggregate with
// DownCodec) and the groups' shape.
type RunConfig struct {
	trainer.RunConfig
	// Stages is S, the stages of every worker's group (1 ≤ S ≤ the GPT's layers); zero means 1.
	Stages int
	// Micro is M, the micro-batches a step's batch is cut into (it must divide the batch); zero
	// means 1.
	Micro int
	// Schedule orders the micro-batches' passes (OneFOneB by default).
	Schedule Schedule
	// StageCodec codes activations and their gradients between stages: fp32 (the zero value) or q8.
	StageCodec compress.Setting
}

func (c RunConfig) withDefaults() RunConfig {
	c.RunConfig = c.RunConfig.WithDefaults()
	if c.Stages == 0 {
		c.Stages = 1
	}
	if c.Micro == 0 {
		c.Micro = 1
	}
	return c
}

// Validate reports a configuration that cannot run (the model's fit is checked by RunDiLoCo).
func (c RunConfig) Validate() error {
	if err := c.RunConfig.Validate(); err != nil {
		return err
	}
	c = c.withDefaults()
	switch {
	case c.Mode != trainer.ModeDiLoCo:
		return fmt.Errorf("%w: stage groups train under diloco, not %s", ErrConfig, c.Mode)
	case c.Exchange != nil:
		return fmt.Errorf("%w: stage groups code each stage's range with Codec; a whole-vector Exchange does not apply", ErrConfig)
	case c.Stages < 1:
		return fmt.Errorf("%w: %d stages, want ≥ 1", ErrConfig, c.Stages)
	case c.Micro < 1:
		return fmt.Errorf("%w: %d micro-batches, want ≥ 1", ErrConfig, c.Micro)
	}
	if _, err := c.Schedule.Ops(0, 1, 1); err != nil {
		return err
	}
	_, err := NewCodecs(c.StageCodec, 1, 1, 0)
	return err
}

// Summary is the result of RunDiLoCo: trainer.Run's summary (its JSON fields too) and what the
// stages did.
type Summary struct {
	trainer.Summary
	Stages       int    `json:"stages"`
	MicroBatches int    `json:"micro_batches"`
	Schedule     string `json:"schedule"`
	StageCodec   string `json:"stage_codec"`
	// StageStats describes each stage, its traffic averaged over the workers' groups.
	StageStats []StageSummary `json:"stage_stats"`
}

// StageSummary describes stage Stage of the groups.
type StageSummary struct {
	Stage int `json:"stage"`
	// Blocks are the transformer blocks [first, last) the stage holds; Range the range [lo, hi)
	// of the whole vector it owns (the pseudo-gradient it uploads).
	Blocks [2]int `json:"blocks"`
	Range  [2]int `json:"range"`
	// Parameters is the length of its vector (the last stage's copy of wte included); StateBytes
	// that and its AdamW moments (Stage.StateBytes).
	Parameters int   `json:"parameters"`
	StateBytes int64 `json:"state_bytes"`
	// Per inner step: the frame bytes the stage sent forward (activations) and backward
	// (gradients), of the tie, and in all.
	ActivationBytesPerStep float64 `json:"activation_bytes_per_step"`
	GradientBytesPerStep   float64 `json:"gradient_bytes_per_step"`
	TieBytesPerStep        float64 `json:"tie_bytes_per_step"`
	SentBytesPerStep       float64 `json:"sent_bytes_per_step"`
	// Utilisation is the stage's busy time over its steps' wall time.
	Utilisation float64 `json:"utilisation"`
	// UploadBytes is what each worker's stage sent of its range's pseudo-gradients (cumulative,
	// mean over the workers).
	UploadBytes int64 `json:"upload_bytes"`
}

// rangeSeed seeds the codecs of stage s's range: stage 0 takes the run's seed, so one stage codes
// exactly as trainer.Run's whole-model workers do.
func rangeSeed(seed uint64, s int) uint64 { return seed ^ uint64(s)*0x9E3779B97F4A7C15 }

// RunDiLoCo trains task (a GPT's) with len(task.Sources) in-process workers, as trainer.Run does
// under DiLoCo, each worker a Group of cfg.Stages stages: the same θ_0, the same batches of the
// same source per worker, the same weights, and the outer step per stage's range. Each stage's
// pseudo-gradient is coded with cfg.Codec and error feedback over its range on its own (the
// range's shape sliced from the whole model's). The validation loss of every round is the whole
// model's, assembled from the ranges; every worker's assembled θ_{t+1} must be the same bits.
//
// With one stage and one micro-batch it computes trainer.Run's bits; with several stages and one
// micro-batch too, as long as the stages' gradients are the whole model's bits (what the stage
// tests check). Several micro-batches sum their gradients in another order (within float32
// rounding).
func RunDiLoCo(ctx context.Context, task trainer.Task, cfg RunConfig) (*Summary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	K := len(task.Sources)
	if K == 0 {
		return nil, fmt.Errorf("%w: no workers", ErrConfig)
	}
	eval, err := task.NewModel(cfg.Seed)
	if err != nil {
		return nil, fmt.Errorf("run: build model: %w", err)
	}
	gpt, ok := eval.(*nn.GPT)
	if !ok {
		return nil, fmt.Errorf("%w: stage groups train GPTs, not %s", ErrConfig, eval.Name())
	}
	mcfg := gpt.Config()
	if cfg.Stages > mcfg.Layers {
		return nil, fmt.Errorf("%w: %d stages for %s's %d blocks, want 1 ≤ stages ≤ blocks", ErrConfig, cfg.Stages, eval.Name(), mcfg.Layers)
	}
	pc := Config{Micro: cfg.Micro, Schedule: cfg.Schedule, AdamW: cfg.Inner, Codec: cfg.StageCodec}
	groups := make([]*Group, K)
	for i := range groups {
		if groups[i], err = NewGroup(mcfg, cfg.Stages, pc, cfg.Outer, task.Sources[i]); err != nil {
			return nil, fmt.Errorf("run: group of worker %d: %w", i, err)
		}
	}
	S := cfg.Stages
	shape := trainer.CodecShape(eval.Layout())
	exch := make([]trainer.Exchanger, S)
	var down []*trainer.Downlink // per range, as a cohort's aggregators keep one per slice
	for s, m := range groups[0].Members() {
		lo, hi := m.Range()
		if exch[s], err = trainer.NewExchange(cfg.Codec, shape.Slice(lo, hi), hi-lo, K, rangeSeed(cfg.Seed, s), cfg.ErrorDecay); err != nil {
			return nil, err
		}
		if cfg.DownCodec != "" {
			d, err := trainer.NewDownlink(cfg.DownCodec, shape.Slice(lo, hi), hi-lo)
			if err != nil {
				return nil, fmt.Errorf("down codec: %w", err)
			}
			down = append(down, d)
		}
	}
	sum := &Summary{
		Summary: trainer.Summary{
			Mode: trainer.ModeDiLoCo, Model: eval.Name(), Codec: exch[0].Name(), Workers: K,
			InnerSteps: cfg.InnerSteps, Rounds: cfg.Rounds, BatchSize: eval.BatchSize(), Parameters: len(eval.Params()),
		},
		Stages: S, MicroBatches: cfg.Micro, Schedule: cfg.Schedule.String(), StageCodec: cfg.StageCodec.String(),
	}
	if down != nil {
		sum.DownCodec = down[0].Setting().String()
	}
	start := time.Now()
	deltas := make([][][]float32, K) // [worker][stage]
	for i := range deltas {
		deltas[i] = make([][]float32, S)
	}
	decoded := make([][][]float32, S) // [stage][worker]
	for s := range decoded {
		decoded[s] = make([][]float32, K)
	}
	aggs := make([][]float32, S)
	weights := make([]float64, K)
	losses := make([]float64, K)
	uploads := make([]int64, S)
	var bytes int64
	for t := 1; t <= cfg.Rounds; t++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// As trainer.Run: later rounds already took τ of their steps while the previous
		// pseudo-gradient travelled; the last round does not overlap.
		steps, carried := cfg.InnerSteps, 0
		if t > 1 {
			steps, carried = cfg.InnerSteps-cfg.Overlap, cfg.Overlap
		}
		overlap := cfg.Overlap
		if t == cfg.Rounds {
			overlap = 0
		}
		err := par.Each(K, cfg.Parallel, func(i int) error {
			g := groups[i]
			st, err := g.InnerSteps(ctx, steps)
			if err != nil {
				return fmt.Errorf("round %d worker %d: %w", t, i, err)
			}
			losses[i] = st.MeanLoss
			weights[i] = float64(st.Samples + carried*g.BatchSize())
			for s, m := range g.Members() {
				deltas[i][s] = m.PseudoGradient(deltas[i][s])
			}
			if overlap > 0 {
				g.MarkSent()
				if _, err := g.InnerSteps(ctx, overlap); err != nil {
					return fmt.Errorf("round %d worker %d (overlap): %w", t, i, err)
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		var sent int64
		for s := range exch {
			for i := range groups { // fixed order: exchangers keep per-worker state
				d, n, err := exch[s].Exchange(i, deltas[i][s])
				if err != nil {
					return nil, fmt.Errorf("round %d worker %d stage %d: exchange: %w", t, i, s, err)
				}
				decoded[s][i] = d
				sent += int64(n)
				uploads[s] += int64(n)
			}
			if aggs[s], err = trainer.Average(aggs[s], decoded[s], weights); err != nil {
				return nil, fmt.Errorf("round %d stage %d: %w", t, s, err)
			}
			if down != nil {
				n, err := down[s].Code(aggs[s])
				if err != nil {
					return nil, fmt.Errorf("round %d stage %d: down codec: %w", t, s, err)
				}
				sum.DownBytes += int64(n)
			}
		}
		bytes += sent / int64(K)
		for i, g := range groups {
			if err := g.OuterStep(aggs, overlap > 0); err != nil {
				return nil, fmt.Errorf("round %d worker %d: %w", t, i, err)
			}
		}
		theta := groups[0].Theta()
		h0 := trainer.ParamsHash(theta)
		for i, g := range groups[1:] {
			if trainer.ParamsHash(g.Theta()) != h0 {
				return nil, fmt.Errorf("round %d: replica %d diverged from replica 0", t, i+1)
			}
		}
		if err := report(task, cfg, eval, theta, mean(losses), t, bytes, h0, sum, start); err != nil {
			return nil, err
		}
	}
	sum.Finish(time.Since(start), task.Classifier)
	for s, m := range groups[0].Members() {
		spec := m.Stage().Model().Spec()
		lo, hi := m.Range()
		ss := StageSummary{Stage: s, Blocks: [2]int{spec.First, spec.Last}, Range: [2]int{lo, hi},
			Parameters: len(m.Stage().Model().Params()), StateBytes: m.Stage().StateBytes(), UploadBytes: uploads[s] / int64(K)}
		var util float64
		for _, g := range groups {
			tr := g.Members()[s].Traffic()
			ss.ActivationBytesPerStep += tr.SentOf(Activation) / float64(K)
			ss.GradientBytesPerStep += tr.SentOf(Gradient) / float64(K)
			ss.TieBytesPerStep += tr.SentOf(Tie) / float64(K)
			ss.SentBytesPerStep += tr.SentPerStep() / float64(K)
			util += tr.Utilisation() / float64(K)
		}
		ss.Utilisation = util
		sum.StageStats = append(sum.StageStats, ss)
	}
	return sum, nil
}

// report evaluates the assembled θ on the validation set and records round t (trainer.Run's
// report).
func report(task trainer.Task, cfg RunConfig, eval nn.Model, theta []float32, trainLoss float64, t int, bytes int64, hash [32]byte, sum *Summary, start time.Time) error {
	copy(eval.Params(), theta)
	lossSum, correct, count, err := eval.Eval(task.Val)
	if err != nil {
		return fmt.Errorf("round %d: validation: %w", t, err)
	}
	if count == 0 {
		return fmt.Errorf("round %d: empty validation set", t)
	}
	rs := trainer.RoundStats{
		Round: t, Rounds: cfg.Rounds, TrainLoss: trainLoss,
		ValLoss: lossSum / float64(count), ValAccuracy: float64(correct) / float64(count),
		BytesPerWorker: bytes, Elapsed: time.Since(start), ModelHash: hash,
	}
	sum.Record(rs, theta)
	if cfg.Progress != nil {
		cfg.Progress(rs)
	}
	return nil
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
