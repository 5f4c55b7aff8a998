package sim

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/peer"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// BadKinds are the dishonest behaviours a planted peer can have (--bad-peer KIND[:ARG]@NAME).
var BadKinds = []string{"noise", "labelflip", "scale:F", "copy:PEER", "freerider", "zero"}

// BadPeer is a planted dishonest peer: it joins the cohort like anyone, with its own name and
// contributor, after the honest peers.
type BadPeer struct {
	Kind  string  // noise, labelflip, scale, copy, freerider, zero
	Scale float64 // scale: the factor
	Of    string  // copy: the peer whose data it registers and trains on
	Name  string
}

// ParseBadPeer parses "KIND[:ARG][@NAME]"; the name defaults to the kind.
func ParseBadPeer(s string) (BadPeer, error) {
	spec, name, _ := strings.Cut(s, "@")
	kind, arg, hasArg := strings.Cut(spec, ":")
	b := BadPeer{Kind: kind, Name: name}
	if b.Name == "" {
		b.Name = kind
	}
	bad := func(why string) (BadPeer, error) {
		return BadPeer{}, fmt.Errorf("bad-peer %q: %s (kinds: %s)", s, why, strings.Join(BadKinds, ", "))
	}
	switch kind {
	case "noise", "labelflip", "freerider", "zero":
		if hasArg {
			return bad(kind + " takes no argument")
		}
	case "scale":
		f, err := strconv.ParseFloat(arg, 64)
		if err != nil || !(f > 0) || math.IsInf(f, 0) {
			return bad("want scale:FACTOR with a positive factor")
		}
		b.Scale = f
	case "copy":
		if arg == "" {
			return bad("want copy:PEER, the peer whose data it copies")
		}
		b.Of = arg
	default:
		return bad("unknown kind")
	}
	return b, nil
}

// tamper returns the peer's update rule, or nil for the kinds that cheat with data instead. prev is
// the aggregate applied in the previous round the peer took part in (nil before the first).
func (b BadPeer) tamper(seed uint64) func(round uint32, delta, prev []float32) []float32 {
	h := fnv.New64a()
	h.Write([]byte(b.Name))
	rngFor := func(round uint32) *rand.Rand { return rand.New(rand.NewPCG(seed^h.Sum64(), uint64(round))) }
	switch b.Kind {
	case "noise": // a Gaussian update as long as an honest one
		return func(round uint32, delta, _ []float32) []float32 {
			return gaussian(rngFor(round), len(delta), trainer.GradNorm(delta))
		}
	case "scale":
		return func(_ uint32, delta, _ []float32) []float32 {
			out := make([]float32, len(delta))
			for i, d := range delta {
				out[i] = float32(float64(d) * b.Scale)
			}
			return out
		}
	case "freerider": // replays the previous global step, plus a little noise
		return func(round uint32, delta, prev []float32) []float32 {
			if prev == nil {
				return gaussian(rngFor(round), len(delta), 0.01*trainer.GradNorm(delta))
			}
			out := gaussian(rngFor(round), len(prev), 0.1*trainer.GradNorm(prev))
			for i, p := range prev {
				out[i] += p
			}
			return out
		}
	case "zero":
		return func(_ uint32, delta, _ []float32) []float32 { return make([]float32, len(delta)) }
	}
	return nil
}

func gaussian(rng *rand.Rand, n int, length float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(rng.NormFloat64())
	}
	if l := trainer.GradNorm(out); l > 0 {
		f := float32(length / l)
		for i := range out {
			out[i] *= f
		}
	}
	return out
}

// flipSource trains on flipped labels: class y becomes classes−1−y.
type flipSource struct {
	trainer.Source
	classes int
}

func (f flipSource) Next(b *nn.Batch, n int) {
	f.Source.Next(b, n)
	for i, y := range b.Y {
		b.Y[i] = f.classes - 1 - y
	}
}

// tampered is a planted peer's model side: it trains like any peer, and rule replaces each
// round's pseudo-gradient before the peer encodes it.
type tampered struct {
	peer.Worker
	rule func(round uint32, delta, prev []float32) []float32
	prev []float32 // the aggregate applied last
}

func (t *tampered) Update(round uint32) []float32 {
	return t.rule(round, t.Worker.Update(round), t.prev)
}

func (t *tampered) OuterStep(agg []float32) error {
	if err := t.Worker.OuterStep(agg); err != nil {
		return err
	}
	t.prev = append(t.prev[:0], agg...)
	return nil
}

func (t *tampered) OuterStepCarry(agg []float32) error {
	if err := t.Worker.OuterStepCarry(agg); err != nil {
		return err
	}
	t.prev = append(t.prev[:0], agg...)
	return nil
}

// late is a straggler's link to the coordinators: every upload waits until just past its round's
// upload deadline, so it is refused; the peer earns nothing and still follows the model.
type late struct{ peer.Coordinators }

func (l late) Upload(ctx context.Context, aggregator string, u protocol.Upload, payload []byte) (protocol.AggregateReply, []byte, bool, error) {
	l.wait(ctx, u.Cohort, u.Round)
	return l.Coordinators.Upload(ctx, aggregator, u, payload)
}

// wait waits until just past the round's upload deadline as the round records it then — a new
// leader may have moved it (consensus.Reassign), and the aggregators follow it.
func (l late) wait(ctx context.Context, cohort uint64, round uint32) {
	r, err := l.Round(ctx, cohort, round)
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		select {
		case <-time.After(time.Until(time.UnixMilli(protocol.UploadDeadline(r.OpenedAt, r.Deadline)).Add(500 * time.Millisecond))):
		case <-ctx.Done():
		}
		x, err := l.Round(ctx, cohort, round)
		if err != nil || x.Status != consensus.RoundOpen || x.Deadline == r.Deadline {
			break
		}
		r = x
	}
}
