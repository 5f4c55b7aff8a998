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
	for _, name := range []string{"fp32", "q8", "q8+zstd", "topk:0.1+q8", "topk:0.05/c64+q8+zstd", "topk:0.2"} {
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
			msg, err := d.Encode(uint32(round+1), start, avg)
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
		if _, err := d.Encode(6, start, make([]float32, 10)); err != nil || len(d.Residual(start)) != 10 {
			t.Fatalf("%s: resized slice: %v, residual of %d", name, err, len(d.Residual(start)))
		}
	}
}

// TestSparseDownlinkLosesNothing: with a top-k down codec each message carries a small part of
// its aggregate, and error feedback sends the rest later: the decoded messages so far plus the
// residual are the aggregates so far (exactly, for top-k of fp32), and every value that an
// aggregate moved reaches the receivers within a few rounds.
func TestSparseDownlinkLosesNothing(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	setting := compress.MustParse("topk:0.05/c100")
	const start, n, rounds = 0, 1000, 40
	d := NewDownlink(setting, nil)
	codec, err := compress.New(compress.Config{Setting: setting})
	if err != nil {
		t.Fatal(err)
	}
	sumAvg, sumSent := make([]float64, n), make([]float64, n)
	for round := uint32(1); round <= rounds; round++ {
		avg := make([]float32, n)
		for i := range avg {
			avg[i] = float32(rng.NormFloat64())
		}
		msg, err := d.Encode(round, start, avg)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := codec.Decode(nil, msg)
		if err != nil {
			t.Fatal(err)
		}
		nonzero := 0
		for i := range avg {
			sumAvg[i] += float64(avg[i])
			sumSent[i] += float64(dec[i])
			if dec[i] != 0 {
				nonzero++
			}
		}
		if nonzero != n/20 {
			t.Fatalf("round %d: %d values sent, want %d", round, nonzero, n/20)
		}
		for i, e := range d.Residual(start) {
			if diff := sumAvg[i] - sumSent[i] - float64(e); math.Abs(diff) > 1e-3 {
				t.Fatalf("round %d value %d: aggregates %g, sent %g, residual %g", round, i, sumAvg[i], sumSent[i], e)
			}
		}
	}
}

// TestDownlinkResidualCarriesOnlyToTheNextRound: a slice's residual is added to the aggregate of
// the round after the one it was left by; a slice this node did not code in the round before (a
// failover moved it here, or back) starts afresh, and a residual left behind is dropped.
func TestDownlinkResidualCarriesOnlyToTheNextRound(t *testing.T) {
	setting := compress.MustParse("topk:0.5")
	codec, err := compress.New(compress.Config{Setting: setting})
	if err != nil {
		t.Fatal(err)
	}
	decode := func(msg []byte) []float32 {
		t.Helper()
		v, err := codec.Decode(nil, msg)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	d := NewDownlink(setting, nil)
	for _, step := range []struct {
		round    uint32
		start    int
		avg      []float32
		sent     []float32
		residual []float32
	}{
		{1, 0, []float32{4, 1, -3, 2}, []float32{4, 0, -3, 0}, []float32{0, 1, 0, 2}},
		// The next round: last round's residual is added first.
		{2, 0, []float32{0, 1, 0, 0}, []float32{0, 2, 0, 2}, []float32{0, 0, 0, 0}},
		{3, 0, []float32{1, 0, 0, 0.5}, []float32{1, 0, 0, 0.5}, []float32{0, 0, 0, 0}},
		{4, 0, []float32{0, 3, 1, 0}, []float32{0, 3, 1, 0}, []float32{0, 0, 0, 0}},
		{5, 0, []float32{2, 0, 0, 1}, []float32{2, 0, 0, 1}, []float32{0, 0, 0, 0}},
		{6, 0, []float32{5, 0, 0, 1}, []float32{5, 0, 0, 1}, []float32{0, 0, 0, 0}},
		{7, 0, []float32{1, 2, 3, 0}, []float32{0, 2, 3, 0}, []float32{1, 0, 0, 0}},
		// Round 8 was aggregated elsewhere: round 9 does not get round 7's residual.
		{9, 0, []float32{0, 0, 1, 2}, []float32{0, 0, 1, 2}, []float32{0, 0, 0, 0}},
	} {
		got := decode(mustEncode(t, d, step.round, step.start, step.avg))
		if !slices.Equal(got, step.sent) || !slices.Equal(d.Residual(step.start), step.residual) {
			t.Fatalf("round %d: sent %v residual %v, want %v and %v", step.round, got, d.Residual(step.start), step.sent, step.residual)
		}
	}
	// Two slices on one node keep apart; one left behind for two rounds is dropped.
	mustEncode(t, d, 10, 0, []float32{1, 2, 3, 4})
	mustEncode(t, d, 10, 4, []float32{4, 3, 2, 1})
	if !slices.Equal(d.Residual(0), []float32{1, 2, 0, 0}) || !slices.Equal(d.Residual(4), []float32{0, 0, 2, 1}) {
		t.Fatalf("two slices: residuals %v and %v", d.Residual(0), d.Residual(4))
	}
	mustEncode(t, d, 11, 0, []float32{0, 0, 0, 0})
	mustEncode(t, d, 12, 0, []float32{0, 0, 0, 0})
	if d.Residual(4) != nil {
		t.Fatalf("the slice at 4, last coded in round 10, still holds %v in round 12", d.Residual(4))
	}
}

func mustEncode(t *testing.T, d *Downlink, round uint32, start int, avg []float32) []byte {
	t.Helper()
	msg, err := d.Encode(round, start, avg)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}
