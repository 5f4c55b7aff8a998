package coordinator

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/round"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/transport"
)

// RoundConfig configures how the leader drives training rounds (round.Config documents each field
// and its default).
type RoundConfig = round.Config

// InitSeed is the seed θ_0 of a cohort is initialised with: every coordinator and peer builds the
// proposal's model with it and gets the same parameters.
func InitSeed(proposal uint64) uint64 { return proposal }

// cohortRT is one coordinator's runtime for a cohort: a full replica of θ and the outer momentum
// (every coordinator applies every round, so any of them can serve the model, take over slices
// and, later, validate), and the aggregation state of the slices this node aggregates.
type cohortRT struct {
	id    uint64
	codec compress.Setting
	down  compress.Setting // codec of aggregates sent down (protocol.DownCodec)
	// downlink codes this node's aggregates for the way down, with its error feedback per slice.
	downlink *round.Downlink
	shape    compress.Shape
	outerC   trainer.OuterConfig
	// roundSamples is what the protocol fixes one round of one member to train on: the proposal's
	// H inner steps × the model's batch size. No update weighs more in an aggregate.
	roundSamples uint64

	mu       sync.Mutex
	theta    []float32
	outer    *trainer.Nesterov
	applied  uint32 // rounds applied to theta
	hash     [32]byte
	fetching bool
	aggs     map[[2]int]*sliceAgg // (round, slice)
	// The model blob in the transfer store, for the round it was made at.
	blobRoot  transport.Hash
	blobRound uint32
	// Scoring: the validator (nil if this node cannot validate: valErr says why), the aggregate
	// that led to each recent θ (by its hash: the previous global step of the round starting
	// there), and whether the leader is scoring a round now.
	val     *validator
	valErr  error
	deltaTo map[[32]byte][]float32
	deltaQ  [][32]byte
	scoring bool
	// unmeasured are the recent θ the replica held while the validator was still loading (θ_0
	// first), measured once it is ready: a validator that loads slowly still scores those rounds.
	unmeasured []heldTheta
	// The leader's memory for round.View: when it last checked the open round's aggregators, how
	// many checks in a row each failed, and the round it last asked to extend.
	lastCheck time.Time
	suspects  map[string]int
	extended  uint32
}

type heldTheta struct {
	theta []float32
	hash  [32]byte
}

// measure has the validator measure θ (whose hash is h), or keeps a copy until it has loaded
// (rt.mu held).
func (rt *cohortRT) measure(theta []float32, h [32]byte) {
	switch {
	case rt.val != nil:
		rt.val.measure(theta, h)
	case rt.valErr == nil:
		rt.unmeasured = append(rt.unmeasured, heldTheta{append([]float32(nil), theta...), h})
		if len(rt.unmeasured) > keepStates {
			rt.unmeasured = rt.unmeasured[1:]
		}
	}
}

// runtime returns (creating on first use) the runtime of cohort c.
func (s *Server) runtime(c consensus.Cohort, p consensus.Proposal) (*cohortRT, error) {
	s.rtMu.Lock()
	defer s.rtMu.Unlock()
	if rt := s.rts[c.ID]; rt != nil {
		return rt, nil
	}
	model, err := trainer.NewModel(p.Model, 0, InitSeed(p.ID))
	if err != nil {
		return nil, fmt.Errorf("cohort %d: %w", c.ID, err)
	}
	setting, err := compress.Parse(codecOf(p))
	if err != nil {
		return nil, fmt.Errorf("cohort %d: %w", c.ID, err)
	}
	oc, err := OuterConfigOf(p)
	if err != nil {
		return nil, fmt.Errorf("cohort %d: %w", c.ID, err)
	}
	theta := append([]float32(nil), model.Params()...)
	outer, err := trainer.NewNesterov(len(theta), oc)
	if err != nil {
		return nil, err
	}
	down, err := compress.Parse(protocol.DownCodec(codecOf(p)))
	if err != nil {
		return nil, err
	}
	shape := trainer.CodecShape(model.Layout())
	rt := &cohortRT{id: c.ID, codec: setting, down: down, downlink: round.NewDownlink(down, shape), shape: shape, outerC: oc,
		roundSamples: uint64(p.Params.InnerSteps) * uint64(model.BatchSize()), theta: theta, outer: outer, hash: protocol.HashParams(theta), aggs: map[[2]int]*sliceAgg{}, deltaTo: map[[32]byte][]float32{}}
	// The validator loads its data and model in the background: rounds need not wait for it.
	rt.measure(rt.theta, rt.hash)
	go func() {
		time.Sleep(s.cfg.Validation.LoadDelay)
		start := time.Now()
		v, err := newValidator(s.cfg.Validation, p)
		if err != nil {
			s.log.Warn("this coordinator cannot validate: rounds it scores pay nobody", "cohort", c.ID, "err", err)
		} else {
			s.log.Info("validator ready", "cohort", c.ID, "samples", v.val.Len(), "took", time.Since(start).Round(time.Millisecond))
		}
		rt.mu.Lock()
		defer rt.mu.Unlock()
		rt.val, rt.valErr = v, err
		// Loading took 1.3–1.9 s in the process end-to-end test on a busy 2-core machine, against
		// a first round of 1.5 s: the θ the replica held meanwhile are measured now.
		for _, m := range rt.unmeasured {
			rt.measure(m.theta, m.hash)
		}
		rt.unmeasured = nil
	}()
	s.rts[c.ID] = rt
	return rt, nil
}

func codecOf(p consensus.Proposal) string {
	if p.Params.Codec == "" {
		return "fp32"
	}
	return p.Params.Codec
}

// OuterConfigOf parses a proposal's outer learning rate and momentum (decimal strings; empty
// means the DiLoCo defaults).
func OuterConfigOf(p consensus.Proposal) (trainer.OuterConfig, error) {
	oc, err := outerConfig(p.Params)
	if err != nil {
		return oc, fmt.Errorf("proposal %d: %w", p.ID, err)
	}
	return oc, nil
}

func outerConfig(h consensus.Hyperparams) (trainer.OuterConfig, error) {
	var oc trainer.OuterConfig
	for _, f := range []struct {
		name, s string
		dst     *float32
	}{{"outer lr", h.OuterLR, &oc.LR}, {"outer momentum", h.OuterMomentum, &oc.Momentum}} {
		if f.s == "" {
			continue
		}
		v, err := strconv.ParseFloat(f.s, 32)
		if err != nil {
			return oc, fmt.Errorf("%s %q: not a decimal number", f.name, f.s)
		}
		if v == 0 && f.dst == &oc.LR {
			// OuterConfig reads a zero learning rate as "the default"; a proposal means zero.
			return oc, fmt.Errorf("outer: learning rate %q must be positive and finite", f.s)
		}
		if v == 0 {
			// Nor can it hold a zero momentum: it would train with the default 0.9.
			return oc, fmt.Errorf("outer: momentum %q: want 0 < μ < 1 (0 would mean the default 0.9)", f.s)
		}
		*f.dst = float32(v)
	}
	return oc, oc.Validate()
}

// ErrorDecayOf parses a proposal's error-feedback decay β (compress.Residual.SetDecay): the
// peers' residuals become β·e + Δ each round. Empty means 1, plain error feedback.
func ErrorDecayOf(p consensus.Proposal) (float32, error) {
	b, err := errorDecay(p.Params)
	if err != nil {
		return 0, fmt.Errorf("proposal %d: %w", p.ID, err)
	}
	return b, nil
}

func errorDecay(h consensus.Hyperparams) (float32, error) {
	if h.ErrorDecay == "" {
		return 1, nil
	}
	v, err := strconv.ParseFloat(h.ErrorDecay, 32)
	if err != nil || !(v > 0 && v <= 1) {
		return 0, fmt.Errorf("error decay %q: want a decimal β with 0 < β ≤ 1", h.ErrorDecay)
	}
	return float32(v), nil
}

// MaxInnerSteps and MaxRounds bound a proposal's H and rounds: far beyond any useful cohort, and
// small enough that H × a batch size and the round numbers never overflow.
const (
	MaxInnerSteps = 1_000_000
	MaxRounds     = 1_000_000
)

// CheckHyperparams reports whether peers can train with a proposal's settings: 1 to MaxInnerSteps
// inner steps, 1 to MaxRounds rounds, a codec that parses, an outer step that validates, an error
// decay in (0, 1]. The consensus state machine checks only sizes, so coordinators check these
// before a proposal reaches the log, and the CLI before it is sent.
func CheckHyperparams(h consensus.Hyperparams) error {
	if h.InnerSteps == 0 || h.InnerSteps > MaxInnerSteps {
		return fmt.Errorf("inner steps H %d: want 1 to %d (with 0 no peer could train)", h.InnerSteps, MaxInnerSteps)
	}
	if h.Rounds == 0 || h.Rounds > MaxRounds {
		return fmt.Errorf("rounds %d: want 1 to %d", h.Rounds, MaxRounds)
	}
	if h.Codec != "" {
		if _, err := compress.Parse(h.Codec); err != nil {
			return fmt.Errorf("codec: %w", err)
		}
	}
	if _, err := outerConfig(h); err != nil {
		return err
	}
	_, err := errorDecay(h)
	return err
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
