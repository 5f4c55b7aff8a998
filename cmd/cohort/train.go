package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/export"
	"github.com/cohortlab/cohort/trainer/generate"
	"github.com/cohortlab/cohort/trainer/nn"
	"github.com/cohortlab/cohort/trainer/pipeline"
)

func trainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "train in-process workers under the DiLoCo outer loop (or the data-parallel baseline)",
		Description: `Runs K workers in one process, no network: each trains on its own shard of the data.
   --mode diloco: H inner AdamW steps, then the averaged pseudo-gradient drives a Nesterov outer step.
   --mode ddp: synchronous data parallel, gradients averaged every step (same total samples).

   --stages S (gpt, diloco): every worker is a group of S pipeline stages in process, each stage
   keeping θ of its own range, uploading that range's pseudo-gradient and taking its outer step.

   Example:
     cohort train --model mlp --mode diloco --workers 8 --inner-steps 50 --rounds 20 --partition dirichlet:0.5 --seed 1
     cohort train --model gpt:2-64-4-32 --data embedded --workers 4 --rounds 10 --inner-steps 20 --stages 2 --stage-codec q8`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Value: "mlp", Usage: "model: mlp, mlp:784-256-10 (layer widths), charlm or gpt:L-D-NH-T (layers, width, heads, context; bytes), e.g. gpt:4-128-4-64", EnvVars: envVars("model")},
			&cli.StringFlag{Name: "mode", Value: "diloco", Usage: "diloco or ddp", EnvVars: envVars("mode")},
			&cli.IntFlag{Name: "workers", Value: 8, Usage: "number of workers K", EnvVars: envVars("workers")},
			&cli.IntFlag{Name: "inner-steps", Value: 50, Usage: "inner steps H per round", EnvVars: envVars("inner_steps")},
			&cli.IntFlag{Name: "rounds", Value: 20, Usage: "outer rounds", EnvVars: envVars("rounds")},
			&cli.IntFlag{Name: "overlap", Value: 0, Usage: "inner steps τ each worker takes while its pseudo-gradient travels, carried onto the next round (what overlapping communication costs)", EnvVars: envVars("overlap")},
			&cli.IntFlag{Name: "batch", Value: 0, Usage: "batch size per worker (0: the model's default)", EnvVars: envVars("batch")},
			&cli.StringFlag{Name: "codec", Usage: "pseudo-gradient codec with error feedback, e.g. fp16, q8, topk:0.01+q4, lowrank:4+q8 (default: raw fp32)", EnvVars: envVars("codec")},
			&cli.StringFlag{Name: "down-codec", Usage: "codec of the averaged pseudo-gradient on its way back, with the aggregator's error feedback, as a cohort's --down-codec, e.g. q8+zstd or topk:0.03/m+q8 (default: none, the average itself)", EnvVars: envVars("down_codec")},
			&cli.StringFlag{Name: "partition", Value: "iid", Usage: "iid, dirichlet:ALPHA or dirichlet-equal:ALPHA (label skew, images; the second in shards of equal size), natural (by speaker: charlm, gpt); gpt on a text file also contiguous, play or iid:CHUNK", EnvVars: envVars("partition")},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed for initialisation, partition and batches", EnvVars: envVars("seed")},
			&cli.StringFlag{Name: "data", Usage: "Fashion-MNIST directory, or \"embedded\" (default: the system copy if installed, else the embedded subset)", EnvVars: envVars("data")},
			outerLRFlag(), outerMomentumFlag(), errorDecayFlag(),
			&cli.IntFlag{Name: "val-samples", Value: 0, Usage: "validation samples (0: the whole test split)", EnvVars: envVars("val_samples")},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary as the last line", EnvVars: envVars("json")},
			&cli.IntFlag{Name: "stages", Usage: "train every worker as a stage group of S pipeline stages (gpt, diloco; 1 ≤ S ≤ layers), each stage coding and stepping its own range of θ", EnvVars: envVars("stages")},
			&cli.IntFlag{Name: "micro-batches", Value: 1, Usage: "with --stages: micro-batches M a step's batch is cut into (M divides the batch)", EnvVars: envVars("micro_batches")},
			&cli.StringFlag{Name: "stage-codec", Value: "fp32", Usage: "with --stages: activations and their gradients between stages, fp32 or q8 (one scale per row)", EnvVars: envVars("stage_codec")},
			&cli.StringFlag{Name: "schedule", Value: "1f1b", Usage: "with --stages: pipeline schedule, 1f1b or gpipe", EnvVars: envVars("schedule")},
		}, innerFlags()...),
		Action: runTrain,
	}
}

func runTrain(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("train: unexpected argument %q", c.Args().First())
	}
	if err := checkFlags(c, "train", append([]bound{between("workers", 1, maxWorkers), between("inner-steps", 1, maxInnerSteps),
		between("rounds", 1, maxRounds), between("overlap", 0, maxInnerSteps-1), batchBound("batch"),
		between("val-samples", 0, maxValSamples), positive("outer-lr", 100, "no outer step"), momentum("outer-momentum"),
		positive("ef-decay", 1, "no error feedback decay, as 1")}, innerBounds()...)...); err != nil {
		return err
	}
	// The inner AdamW as a cohort's proposal would fix it: the same schedule on the same timeline.
	inner, err := spec.Inner(spec.Fill(withInner(c, consensus.Hyperparams{Rounds: uint32(c.Int("rounds")), InnerSteps: uint32(c.Int("inner-steps"))})))
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	spec := trainer.TaskSpec{
		Model:      c.String("model"),
		Workers:    c.Int("workers"),
		Partition:  c.String("partition"),
		Seed:       c.Uint64("seed"),
		DataDir:    c.String("data"),
		Batch:      c.Int("batch"),
		ValSamples: c.Int("val-samples"),
	}
	out := c.App.Writer
	jsonOut := c.Bool("json")
	cfg := trainer.RunConfig{
		Mode:       trainer.Mode(c.String("mode")),
		InnerSteps: c.Int("inner-steps"),
		Overlap:    c.Int("overlap"),
		Rounds:     c.Int("rounds"),
		Codec:      c.String("codec"),
		DownCodec:  c.String("down-codec"),
		ErrorDecay: float32(c.Float64("ef-decay")),
		Seed:       spec.Seed,
		Inner:      inner,
		Outer:      trainer.OuterConfig{LR: float32(c.Float64("outer-lr")), Momentum: float32(c.Float64("outer-momentum"))},
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	// The settings are checked before the data is loaded: a bad flag is an error at once.
	pcfg, err := stageConfig(c, spec)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	task, info, err := trainer.BuildTask(spec)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	slog.Info("training", "model", spec.Model, "mode", cfg.Mode, "workers", spec.Workers, "data", info.Source,
		"train_samples", info.TrainSamples, "val_samples", info.ValSamples, "partition", info.Partition, "seed", spec.Seed,
		"shard_sizes", info.ShardSizes, "stages", c.Int("stages"))
	cfg.Progress = func(r trainer.RoundStats) {
		eta := time.Duration(0)
		if r.Round > 0 {
			eta = r.Elapsed / time.Duration(r.Round) * time.Duration(r.Rounds-r.Round)
		}
		acc := ""
		if task.Classifier {
			acc = fmt.Sprintf("  val_acc %5.1f%%", 100*r.ValAccuracy)
		} else {
			acc = fmt.Sprintf("  next-char acc %5.1f%%", 100*r.ValAccuracy)
		}
		fmt.Fprintf(out, "round %3d/%d  train_loss %.4f  val_loss %.4f%s  sent/worker %s  elapsed %s  eta %s\n",
			r.Round, r.Rounds, r.TrainLoss, r.ValLoss, acc, humanBytes(r.BytesPerWorker),
			r.Elapsed.Round(time.Second), eta.Round(time.Second))
	}
	var sum *trainer.Summary
	var stages *pipeline.Summary
	if pcfg != nil {
		pcfg.RunConfig = cfg
		if stages, err = pipeline.RunDiLoCo(c.Context, task, *pcfg); err != nil {
			return fmt.Errorf("train: %w", err)
		}
		sum = &stages.Summary
	} else if sum, err = trainer.Run(c.Context, task, cfg); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if jsonOut {
		// The process's peak resident memory rides along (a whole-model process against a
		// stage's, cohort stage --json).
		var v any = struct {
			*trainer.Summary
			PeakRSSBytes int64 `json:"peak_rss_bytes"`
		}{sum, peakRSS()}
		if stages != nil {
			v = struct {
				*pipeline.Summary
				PeakRSSBytes int64 `json:"peak_rss_bytes"`
			}{stages, peakRSS()}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, string(b))
		return nil
	}
	fmt.Fprintf(out, "\n%s %s, %d workers, H=%d, %d rounds, %d params: val_loss %.4f",
		sum.Mode, sum.Model, sum.Workers, sum.InnerSteps, sum.Rounds, sum.Parameters, sum.FinalValLoss)
	if sum.FinalValAccuracy != nil {
		fmt.Fprintf(out, ", val_acc %.2f%%", 100**sum.FinalValAccuracy)
	}
	fmt.Fprintf(out, ", sent %s per worker (%s), %.0f samples/s, %.1fs\n",
		humanBytes(sum.BytesPerWorker), sum.Codec, sum.SamplesPerSecond, sum.WallSeconds)
	if sum.DownCodec != "" {
		fmt.Fprintf(out, "aggregates sent down %s to each worker (%s)\n", humanBytes(sum.DownBytes), sum.DownCodec)
	}
	if stages != nil {
		printStages(out, stages)
	}
	if strings.HasPrefix(sum.Model, "gpt:") {
		sample, err := sampleText(sum.Model, sum.Theta, spec.Seed)
		if err != nil {
			return fmt.Errorf("train: sampling the trained model: %w", err)
		}
		fmt.Fprintf(out, "\nsample (200 bytes, temperature 0.8):\n%s\n", sample)
	}
	return nil
}

// stageConfig reads the stage group flags: nil without --stages (whole-model workers).
func stageConfig(c *cli.Context, spec trainer.TaskSpec) (*pipeline.RunConfig, error) {
	if !c.IsSet("stages") {
		for _, f := range []string{"micro-batches", "stage-codec", "schedule"} {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s applies to stage groups: give --stages", f)
			}
		}
		return nil, nil
	}
	S, M := c.Int("stages"), c.Int("micro-batches")
	if !strings.HasPrefix(spec.Model, "gpt:") {
		return nil, fmt.Errorf("--stages: stage groups train gpt models, not %s", spec.Model)
	}
	if mode := c.String("mode"); mode != string(trainer.ModeDiLoCo) {
		return nil, fmt.Errorf("--stages: stage groups train under --mode diloco, not %s", mode)
	}
	gcfg, err := nn.ParseGPTName(spec.Model)
	if err != nil {
		return nil, err
	}
	if S < 1 || S > gcfg.Layers {
		return nil, fmt.Errorf("--stages %d: want 1 to %d (%s has %d blocks)", S, gcfg.Layers, spec.Model, gcfg.Layers)
	}
	batch := spec.Batch
	if batch == 0 {
		m, err := trainer.NewModel(spec.Model, 0, spec.Seed)
		if err != nil {
			return nil, err
		}
		batch = m.BatchSize()
	}
	if M < 1 || batch%M != 0 {
		return nil, fmt.Errorf("--micro-batches %d: want a divisor of the batch of %d sequences", M, batch)
	}
	codec, err := compress.Parse(c.String("stage-codec"))
	if err != nil {
		return nil, fmt.Errorf("--stage-codec: %w", err)
	}
	if codec.Sparsifier != compress.Dense {
		return nil, fmt.Errorf("--stage-codec %s: want a dense setting, fp32 or q8", codec)
	}
	sched, err := pipeline.ParseSchedule(c.String("schedule"))
	if err != nil {
		return nil, fmt.Errorf("--schedule: %w", err)
	}
	return &pipeline.RunConfig{Stages: S, Micro: M, Schedule: sched, StageCodec: codec}, nil
}

// printStages prints what every stage of the groups held, sent and computed.
func printStages(out io.Writer, s *pipeline.Summary) {
	fmt.Fprintf(out, "%d stages, %d micro-batches (%s), activations %s:\n", s.Stages, s.MicroBatches, s.Schedule, s.StageCodec)
	for _, st := range s.StageStats {
		fmt.Fprintf(out, "  stage %d: blocks [%d, %d), θ[%d:%d], %d params (%s with AdamW), per step: forward %s, backward %s, tie %s; busy %.0f%%; uploaded %s\n",
			st.Stage, st.Blocks[0], st.Blocks[1], st.Range[0], st.Range[1], st.Parameters, humanBytes(st.StateBytes),
			humanBytes(int64(st.ActivationBytesPerStep)), humanBytes(int64(st.GradientBytesPerStep)), humanBytes(int64(st.TieBytesPerStep)),
			100*st.Utilisation, humanBytes(st.UploadBytes))
	}
}

// sampleText continues a newline by 200 bytes of the trained GPT (cohort generate's sampler).
func sampleText(spec string, theta []float32, seed uint64) ([]byte, error) {
	layout, err := export.LayoutFor(spec)
	if err != nil {
		return nil, err
	}
	m, err := generate.New(spec, layout, theta)
	if err != nil {
		return nil, err
	}
	return m.Generate([]byte("\n"), generate.Options{Tokens: 200, Temperature: 0.8, Seed: seed})
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
