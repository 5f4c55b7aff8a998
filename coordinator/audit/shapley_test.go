package audit

import (
	"context"
	"errors"
	"math"
	"testing"
)

// additive is a game where each player lowers the loss by its weight (and raises accuracy by a
// tenth of it): every player's Shapley and leave-one-out values are its weight.
func additive(w []float64) ValueFunc {
	return func(_ context.Context, c Coalition) (Value, error) {
		v := Value{Loss: 10}
		for i, x := range w {
			if c.Has(i) {
				v.Loss -= x
				v.Accuracy += x / 10
			}
		}
		return v, nil
	}
}

// symmetric is a game whose value depends only on how many play.
func symmetric(_ context.Context, c Coalition) (Value, error) {
	return Value{Loss: 2 / (1 + float64(c.Size())), Accuracy: 1 - 1/(1+float64(c.Size()))}, nil
}

// withNull is a non-additive game in which player null changes nothing.
func withNull(w []float64, null int) ValueFunc {
	return func(_ context.Context, c Coalition) (Value, error) {
		var s float64
		for i, x := range w {
			if c.Has(i) && i != null {
				s += x
			}
		}
		return Value{Loss: 1 / (1 + s*s)}, nil
	}
}

// gloves: player 0 holds a left glove, 1 and 2 right ones; a pair is worth 1. Shapley: 2/3, 1/6, 1/6.
func gloves(_ context.Context, c Coalition) (Value, error) {
	if c.Has(0) && (c.Has(1) || c.Has(2)) {
		return Value{Loss: 0}, nil
	}
	return Value{Loss: 1}, nil
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestSolveKnownGames(t *testing.T) {
	w := []float64{0.5, 0.25, 0, 1, 0.125}
	for _, c := range []struct {
		name             string
		n                int
		v                ValueFunc
		opt              Options
		shapley, loo, se []float64
		tol              float64
	}{
		{"additive exact", 5, additive(w), Options{}, w, w, make([]float64, 5), 1e-12},
		{"additive sampled", 5, additive(w), Options{Method: MethodSampled, Permutations: 7, Tolerance: -1}, w, w, make([]float64, 5), 1e-12},
		{"symmetric exact", 4, symmetric, Options{}, []float64{0.4, 0.4, 0.4, 0.4}, []float64{0.1, 0.1, 0.1, 0.1}, make([]float64, 4), 1e-12},
		{"null player exact", 4, withNull([]float64{1, 2, 3, 4}, 2), Options{}, nil, nil, nil, 0},
		{"gloves exact", 3, gloves, Options{}, []float64{2.0 / 3, 1.0 / 6, 1.0 / 6}, []float64{1, 0, 0}, make([]float64, 3), 1e-12},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := Solve(context.Background(), c.n, c.v, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			for i := range c.shapley {
				if !near(res.Shapley[i], c.shapley[i], c.tol) || !near(res.LOO[i], c.loo[i], c.tol) || !near(res.ShapleySE[i], c.se[i], c.tol) {
					t.Errorf("player %d: Shapley %v ± %v, LOO %v; want %v ± %v, %v", i, res.Shapley[i], res.ShapleySE[i], res.LOO[i], c.shapley[i], c.se[i], c.loo[i])
				}
			}
			// Efficiency: the values share out exactly what the grand coalition gained.
			if res.Method == MethodExact {
				var sum float64
				for _, x := range res.Shapley {
					sum += x
				}
				if gain := res.Empty.Loss - res.Grand.Loss; !near(sum, gain, 1e-12) {
					t.Errorf("Shapley values sum to %v, the grand coalition gained %v", sum, gain)
				}
				if res.Evaluations != 1<<c.n {
					t.Errorf("%d evaluations, want %d", res.Evaluations, 1<<c.n)
				}
			}
		})
	}
}

func TestNullPlayerGetsNothing(t *testing.T) {
	for _, m := range []Method{MethodExact, MethodSampled} {
		res, err := Solve(context.Background(), 5, withNull([]float64{1, 2, 3, 4, 5}, 3), Options{Method: m, Permutations: 20, Seed: 4})
		if err != nil {
			t.Fatal(err)
		}
		if res.Shapley[3] != 0 || res.ShapleySE[3] != 0 || res.LOO[3] != 0 {
			t.Errorf("%s: null player has Shapley %v ± %v, LOO %v", m, res.Shapley[3], res.ShapleySE[3], res.LOO[3])
		}
		for i, x := range res.Shapley {
			if i != 3 && x <= 0 {
				t.Errorf("%s: player %d has Shapley %v, want > 0", m, i, x)
			}
		}
	}
}

func TestAdditiveAccuracy(t *testing.T) {
	w := []float64{0.3, 0.1, 0.6}
	res, err := Solve(context.Background(), 3, additive(w), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range w {
		if !near(res.ShapleyAccuracy[i], w[i]/10, 1e-12) || !near(res.LOOAccuracy[i], w[i]/10, 1e-12) {
			t.Errorf("player %d: accuracy Shapley %v, LOO %v; want %v", i, res.ShapleyAccuracy[i], res.LOOAccuracy[i], w[i]/10)
		}
	}
}

// A sampled estimate of a 12-player game lands within a few standard errors of the exact values,
// is the same for the same seed, and truncation saves evaluations.
func TestSampledAgainstExact(t *testing.T) {
	const n = 12
	game := func(_ context.Context, c Coalition) (Value, error) {
		var s float64
		for i := 0; i < n; i++ {
			if c.Has(i) {
				s += float64(i + 1)
			}
		}
		return Value{Loss: math.Exp(-s / 10)}, nil // diminishing returns: not additive
	}
	exact, err := Solve(context.Background(), n, game, Options{Method: MethodExact})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	counted := func(ctx context.Context, c Coalition) (Value, error) { calls++; return game(ctx, c) }
	opt := Options{Permutations: 200, Seed: 9} // the default tolerance, 1 % of the gain
	a, err := Solve(context.Background(), n, counted, opt)
	if err != nil {
		t.Fatal(err)
	}
	if a.Method != MethodSampled || calls != a.Evaluations {
		t.Fatalf("method %s, %d calls for %d distinct coalitions", a.Method, calls, a.Evaluations)
	}
	b, err := Solve(context.Background(), n, game, opt)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if a.Shapley[i] != b.Shapley[i] || a.ShapleySE[i] != b.ShapleySE[i] {
			t.Errorf("player %d: %v ± %v, then %v ± %v with the same seed", i, a.Shapley[i], a.ShapleySE[i], b.Shapley[i], b.ShapleySE[i])
		}
		// Truncation biases a little: the tail it drops is below 1 % of the gain.
		if d := math.Abs(a.Shapley[i] - exact.Shapley[i]); d > 4*a.ShapleySE[i]+DefaultTolerance*(a.Empty.Loss-a.Grand.Loss) {
			t.Errorf("player %d: sampled %v ± %v, exact %v", i, a.Shapley[i], a.ShapleySE[i], exact.Shapley[i])
		}
	}
	if a.Truncated == 0 {
		t.Error("no permutation was truncated")
	}
	noTrunc, err := Solve(context.Background(), n, game, Options{Permutations: 200, Seed: 9, Tolerance: -1})
	if err != nil {
		t.Fatal(err)
	}
	if noTrunc.Truncated != 0 || noTrunc.Evaluations <= a.Evaluations {
		t.Errorf("without truncation %d evaluations (%d truncated), with it %d", noTrunc.Evaluations, noTrunc.Truncated, a.Evaluations)
	}
}

func TestProgressCountsEvaluations(t *testing.T) {
	var last Progress
	calls := 0
	_, err := Solve(context.Background(), 3, symmetric, Options{Progress: func(p Progress) { last = p; calls++ }})
	if err != nil {
		t.Fatal(err)
	}
	if last != (Progress{Evaluations: 8, Done: 8, Total: 8}) || calls < 8 {
		t.Errorf("last progress %+v after %d calls", last, calls)
	}
}

func TestSolveRefuses(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		name string
		n    int
		v    ValueFunc
		opt  Options
		want error
	}{
		{"no players", 0, symmetric, Options{}, ErrPlayers},
		{"65 players", 65, symmetric, Options{}, ErrPlayers},
		{"exact beyond MaxExact", MaxExact + 1, symmetric, Options{Method: MethodExact}, ErrPlayers},
		{"unknown method", 3, symmetric, Options{Method: "magic"}, ErrMethod},
		{"negative permutations", 3, symmetric, Options{Method: MethodSampled, Permutations: -1}, ErrOptions},
		{"NaN tolerance", 3, symmetric, Options{Method: MethodSampled, Tolerance: math.NaN()}, ErrOptions},
		{"NaN loss", 3, func(context.Context, Coalition) (Value, error) { return Value{Loss: math.NaN()}, nil }, Options{}, ErrNotANumber},
		{"value error", 3, func(context.Context, Coalition) (Value, error) { return Value{}, boom }, Options{}, boom},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := Solve(context.Background(), c.n, c.v, c.opt); !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Solve(ctx, 3, symmetric, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v", err)
	}
}

// 64 players: sampled, coalitions fill every bit.
func TestSixtyFourPlayers(t *testing.T) {
	w := make([]float64, 64)
	for i := range w {
		w[i] = float64(i)
	}
	res, err := Solve(context.Background(), 64, additive(w), Options{Permutations: 3, Tolerance: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range w {
		if !near(res.Shapley[i], w[i], 1e-9) {
			t.Fatalf("player %d: %v, want %v", i, res.Shapley[i], w[i])
		}
	}
}
