package audit

import (
	"context"
	"errors"
	"math"
	"testing"
)

// Combining runs averages their attributions, gives each the runs' standard error, and says how
// well the runs rank the players alike.
func TestCombineRuns(t *testing.T) {
	bg := context.Background()
	games := [][]float64{{1, 2, 3, 4}, {1.2, 1.8, 3.3, 3.7}, {0.8, 2.2, 2.7, 4.3}}
	var runs []*Result
	for _, w := range games {
		r, err := Solve(bg, 4, additive(w), Options{})
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	got, err := Combine(runs)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{1, 2, 3, 4}
	// The standard errors of the means of {1, 1.2, 0.8}, {2, 1.8, 2.2}, … are 0.2/√3 for the
	// first two players, 0.3/√3 for the last two.
	se := []float64{0.2 / math.Sqrt(3), 0.2 / math.Sqrt(3), 0.3 / math.Sqrt(3), 0.3 / math.Sqrt(3)}
	for i := range want {
		if !near(got.Shapley[i], want[i], 1e-12) || !near(got.LOO[i], want[i], 1e-12) || !near(got.ShapleyAccuracy[i], want[i]/10, 1e-12) {
			t.Errorf("player %d: Shapley %v, LOO %v, accuracy %v; want %v", i, got.Shapley[i], got.LOO[i], got.ShapleyAccuracy[i], want[i])
		}
		if !near(got.ShapleySE[i], se[i], 1e-12) || !near(got.ShapleyAccuracySE[i], se[i]/10, 1e-12) {
			t.Errorf("player %d: standard errors %v, %v; want %v, %v", i, got.ShapleySE[i], got.ShapleyAccuracySE[i], se[i], se[i]/10)
		}
	}
	if got.Repeats != 3 || len(got.RepeatShapley) != 3 || got.Evaluations != 48 || !near(got.RepeatShapley[1][0], 1.2, 1e-12) {
		t.Errorf("repeats %d, %d runs kept, %d evaluations, run 2 %v", got.Repeats, len(got.RepeatShapley), got.Evaluations, got.RepeatShapley[1])
	}
	// Every run ranks the players 1 < 2 < 3 < 4: full agreement in rank, not in size.
	a := got.Agreement
	if a == nil || a.Spearman == nil || *a.Spearman != 1 || a.SpearmanAccuracy == nil || *a.SpearmanAccuracy != 1 || a.L1 <= 0 || !near(a.L1, a.L1Accuracy, 1e-12) {
		t.Errorf("agreement %+v", a)
	}
	// A run that swaps the first two lowers it: pairs (1,2) and (1,3) of three are at 0.8.
	swapped, err := Solve(bg, 4, additive([]float64{2, 1, 3, 4}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err = Combine([]*Result{runs[0], runs[1], swapped})
	if err != nil {
		t.Fatal(err)
	}
	if s := got.Agreement.Spearman; s == nil || !near(*s, (1+0.8+0.8)/3, 1e-12) {
		t.Errorf("agreement with a swapped run: %v", s)
	}
	// One run is itself; no runs, or runs of other games, are refused.
	if one, err := Combine(runs[:1]); err != nil || one != runs[0] {
		t.Errorf("one run: %v, %v", one, err)
	}
	if _, err := Combine(nil); !errors.Is(err, ErrOptions) {
		t.Errorf("no runs: %v", err)
	}
	three, err := Solve(bg, 3, additive([]float64{1, 2, 3}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Combine([]*Result{runs[0], three}); !errors.Is(err, ErrLength) {
		t.Errorf("runs of 4 and 3 players: %v", err)
	}
}

// Repeated retrainings: repeat 1 is Run's result, the others draw other batches, so the values
// differ and the runs' spread is measured; the Shapley values still share out the mean gain.
func TestRunRepeated(t *testing.T) {
	r, err := NewRetrainer(tinyScenario())
	if err != nil {
		t.Fatal(err)
	}
	bg := context.Background()
	once, err := r.Run(bg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []Progress
	res, err := r.RunRepeated(bg, Options{Progress: func(p Progress) { seen = append(seen, p) }}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if res.Repeats != 2 || res.Agreement == nil || len(seen) == 0 || seen[len(seen)-1].Repeat != 2 || seen[0].Repeat != 1 || seen[0].Repeats != 2 {
		t.Fatalf("repeats %d, agreement %v, progress %v", res.Repeats, res.Agreement, seen)
	}
	for i := range once.Shapley {
		if res.RepeatShapley[0][i] != once.Shapley[i] {
			t.Errorf("repeat 1 player %d: %v, Run %v", i, res.RepeatShapley[0][i], once.Shapley[i])
		}
	}
	differs, sum := false, 0.0
	for i := range res.Shapley {
		differs = differs || res.RepeatShapley[1][i] != res.RepeatShapley[0][i]
		sum += res.Shapley[i]
		if res.ShapleySE[i] <= 0 && res.RepeatShapley[1][i] != res.RepeatShapley[0][i] {
			t.Errorf("player %d: runs differ, standard error %v", i, res.ShapleySE[i])
		}
	}
	if !differs {
		t.Errorf("two repeats gave the same Shapley values %v: the batch order did not change", res.RepeatShapley)
	}
	if !near(sum, res.Empty.Loss-res.Grand.Loss, 1e-9) {
		t.Errorf("mean Shapley values sum to %v, the mean gain is %v", sum, res.Empty.Loss-res.Grand.Loss)
	}
	for _, k := range []int{0, MaxRepeats + 1} {
		if _, err := r.RunRepeated(bg, Options{}, k); !errors.Is(err, ErrOptions) {
			t.Errorf("%d repeats: %v", k, err)
		}
	}
}
