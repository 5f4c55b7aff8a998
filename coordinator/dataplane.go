package coordinator

import (
	"fmt"
	"sync"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/round"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/transport"
)

// RoundConfig configures how the leader drives training rounds (round.Config documents each field
// and its default).
type RoundConfig = round.Config

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
	ts, err := spec.Of(p)
	if err != nil {
		return nil, fmt.Errorf("cohort %d: %w", c.ID, err)
	}
	model, err := trainer.NewModel(p.Model, 0, ts.Seed)
	if err != nil {
		return nil, fmt.Errorf("cohort %d: %w", c.ID, err)
	}
	theta := append([]float32(nil), model.Params()...)
	outer, err := trainer.NewNesterov(len(theta), ts.Outer)
	if err != nil {
		return nil, err
	}
	shape := trainer.CodecShape(model.Layout())
	rt := &cohortRT{id: c.ID, codec: ts.Up, down: ts.Down, downlink: round.NewDownlink(ts.Down, shape), shape: shape, outerC: ts.Outer,
		roundSamples: uint64(ts.InnerSteps) * uint64(model.BatchSize()), theta: theta, outer: outer, hash: protocol.HashParams(theta), aggs: map[[2]int]*sliceAgg{}, deltaTo: map[[32]byte][]float32{}}
	// The validator loads its data and model in the background: rounds need not wait for it.
	rt.measure(rt.theta, rt.hash)
	go func() {
		time.Sleep(s.cfg.Validation.LoadDelay)
		start := time.Now()
		v, err := newValidator(s.cfg.Validation, p)
		if v != nil {
			v.spent = &s.valStats
		}
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
