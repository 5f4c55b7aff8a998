// Package spec turns a cohort's proposal into the training settings that every peer training for
// it and every coordinator aggregating for it must share: the codec of the updates going up and of
// the aggregates coming down, the outer step, the error-feedback decay, H and the rounds, and the
// seed θ_0 is built from. It holds the one table of default hyperparameters (Defaults): what
// `cohort propose`, `cohort simulate`, `cohort train` and the simulator start from, and what an
// empty field of a recorded proposal means.
//
// The consensus state checks only a proposal's sizes; Check is what coordinators run before a
// proposal reaches the log, and the CLI before it is sent:
//
//	if err := spec.Check(params); err != nil { ... refuse it ... }
//	t, err := spec.Of(proposal) // on every node and peer: the same settings
package spec

import (
	"fmt"
	"strconv"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/trainer"
)

// Defaults is the one table of default hyperparameters: top-3 % sign-coded updates (116× fewer
// bytes than fp32 DiLoCo) with the outer step and error-feedback decay that keep them within a
// point of it, H = 50 inner steps, 20 rounds. An empty field of a proposal means its value here.
var Defaults = consensus.Hyperparams{
	InnerSteps:    50,
	Rounds:        20,
	Codec:         "topk:0.03/m+q1",
	OuterLR:       "1",
	OuterMomentum: "0.8",
	ErrorDecay:    "0.9",
	InnerLR:       "0.001",
	WeightDecay:   "0",
	Schedule:      ScheduleConstant,
	ClipNorm:      "0",
}

// The inner learning-rate schedules a proposal can name (consensus.Hyperparams.Schedule).
const (
	// ScheduleConstant trains at InnerLR throughout (after any warm-up).
	ScheduleConstant = "constant"
	// ScheduleCosine decays InnerLR along a half cosine to InnerLR/10 by the cohort's last step,
	// Rounds × InnerSteps (nanoGPT's schedule).
	ScheduleCosine = "cosine"
)

// MaxInnerSteps and MaxRounds bound a proposal's H and rounds: far beyond any useful cohort, and
// small enough that H × a batch size and the round numbers never overflow.
const (
	MaxInnerSteps = 1_000_000
	MaxRounds     = 1_000_000
)

// Training is what a proposal fixes for everyone who trains or aggregates for its cohort.
type Training struct {
	// Up codes the peers' pseudo-gradients; Down the aggregates (DownCodec).
	Up, Down compress.Setting
	// Outer is the outer Nesterov step every replica applies.
	Outer trainer.OuterConfig
	// ErrorDecay is β: a peer's residual becomes β·e + Δ before each message.
	ErrorDecay float32
	// Inner is the inner AdamW every peer trains with: its learning rate at a step of the
	// cohort's timeline (trainer.Worker.SeekStep) is Inner.LRAt of it, the same for every peer.
	Inner trainer.AdamWConfig
	// InnerSteps is H; Rounds the cohort's outer rounds.
	InnerSteps, Rounds uint32
	// Seed is the seed θ_0 is built with (InitSeed).
	Seed uint64
}

// Of returns the training settings of proposal p; its empty fields mean Defaults'.
func Of(p consensus.Proposal) (Training, error) {
	h := Fill(p.Params)
	t := Training{InnerSteps: h.InnerSteps, Rounds: h.Rounds, Seed: InitSeed(p.ID)}
	var err error
	if t.Up, err = compress.Parse(h.Codec); err != nil {
		return t, fmt.Errorf("proposal %d: codec: %w", p.ID, err)
	}
	if t.Down, err = compress.Parse(DownCodec(h)); err != nil {
		return t, fmt.Errorf("proposal %d: down codec: %w", p.ID, err)
	}
	if t.Outer, err = outerConfig(h); err != nil {
		return t, fmt.Errorf("proposal %d: %w", p.ID, err)
	}
	if t.ErrorDecay, err = errorDecay(h); err != nil {
		return t, fmt.Errorf("proposal %d: %w", p.ID, err)
	}
	if t.Inner, err = Inner(Fill(h)); err != nil {
		return t, fmt.Errorf("proposal %d: %w", p.ID, err)
	}
	return t, nil
}

// Fill returns h with its empty fields set from Defaults.
func Fill(h consensus.Hyperparams) consensus.Hyperparams {
	if h.InnerSteps == 0 {
		h.InnerSteps = Defaults.InnerSteps
	}
	if h.Rounds == 0 {
		h.Rounds = Defaults.Rounds
	}
	for _, f := range []struct {
		dst *string
		def string
	}{
		{&h.Codec, Defaults.Codec}, {&h.OuterLR, Defaults.OuterLR}, {&h.OuterMomentum, Defaults.OuterMomentum}, {&h.ErrorDecay, Defaults.ErrorDecay},
		{&h.InnerLR, Defaults.InnerLR}, {&h.WeightDecay, Defaults.WeightDecay}, {&h.Schedule, Defaults.Schedule}, {&h.ClipNorm, Defaults.ClipNorm},
	} {
		if *f.dst == "" {
			*f.dst = f.def
		}
	}
	return h
}

// DownCodec is the codec of a proposal's aggregates on the way down: its DownCodec, or, when that
// is empty (every proposal recorded before the field existed), protocol.DownCodec of its codec —
// so the cohorts of old logs and snapshots replay with the downlink they ran with. Unlike the
// other fields, an empty down codec is not filled from Defaults.
func DownCodec(h consensus.Hyperparams) string {
	if h.DownCodec != "" {
		return h.DownCodec
	}
	return protocol.DownCodec(Fill(h).Codec)
}

// InitSeed is the seed θ_0 of a cohort is initialised with: every coordinator and peer builds the
// proposal's model with it and gets the same parameters.
func InitSeed(proposal uint64) uint64 { return proposal }

// Check reports whether peers can train with a proposal's settings: 1 to MaxInnerSteps inner
// steps, 1 to MaxRounds rounds, a codec and a down codec (DownCodec) that parse, an outer step that validates (η > 0,
// 0 ≤ μ < 1), an error decay in (0, 1], an inner AdamW that validates (learning rate in (0, 10],
// weight decay in [0, 10], a known schedule, a clip norm ≥ 0, a warm-up no longer than the
// cohort's Rounds × InnerSteps). Empty fields are Defaults' and always pass; zero H or rounds are
// refused (the CLI sends them explicitly).
func Check(h consensus.Hyperparams) error {
	if h.InnerSteps == 0 || h.InnerSteps > MaxInnerSteps {
		return fmt.Errorf("inner steps H %d: want 1 to %d (with 0 no peer could train)", h.InnerSteps, MaxInnerSteps)
	}
	if h.Rounds == 0 || h.Rounds > MaxRounds {
		return fmt.Errorf("rounds %d: want 1 to %d", h.Rounds, MaxRounds)
	}
	h = Fill(h)
	if _, err := compress.Parse(h.Codec); err != nil {
		return fmt.Errorf("codec: %w", err)
	}
	if _, err := compress.Parse(DownCodec(h)); err != nil {
		return fmt.Errorf("down codec: %w", err)
	}
	if _, err := outerConfig(h); err != nil {
		return err
	}
	if _, err := errorDecay(h); err != nil {
		return err
	}
	_, err := Inner(Fill(h))
	return err
}

// Inner parses the inner AdamW of filled hyperparameters (Fill): the cosine schedule decays over
// the cohort's whole timeline, Rounds × InnerSteps steps. `cohort train` builds its optimizer
// with it too, so a run in one process and a cohort train alike.
func Inner(h consensus.Hyperparams) (trainer.AdamWConfig, error) {
	var c trainer.AdamWConfig
	for _, f := range []struct {
		name, v string
		dst     *float32
		lo, hi  float64
		zeroOK  bool
	}{
		{"inner lr", h.InnerLR, &c.LR, 0, 10, false},
		{"weight decay", h.WeightDecay, &c.WeightDecay, 0, 10, true},
		{"clip norm", h.ClipNorm, &c.ClipNorm, 0, 1e6, true},
	} {
		v, err := strconv.ParseFloat(f.v, 32)
		if err != nil || !(v >= f.lo && v <= f.hi) || (v == 0 && !f.zeroOK) {
			want := fmt.Sprintf("a decimal in (%g, %g]", f.lo, f.hi)
			if f.zeroOK {
				want = fmt.Sprintf("a decimal in [%g, %g]", f.lo, f.hi)
			}
			return c, fmt.Errorf("%s %q: want %s", f.name, f.v, want)
		}
		*f.dst = float32(v)
	}
	total := uint64(h.Rounds) * uint64(h.InnerSteps)
	if uint64(h.Warmup) > total {
		return c, fmt.Errorf("warm-up of %d steps is longer than the cohort's %d rounds × %d inner steps", h.Warmup, h.Rounds, h.InnerSteps)
	}
	c.Warmup = int(h.Warmup)
	switch h.Schedule {
	case ScheduleConstant:
	case ScheduleCosine:
		c.DecaySteps = int(total)
	default:
		return c, fmt.Errorf("lr schedule %q: want %s or %s", h.Schedule, ScheduleConstant, ScheduleCosine)
	}
	return c, c.Validate()
}

// outerConfig parses the outer learning rate and momentum of filled hyperparameters.
func outerConfig(h consensus.Hyperparams) (trainer.OuterConfig, error) {
	lr, err := strconv.ParseFloat(h.OuterLR, 32)
	if err != nil {
		return trainer.OuterConfig{}, fmt.Errorf("outer lr %q: not a decimal number", h.OuterLR)
	}
	mu, err := strconv.ParseFloat(h.OuterMomentum, 32)
	if err != nil {
		return trainer.OuterConfig{}, fmt.Errorf("outer momentum %q: not a decimal number", h.OuterMomentum)
	}
	oc := trainer.OuterConfig{LR: float32(lr), Momentum: float32(mu)}
	if oc.LR == 0 {
		// The zero OuterConfig means the trainer's defaults; a proposal's zero rate means zero.
		return oc, fmt.Errorf("outer: learning rate %q must be positive and finite", h.OuterLR)
	}
	return oc, oc.Validate()
}

// errorDecay parses the error-feedback decay β of filled hyperparameters.
func errorDecay(h consensus.Hyperparams) (float32, error) {
	v, err := strconv.ParseFloat(h.ErrorDecay, 32)
	if err != nil || !(v > 0 && v <= 1) {
		return 0, fmt.Errorf("error decay %q: want a decimal β with 0 < β ≤ 1", h.ErrorDecay)
	}
	return float32(v), nil
}

// DecodeAggregate decodes a slice's aggregate message (coded with down and the model's shape sliced
// to [start, end)) into dst, which must have end−start values.
func DecodeAggregate(down compress.Setting, shape compress.Shape, start, end int, msg []byte, dst []float32) error {
	codec, err := compress.New(compress.Config{Setting: down, Shape: shape.Slice(start, end), MaxElements: end - start})
	if err != nil {
		return err
	}
	got, err := codec.Decode(dst[:0:len(dst)], msg)
	if err != nil {
		return fmt.Errorf("aggregate of [%d,%d): %w", start, end, err)
	}
	if len(got) != end-start {
		return fmt.Errorf("aggregate of [%d,%d) has %d values", start, end, len(got))
	}
	return nil
}
