package trainer

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/internal/par"
	"github.com/cohortlab/cohort/trainer/nn"
)

// Mode is how the in-process workers synchronise.
type Mode string

const (
	// ModeDiLoCo: H local AdamW steps, then one averaged pseudo-gradient and a Nesterov outer step.
	ModeDiLoCo Mode = "diloco"
	// ModeDDP: synchronous data parallel, gradients averaged every step (the baseline).
	ModeDDP Mode = "ddp"
)

// Task is what a run trains: a model factory, one data source per worker and a validation set.
type Task struct {
	// NewModel builds a model; every call with the same seed must give the same parameters.
	NewModel func(seed uint64) (nn.Model, error)
	// Sources holds one data source per worker.
	Sources []Source
	// Val is the validation set, evaluated at θ_t after every round.
	Val nn.Batch
	// Classifier is true when accuracy is meaningful.
	Classifier bool
	// Tokens per sample (1 for classifiers, the context length for language models).
	TokensPerSample int
}

// RunConfig configures an in-process training run. Zero values mean the defaults shown.
type RunConfig struct {
	Mode       Mode // default diloco
	InnerSteps int  // H, local steps per round (DDP: steps per reporting round); default 50
	// Overlap is τ, the inner steps each worker takes while its pseudo-gradient travels (0 ≤ τ < H):
	// they are carried onto θ_{t+1} (Worker.OuterStepCarry) and count towards the next round's H,
	// so every worker still takes H steps a round. A cohort overlaps communication with compute
	// this way; here it shows what that staleness costs. DiLoCo only.
	Overlap int
	Rounds  int // default 20
	Seed    uint64
	Inner   AdamWConfig
	Outer   OuterConfig
	// Parallel bounds how many workers train at once; default GOMAXPROCS.
	Parallel int
	// Codec names the pseudo-gradient codec (package compress), applied with error feedback by every
	// worker, e.g. "topk:0.01+q4". Empty means raw fp32 with no header (4 bytes per parameter).
	// DiLoCo only.
	Codec string
	// ErrorDecay is the codec's error-feedback decay β (compress.Residual.SetDecay); 0 means none.
	ErrorDecay float32
	// Exchange, if set, replaces Codec: it turns each worker's pseudo-gradient into what the
	// aggregator receives and reports the bytes it took on the wire.
	Exchange Exchanger
	// DownCodec, if set, codes the averaged pseudo-gradient on its way back to the workers, with
	// the aggregator's error feedback (one compress.Residual for the whole vector; a cohort's
	// aggregators keep one per slice), e.g. "q8+zstd" or "topk:0.03/m+q8": what every replica
	// applies is the decoded message. Empty: the average itself. DiLoCo only.
	DownCodec string
	// Progress, if set, is called after every round.
	Progress func(RoundStats)
}

// Exchanger models what crosses the network for one worker's pseudo-gradient.
type Exchanger interface {
	// Name identifies the encoding (e.g. "fp32", "topk:0.01+q4").
	Name() string
	// Exchange returns the delta the aggregator decodes for worker w, and the bytes sent.
	Exchange(w int, delta []float32) (decoded []float32, bytes int, err error)
}

type rawExchange struct{}

func (rawExchange) Name() string { return "fp32" }
func (rawExchange) Exchange(_ int, d []float32) ([]float32, int, error) {
	return d, 4 * len(d), nil
}

// WithDefaults is c with its zero values replaced by the defaults.
func (c RunConfig) WithDefaults() RunConfig { return c.withDefaults() }

func (c RunConfig) withDefaults() RunConfig {
	if c.Mode == "" {
		c.Mode = ModeDiLoCo
	}
	if c.InnerSteps == 0 {
		c.InnerSteps = 50
	}
	if c.Rounds == 0 {
		c.Rounds = 20
	}
	if c.Parallel == 0 {
		c.Parallel = runtime.GOMAXPROCS(0)
	}
	return c
}

// Validate reports a configuration that cannot run.
func (c RunConfig) Validate() error {
	c = c.withDefaults()
	if c.Mode != ModeDiLoCo && c.Mode != ModeDDP {
		return fmt.Errorf("mode %q: want diloco or ddp", c.Mode)
	}
	if c.InnerSteps < 1 || c.Rounds < 1 || c.Parallel < 1 {
		return fmt.Errorf("inner steps %d, rounds %d and parallelism %d must be ≥ 1", c.InnerSteps, c.Rounds, c.Parallel)
	}
	if c.Overlap < 0 || c.Overlap >= c.InnerSteps {
		return fmt.Errorf("overlap %d: want 0 ≤ τ < inner steps (%d)", c.Overlap, c.InnerSteps)
	}
	if c.Mode == ModeDDP && c.Overlap != 0 {
		return fmt.Errorf("overlap applies to diloco only")
	}
	if c.Mode == ModeDDP && (c.Codec != "" || c.Exchange != nil || c.DownCodec != "") {
		return fmt.Errorf("a codec applies to diloco only: ddp exchanges fp32 gradients every step")
	}
	if c.DownCodec != "" {
		if _, err := compress.Parse(c.DownCodec); err != nil {
			return fmt.Errorf("down codec: %w", err)
		}
	}
	if c.ErrorDecay != 0 && !(c.ErrorDecay > 0 && c.ErrorDecay <= 1) {
		return fmt.Errorf("error-feedback decay %v: want 0 < β ≤ 1", c.ErrorDecay)
	}
	if err := c.Inner.Validate(); err != nil {
		return err
	}
	return c.Outer.Validate()
}

// RoundStats is reported after every round.
type RoundStats struct {
	Round, Rounds  int
	TrainLoss      float64
	ValLoss        float64
	ValAccuracy    float64 // NaN-free; 0 for language models unless next-token accuracy is meaningful
	BytesPerWorker int64   // cumulative
	Elapsed        time.Duration
	ModelHash      [32]byte
}

// Summary is the result of a run; its JSON form is what `cohort train --json` prints.
type Summary struct {
	Mode      Mode   `json:"mode"`
	Model     string `json:"model"`
	Codec     string `json:"codec"`
	DownCodec string `json:"down_codec,omitempty"`
	// DownBytes is the coded aggregates' bytes over the run, each sent to every worker (0 without a
	// DownCodec).
	DownBytes        int64         `json:"down_bytes,omitempty"`
	Workers          int           `json:"workers"`
	InnerSteps       int           `json:"inner_steps"`
	Rounds           int           `json:"rounds"`
	BatchSize        int           `json:"batch_size"`
	Parameters       int           `json:"parameters"`
	SamplesPerWorker int           `json:"samples_per_worker"`
	FinalValLoss     float64       `json:"final_val_loss"`
	FinalValAccuracy *float64      `json:"final_val_accuracy,omitempty"`
	BytesPerWorker   int64         `json:"bytes_per_worker"`
	WallSeconds      float64       `json:"wall_seconds"`
	SamplesPerSecond float64       `json:"samples_per_second"`
	ModelHash        string        `json:"model_hash"`
	History          []RoundRecord `json:"history"`
	// Theta is the global model after the last round.
	Theta []float32 `json:"-"`
}

// RoundRecord is one round in Summary.History.
type RoundRecord struct {
	Round          int     `json:"round"`
	TrainLoss      float64 `json:"train_loss"`
	ValLoss        float64 `json:"val_loss"`
	ValAccuracy    float64 `json:"val_accuracy"`
	BytesPerWorker int64   `json:"bytes_per_worker"`
}

// Run trains task with len(task.Sources) in-process workers and returns the summary.
func Run(ctx context.Context, task Task, cfg RunConfig) (*Summary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	k := len(task.Sources)
	if k == 0 {
		return nil, fmt.Errorf("run: no workers")
	}
	evalModel, err := task.NewModel(cfg.Seed)
	if err != nil {
		return nil, fmt.Errorf("run: build model: %w", err)
	}
	if cfg.Exchange == nil {
		l := evalModel.Layout()
		if cfg.Exchange, err = NewExchange(cfg.Codec, CodecShape(l), l.Size(), k, cfg.Seed, cfg.ErrorDecay); err != nil {
			return nil, err
		}
	}
	sum := &Summary{
		Mode: cfg.Mode, Model: evalModel.Name(), Codec: cfg.Exchange.Name(), Workers: k,
		InnerSteps: cfg.InnerSteps, Rounds: cfg.Rounds, BatchSize: evalModel.BatchSize(),
		Parameters: len(evalModel.Params()),
	}
	start := time.Now()
	var loop func(context.Context, Task, RunConfig, nn.Model, *Summary, time.Time) error
	if cfg.Mode == ModeDDP {
		loop = runDDP
	} else {
		loop = runDiLoCo
	}
	if err := loop(ctx, task, cfg, evalModel, sum, start); err != nil {
		return nil, err
	}
	sum.Finish(time.Since(start), task.Classifier)
	return sum, nil
}

// Finish fills in the totals of a run of Workers·Rounds·InnerSteps batches of BatchSize that took
// wall, and the final validation figures from the last round (accuracy for classifiers).
func (s *Summary) Finish(wall time.Duration, classifier bool) {
	s.WallSeconds = wall.Seconds()
	s.SamplesPerWorker = s.Rounds * s.InnerSteps * s.BatchSize
	s.SamplesPerSecond = float64(s.SamplesPerWorker*s.Workers) / s.WallSeconds
	if n := len(s.History); n > 0 {
		last := s.History[n-1]
		s.FinalValLoss = last.ValLoss
		if classifier {
			acc := last.ValAccuracy
			s.FinalValAccuracy = &acc
		}
	}
}

func runDiLoCo(ctx context.Context, task Task, cfg RunConfig, eval nn.Model, sum *Summary, start time.Time) error {
	k := len(task.Sources)
	workers := make([]*Worker, k)
	for i := range workers {
		// Every replica starts from the same θ_0 (same seed); data sources differ.
		m, err := task.NewModel(cfg.Seed)
		if err != nil {
			return fmt.Errorf("run: build model for worker %d: %w", i, err)
		}
		w, err := NewWorker(m, task.Sources[i], WorkerConfig{Inner: cfg.Inner, Outer: cfg.Outer})
		if err != nil {
			return err
		}
		workers[i] = w
	}
	deltas := make([][]float32, k)
	decoded := make([][]float32, k)
	weights := make([]float64, k)
	losses := make([]float64, k)
	var agg []float32
	var bytes int64
	var down *Downlink
	if cfg.DownCodec != "" {
		var err error
		if down, err = NewDownlink(cfg.DownCodec, CodecShape(eval.Layout()), len(eval.Params())); err != nil {
			return err
		}
		sum.DownCodec = down.Setting().String()
	}
	for t := 1; t <= cfg.Rounds; t++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Round 1 starts cold; later rounds already took τ of their steps while the previous
		// pseudo-gradient travelled. The last round does not overlap: nothing follows it.
		steps, carried := cfg.InnerSteps, 0
		if t > 1 {
			steps, carried = cfg.InnerSteps-cfg.Overlap, cfg.Overlap
		}
		overlap := cfg.Overlap
		if t == cfg.Rounds {
			overlap = 0
		}
		err := par.Each(k, cfg.Parallel, func(i int) error {
			st, err := workers[i].InnerSteps(steps)
			if err != nil {
				return fmt.Errorf("round %d worker %d: %w", t, i, err)
			}
			losses[i] = st.MeanLoss
			weights[i] = float64(st.Samples + carried*workers[i].Model().BatchSize())
			deltas[i] = workers[i].PseudoGradient(deltas[i])
			if overlap > 0 {
				workers[i].MarkSent()
				if _, err := workers[i].InnerSteps(overlap); err != nil {
					return fmt.Errorf("round %d worker %d (overlap): %w", t, i, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		var sent int64
		for i := range workers { // fixed order: exchangers may keep per-worker state
			d, n, err := cfg.Exchange.Exchange(i, deltas[i])
			if err != nil {
				return fmt.Errorf("round %d worker %d: exchange: %w", t, i, err)
			}
			decoded[i] = d
			sent += int64(n)
		}
		bytes += sent / int64(k)
		agg, err = Average(agg, decoded, weights)
		if err != nil {
			return fmt.Errorf("round %d: %w", t, err)
		}
		if down != nil {
			n, err := down.Code(agg)
			if err != nil {
				return fmt.Errorf("round %d: down codec: %w", t, err)
			}
			sum.DownBytes += int64(n)
		}
		for _, w := range workers {
			step := w.OuterStep
			if overlap > 0 {
				step = w.OuterStepCarry
			}
			if err := step(agg); err != nil {
				return err
			}
		}
		h0 := ParamsHash(workers[0].Global())
		for i, w := range workers[1:] {
			if ParamsHash(w.Global()) != h0 {
				return fmt.Errorf("round %d: replica %d diverged from replica 0", t, i+1)
			}
		}
		if err := report(task, cfg, eval, workers[0].Global(), mean(losses), t, bytes, h0, sum, start); err != nil {
			return err
		}
	}
	return nil
}

func runDDP(ctx context.Context, task Task, cfg RunConfig, model nn.Model, sum *Summary, start time.Time) error {
	k := len(task.Sources)
	// One model computes every worker's gradient on its own batch; the averaged gradient drives one
	// AdamW step. Each worker would send 4 bytes per parameter per step.
	train, err := task.NewModel(cfg.Seed)
	if err != nil {
		return err
	}
	params := train.Params()
	n := len(params)
	opt, err := NewAdamW(n, cfg.Inner)
	if err != nil {
		return err
	}
	grads := make([][]float32, k)
	for i := range grads {
		grads[i] = make([]float32, n)
	}
	weights := make([]float64, k)
	for i := range weights {
		weights[i] = 1
	}
	var avg []float32
	var batch nn.Batch
	var bytes int64
	bs := train.BatchSize()
	for t := 1; t <= cfg.Rounds; t++ {
		var loss float64
		for s := 0; s < cfg.InnerSteps; s++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			for i, src := range task.Sources {
				src.Next(&batch, bs)
				l, err := train.Grad(batch, grads[i])
				if err != nil {
					return fmt.Errorf("ddp step %d worker %d: %w", s, i, err)
				}
				loss += float64(l)
			}
			if avg, err = Average(avg, grads, weights); err != nil {
				return err
			}
			opt.StepAt(params, avg, (t-1)*cfg.InnerSteps+s)
			bytes += int64(4 * n)
		}
		loss /= float64(cfg.InnerSteps * k)
		if err := report(task, cfg, model, params, loss, t, bytes, ParamsHash(params), sum, start); err != nil {
			return err
		}
	}
	return nil
}

func report(task Task, cfg RunConfig, eval nn.Model, theta []float32, trainLoss float64, t int, bytes int64, hash [32]byte, sum *Summary, start time.Time) error {
	copy(eval.Params(), theta)
	lossSum, correct, count, err := eval.Eval(task.Val)
	if err != nil {
		return fmt.Errorf("round %d: validation: %w", t, err)
	}
	if count == 0 {
		return fmt.Errorf("round %d: empty validation set", t)
	}
	rs := RoundStats{
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

// Record adds round rs, which ended at the global model theta, to the summary's history.
func (s *Summary) Record(rs RoundStats, theta []float32) {
	s.History = append(s.History, RoundRecord{Round: rs.Round, TrainLoss: rs.TrainLoss, ValLoss: rs.ValLoss, ValAccuracy: rs.ValAccuracy, BytesPerWorker: rs.BytesPerWorker})
	s.BytesPerWorker = rs.BytesPerWorker
	s.ModelHash = fmt.Sprintf("%x", rs.ModelHash[:8])
	s.Theta = append(s.Theta[:0], theta...)
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// Downlink codes a run's aggregates for the way down with the aggregator's error feedback.
type Downlink struct {
	setting compress.Setting
	res     *compress.Residual
	dec     *compress.Codec
	msg     []byte
	vals    []float32
}

// NewDownlink returns the downlink of a codec setting for aggregates of n values whose matrices
// are shape (CodecShape of a model's layout, or its Slice for a range coded on its own).
func NewDownlink(setting string, shape compress.Shape, n int) (*Downlink, error) {
	s, err := compress.Parse(setting)
	if err != nil {
		return nil, err
	}
	cfg := compress.Config{Setting: s, Shape: shape}
	enc, err := compress.New(cfg)
	if err != nil {
		return nil, err
	}
	res, err := enc.NewResidual(n)
	if err != nil {
		return nil, err
	}
	dec, err := compress.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Downlink{setting: s, res: res, dec: dec}, nil
}

// Setting is the downlink's codec setting.
func (d *Downlink) Setting() compress.Setting { return d.setting }

// Code replaces agg with what its message decodes to and returns the message's length.
func (d *Downlink) Code(agg []float32) (int, error) {
	var err error
	if d.msg, err = d.res.Encode(d.msg[:0], agg); err != nil {
		return 0, err
	}
	if d.vals, err = d.dec.Decode(d.vals[:0], d.msg); err != nil {
		return 0, err
	}
	copy(agg, d.vals)
	return len(d.msg), nil
}
