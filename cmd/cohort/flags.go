package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/attribution"
	"github.com/cohortlab/cohort/spec"
)

// innerFlags are the inner AdamW's flags, defaulting to spec.Defaults: the same for `cohort
// propose`, `cohort simulate` and `cohort train`.
func innerFlags() []cli.Flag {
	return []cli.Flag{
		&cli.Float64Flag{Name: "lr", Value: defaultFloat(spec.Defaults.InnerLR), Usage: "inner AdamW peak learning rate", EnvVars: envVars("lr")},
		&cli.Float64Flag{Name: "weight-decay", Value: defaultFloat(spec.Defaults.WeightDecay), Usage: "inner AdamW decoupled weight decay", EnvVars: envVars("weight_decay")},
		&cli.UintFlag{Name: "warmup", Usage: "inner steps of linear learning-rate warm-up from the first step (0: none)", EnvVars: envVars("warmup")},
		&cli.StringFlag{Name: "lr-schedule", Value: spec.Defaults.Schedule, Usage: "inner learning rate after the warm-up: constant, or cosine (decays to lr/10 by the last step of the last round)", EnvVars: envVars("lr_schedule")},
		&cli.Float64Flag{Name: "clip", Value: defaultFloat(spec.Defaults.ClipNorm), Usage: "clip each inner gradient to this global L2 norm (0: no clipping)", EnvVars: envVars("clip")},
	}
}

// downCodecFlag is the codec of the aggregates sent down, for `cohort propose` and `cohort
// simulate`; spec.Check validates it with the rest of the proposal.
func downCodecFlag() cli.Flag {
	return &cli.StringFlag{Name: "down-codec", Usage: "codec of the aggregates sent down to peers and replicas, coded with the aggregator's error feedback, e.g. topk:0.03/m+q8 (default: q8+zstd for a top-k --codec, q8 for a dense one, fp32 for fp32)", EnvVars: envVars("down_codec")}
}

// innerBounds are innerFlags' bounds.
func innerBounds() []bound {
	return []bound{positive("lr", 10, "the default "+spec.Defaults.InnerLR), between("weight-decay", 0, 10),
		between("warmup", 0, float64(maxRounds)*maxInnerSteps), between("clip", 0, 1e6)}
}

// withInner returns h with the inner AdamW of innerFlags.
func withInner(c *cli.Context, h consensus.Hyperparams) consensus.Hyperparams {
	h.InnerLR, h.WeightDecay, h.ClipNorm = decimal(c.Float64("lr")), decimal(c.Float64("weight-decay")), decimal(c.Float64("clip"))
	h.Warmup, h.Schedule = uint32(c.Uint("warmup")), c.String("lr-schedule")
	return h
}

// bound is the values a numeric flag accepts. The configs the flags fill read a zero as "the
// default" and the consensus commands hold 32-bit fields: a value outside the bound would silently
// mean something else (--rounds 0 twenty rounds, --rounds 4294967297 one), so it is refused.
type bound struct {
	flag string
	ok   func(v float64) bool
	want string
}

// between accepts lo ≤ v ≤ hi.
func between(flag string, lo, hi float64) bound {
	return bound{flag, func(v float64) bool { return v >= lo && v <= hi }, fmt.Sprintf("%g to %g", lo, hi)}
}

// batchBound accepts 0 (the model's default) or 2 to maxBatch.
func batchBound(flag string) bound {
	return bound{flag, func(v float64) bool { return v == 0 || (v >= 2 && v <= maxBatch) },
		fmt.Sprintf("0 (the model's default) or 2 to %d", maxBatch)}
}

// positive accepts 0 < v ≤ hi: a zero would be read as the default.
func positive(flag string, hi float64, zero string) bound {
	return bound{flag, func(v float64) bool { return v > 0 && v <= hi }, fmt.Sprintf("more than 0 and at most %g (0 would mean %s)", hi, zero)}
}

// momentum accepts 0 ≤ v < 1 (an outer momentum: 0 is none, 1 diverges).
func momentum(flag string) bound {
	return bound{flag, func(v float64) bool { return v >= 0 && v < 1 }, "at least 0 (none) and less than 1"}
}

// Limits of the numeric flags: far beyond any useful run, and within the fields that carry them.
const (
	// maxBatch bounds a batch size: far above any model's default, far below what exhausts memory.
	maxBatch      = 4096
	maxRounds     = spec.MaxRounds
	maxInnerSteps = spec.MaxInnerSteps
	maxWorkers    = 1024
	maxValSamples = 10_000_000
)

// checkFlags refuses, naming the flag, the value and what it accepts, the first flag out of its
// bound (NaN included).
func checkFlags(c *cli.Context, cmd string, bounds ...bound) error {
	for _, b := range bounds {
		v, shown, err := flagNumber(c, b.flag)
		if err != nil {
			return fmt.Errorf("%s: %w", cmd, err)
		}
		if math.IsNaN(v) || !b.ok(v) {
			return fmt.Errorf("%s: --%s %s: want %s", cmd, b.flag, shown, b.want)
		}
	}
	return nil
}

// flagNumber reads a numeric flag's value, and how to show it.
func flagNumber(c *cli.Context, name string) (float64, string, error) {
	switch v := c.Value(name).(type) {
	case int:
		return float64(v), fmt.Sprint(v), nil
	case int64:
		return float64(v), fmt.Sprint(v), nil
	case uint:
		return float64(v), fmt.Sprint(v), nil
	case uint64:
		return float64(v), fmt.Sprint(v), nil
	case float64:
		return v, fmt.Sprint(v), nil
	case time.Duration:
		return v.Seconds(), v.String(), nil
	}
	return 0, "", fmt.Errorf("--%s is not a numeric flag", name)
}

// partitionUsage documents --partition for the commands that split the training data.
const partitionUsage = "iid, iid:W1,W2,… (IID shards of relative sizes W1, W2, …, one per peer), dirichlet:ALPHA, dirichlet-equal:ALPHA (the same label skew in shards of equal size) or natural"

// labelNoiseFlag is --label-noise: noisy labels in some shards, for measuring what they are
// worth.
func labelNoiseFlag() cli.Flag {
	return &cli.StringFlag{Name: "label-noise", Usage: "fractions of wrong labels in the shards, F1,F2,… (peer i holds shard i; missing shards have none; image models only)", EnvVars: envVars("label_noise")}
}

// labelNoise parses --label-noise for a split into shards shards: nil when the flag is empty,
// else one fraction per shard (the missing ones 0).
func labelNoise(c *cli.Context, shards int) ([]float64, error) {
	s := strings.TrimSpace(c.String("label-noise"))
	if s == "" {
		return nil, nil
	}
	fs := strings.Split(s, ",")
	if len(fs) > shards {
		return nil, fmt.Errorf("--label-noise %q: %d values for %d shards", s, len(fs), shards)
	}
	out := make([]float64, shards)
	for i, f := range fs {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(x >= 0 && x <= 1) {
			return nil, fmt.Errorf("--label-noise %q: %q is not a fraction in [0,1]", s, f)
		}
		out[i] = x
	}
	return out, nil
}

// traceLog collects the rounds a simulated cohort's leaders scored (the last scoring of a round
// counts) and writes them as JSON lines in round order.
type traceLog struct {
	mu     sync.Mutex
	rounds map[uint32]attribution.Trace
}

func (l *traceLog) add(t attribution.Trace) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rounds == nil {
		l.rounds = map[uint32]attribution.Trace{}
	}
	l.rounds[t.Round] = t
}

func (l *traceLog) write(path string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, r := range slices.Sorted(maps.Keys(l.rounds)) {
		if err := enc.Encode(l.rounds[r]); err != nil {
			return fmt.Errorf("trace of round %d: %w", r, err)
		}
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
