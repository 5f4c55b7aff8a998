package round

import (
	"fmt"
	"math"
	"slices"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/trainer"
)

// Aggregate returns the aggregate of a slice's updates and how many of them it averages: the
// updates of members not in excluded, less those longer than drop × the median norm of all
// updates or shorter than the median over drop (scaled up, or (near-)empty: they would only
// shrink everyone's step), each clipped to clip × the median norm, averaged weighted by their
// weights in member-ID order (trainer.Average: every replica gets the same bits). It fails with
// ErrEmpty if no update is left.
func Aggregate(updates map[string]Update, excluded map[string]bool, clip, drop float64) ([]float32, error) {
	ids := make([]string, 0, len(updates))
	for id := range updates {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	norms := make([]float64, len(ids))
	for i, id := range ids {
		norms[i] = Norm(updates[id].Vals)
	}
	if len(ids) == 0 {
		return nil, ErrEmpty
	}
	sorted := slices.Clone(norms)
	slices.Sort(sorted)
	median := sorted[(len(sorted)-1)/2]
	limit := clip * median
	xs := make([][]float32, 0, len(ids))
	ws := make([]float64, 0, len(ids))
	for i, id := range ids {
		u := updates[id]
		if median > 0 && (norms[i] > drop*median || norms[i] < median/drop) {
			continue
		}
		if excluded[id] {
			continue
		}
		x := u.Vals
		if norms[i] > limit && norms[i] > 0 {
			scale := float32(limit / norms[i])
			x = make([]float32, len(u.Vals))
			for j, v := range u.Vals {
				x[j] = v * scale
			}
		}
		xs, ws = append(xs, x), append(ws, float64(u.Weight))
	}
	if len(xs) == 0 {
		return nil, ErrEmpty
	}
	avg, err := trainer.Average(nil, xs, ws)
	if err != nil {
		return nil, fmt.Errorf("round: aggregate: %w", err)
	}
	return avg, nil
}

// Norm is the Euclidean norm of x, summed in float64.
func Norm(x []float32) float64 {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	return math.Sqrt(ss)
}

// Downlink codes aggregates for the way down with the aggregator's error feedback: one
// compress.Residual per slice (by its start), so what a message leaves out of an aggregate is
// sent with a later one. With a sparse down codec (top-k) that is most of each aggregate: the
// message carries its largest values, the residual keeps the rest, and the next round's
// aggregate of the slice is added to it before it is coded.
//
// Every receiver decodes the same message, so what the aggregator keeps back never makes replicas
// disagree; it only delays part of a step. The residual carries over only from one round to the
// next: a slice this node did not code in the round before (it was not its aggregator, the
// slice was aborted or cut differently, the node restarted) starts from a zero residual, and
// what the old one held is lost — the price of a failover, not a divergence. It is the
// aggregator's and not safe for concurrent use.
type Downlink struct {
	setting compress.Setting
	shape   compress.Shape
	res     map[int]*downResidual
}

// downResidual is a slice's error feedback and the round whose aggregate it last coded.
type downResidual struct {
	*compress.Residual
	round uint32
}

// NewDownlink returns a Downlink coding with setting the slices of a model of the given shape.
func NewDownlink(setting compress.Setting, shape compress.Shape) *Downlink {
	return &Downlink{setting: setting, shape: shape, res: map[int]*downResidual{}}
}

// Encode codes round's aggregate of slice [start, start+len(avg)) and keeps what the message
// does not carry for the slice's aggregate of the next round. A slice whose length changed, or
// that this Downlink did not code in the round before, starts from a zero residual; the
// residuals of slices it coded no later than two rounds back are dropped.
func (d *Downlink) Encode(round uint32, start int, avg []float32) ([]byte, error) {
	r := d.res[start]
	if r == nil || len(r.Error()) != len(avg) || r.round+1 != round {
		codec, err := compress.New(compress.Config{Setting: d.setting, Shape: d.shape.Slice(start, start+len(avg)), MaxElements: len(avg)})
		if err != nil {
			return nil, fmt.Errorf("round: down codec: %w", err)
		}
		res, err := codec.NewResidual(len(avg))
		if err != nil {
			return nil, fmt.Errorf("round: down codec: %w", err)
		}
		r = &downResidual{Residual: res}
		d.res[start] = r
	}
	msg, err := r.Encode(nil, avg)
	if err != nil {
		return nil, fmt.Errorf("round: down codec: %w", err)
	}
	r.round = round
	for s, o := range d.res {
		if o.round+1 < round {
			delete(d.res, s)
		}
	}
	return msg, nil
}

// Residual returns the error feedback held for the slice at start (nil if none; aliased, read
// only).
func (d *Downlink) Residual(start int) []float32 {
	if r := d.res[start]; r != nil {
		return r.Error()
	}
	return nil
}
