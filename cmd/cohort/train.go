package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/export"
	"github.com/cohortlab/cohort/trainer/generate"
)

func trainCommand() *cli.Command {
	return &cli.Command{
		Name:  "train",
		Usage: "train in-process workers under the DiLoCo outer loop (or the data-parallel baseline)",
		Description: `Runs K workers in one process, no network: each trains on its own shard of the data.
   --mode diloco: H inner AdamW steps, then the averaged pseudo-gradient drives a Nesterov outer step.
   --mode ddp: synchronous data parallel, gradients averaged every step (same total samples).

   Example:
     cohort train --model mlp --mode diloco --workers 8 --inner-steps 50 --rounds 20 --partition dirichlet:0.5 --seed 1`,
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
			&cli.StringFlag{Name: "partition", Value: "iid", Usage: "iid, dirichlet:ALPHA (label skew, images), natural (by speaker: charlm, gpt); gpt on a text file also contiguous, play or iid:CHUNK", EnvVars: envVars("partition")},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed for initialisation, partition and batches", EnvVars: envVars("seed")},
			&cli.StringFlag{Name: "data", Usage: "Fashion-MNIST directory, or \"embedded\" (default: the system copy if installed, else the embedded subset)", EnvVars: envVars("data")},
			outerLRFlag(), outerMomentumFlag(), errorDecayFlag(),
			&cli.IntFlag{Name: "val-samples", Value: 0, Usage: "validation samples (0: the whole test split)", EnvVars: envVars("val_samples")},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary as the last line", EnvVars: envVars("json")},
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
	task, info, err := trainer.BuildTask(spec)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	slog.Info("training", "model", spec.Model, "mode", cfg.Mode, "workers", spec.Workers, "data", info.Source,
		"train_samples", info.TrainSamples, "val_samples", info.ValSamples, "partition", info.Partition, "seed", spec.Seed,
		"shard_sizes", info.ShardSizes)
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
	sum, err := trainer.Run(c.Context, task, cfg)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if jsonOut {
		b, err := json.Marshal(sum)
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
	if strings.HasPrefix(sum.Model, "gpt:") {
		sample, err := sampleText(sum.Model, sum.Theta, spec.Seed)
		if err != nil {
			return fmt.Errorf("train: sampling the trained model: %w", err)
		}
		fmt.Fprintf(out, "\nsample (200 bytes, temperature 0.8):\n%s\n", sample)
	}
	return nil
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
