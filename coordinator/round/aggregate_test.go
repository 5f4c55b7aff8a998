package round

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/trainer"
)

// referenceAggregate is the aggregate written out as its reference loop, without Norm or Downlink:
// Aggregate must give the same bits.
func referenceAggregate(updates map[string]Update, excluded map[string]bool, clip, drop float64) ([]float32, error) {
	ids := make([]string, 0, len(updates))
	for id := range updates {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	norms := make([]float64, len(ids))
	for i, id := range ids {
		var ss float64
		for _, v := range updates[id].Vals {
			ss += float64(v) * float64(v)
		}
		norms[i] = math.Sqrt(ss)
	}
	sorted := append([]float64(nil), norms...)
	sort.Float64s(sorted)
	median := sorted[(len(sorted)-1)/2]
	limit := clip * median
	var xs [][]float32
	var ws []float64
	for i, id := range ids {
		u := updates[id]
		if median > 0 && (norms[i] > drop*median || norms[i] < median/drop) {
			continue
		}
		if excluded[id] {
			continue
		}
		xs, ws = append(xs, u.Vals), append(ws, float64(u.Weight))
		if norms[i] > limit && norms[i] > 0 {
			scale := float32(limit / norms[i])
			c := make([]float32, len(u.Vals))
			for j, v := range u.Vals {
				c[j] = v * scale
			}
			xs[len(xs)-1] = c
		}
	}
	return trainer.Average(nil, xs, ws)
}

func TestAggregateMatchesTheReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		n := 1 + rng.IntN(20)
		members := 1 + rng.IntN(8)
		updates := map[string]Update{}
		excluded := map[string]bool{}
		for m := range members {
			id := fmt.Sprintf("m%02d", m)
			scale := float32(math.Exp(rng.NormFloat64() * 1.5))
			vals := make([]float32, n)
			for i := range vals {
				vals[i] = float32(rng.NormFloat64()) * scale
			}
			if rng.IntN(10) == 0 {
				clear(vals)
			}
			updates[id] = Update{Vals: vals, Weight: 1 + rng.Uint64N(100)}
			if rng.IntN(5) == 0 {
				excluded[id] = true
			}
		}
		clip := 1 + rng.Float64()*3
		drop := clip + rng.Float64()*3
		got, err := Aggregate(updates, excluded, clip, drop)
		want, werr := referenceAggregate(updates, excluded, clip, drop)
		if werr != nil {
			if !errors.Is(err, ErrEmpty) {
				t.Fatalf("trial %d: reference fails (%v), Aggregate gives %v, %v", trial, werr, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("trial %d: Aggregate = %v, %v; reference %v", trial, got, err, want)
		}
	}
}

func TestAggregate(t *testing.T) {
	u := func(w uint64, vals ...float32) Update { return Update{Vals: vals, Weight: w} }
	for _, tc := range []struct {
		name     string
		updates  map[string]Update
		excluded map[string]bool
		want     []float32
		err      error
	}{
		{"weighted mean", map[string]Update{"a": u(1, 1, 0), "b": u(3, 0, 1)}, nil, []float32{0.25, 0.75}, nil},
		{"clipped to 2x the median", map[string]Update{"a": u(1, 1), "b": u(1, 1), "c": u(1, 3)}, nil, []float32{4.0 / 3}, nil},
		{"dropped beyond 4x", map[string]Update{"a": u(1, 1), "b": u(1, 1), "c": u(1, 5)}, nil, []float32{1}, nil},
		{"dropped under a quarter", map[string]Update{"a": u(1, 1), "b": u(1, 1), "c": u(1, 0.2)}, nil, []float32{1}, nil},
		{"all zero: nothing dropped", map[string]Update{"a": u(1, 0), "b": u(1, 0)}, nil, []float32{0}, nil},
		{"excluded", map[string]Update{"a": u(1, 1), "b": u(1, 2)}, map[string]bool{"b": true}, []float32{1}, nil},
		{"no updates", map[string]Update{}, nil, nil, ErrEmpty},
		{"all excluded", map[string]Update{"a": u(1, 1)}, map[string]bool{"a": true}, nil, ErrEmpty},
	} {
		got, err := Aggregate(tc.updates, tc.excluded, 2, 4)
		if !errors.Is(err, tc.err) || !slices.Equal(got, tc.want) {
			t.Errorf("%s: Aggregate = %v, %v; want %v, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}

// TestDownlinkMatchesTheReference: the down-link error feedback gives the bits the coordinator's
// own loop gave (e += avg; msg = C(e); e -= decoded), round after round, for every down codec.
func TestDownlinkMatchesTheReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, name := range []string{"fp32", "q8", "q8+zstd"} {
		setting, err := compress.Parse(name)
		if err != nil {
			t.Fatal(err)
		}
		const start, n = 100, 300
		d := NewDownlink(setting, nil)
		codec, err := compress.New(compress.Config{Setting: setting})
		if err != nil {
			t.Fatal(err)
		}
		e := make([]float32, n)
		for round := range 5 {
			avg := make([]float32, n)
			for i := range avg {
				avg[i] = float32(rng.NormFloat64())
			}
			msg, err := d.Encode(start, avg)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range avg {
				e[i] += v
			}
			want, err := codec.Encode(nil, e)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := codec.Decode(nil, want)
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range dec {
				e[i] -= v
			}
			if !slices.Equal(msg, want) || !slices.Equal(d.Residual(start), e) {
				t.Fatalf("%s round %d: message or residual differ from the reference", name, round)
			}
		}
		// A slice of another length at the same start begins afresh.
		if _, err := d.Encode(start, make([]float32, 10)); err != nil || len(d.Residual(start)) != 10 {
			t.Fatalf("%s: resized slice: %v, residual of %d", name, err, len(d.Residual(start)))
		}
	}
}
