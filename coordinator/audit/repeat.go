package audit

import (
	"fmt"
	"math"
)

// Agreement is how well independent runs of the retrainings agree with each other: the
// resolution of the ground truth. Retraining a coalition is itself noisy (another batch order
// gives another final model), so two runs of the same game rank the contributors differently
// when their values are close; no ledger can be expected to agree with one run better than
// another run does.
type Agreement struct {
	// Spearman and SpearmanAccuracy are the mean Spearman rank correlation between the Shapley
	// vectors (of the loss, of the accuracy) of every pair of runs, pairs with a constant vector
	// left out; nil if none is left.
	Spearman         *float64 `json:"spearman"`
	SpearmanAccuracy *float64 `json:"spearman_accuracy"`
	// L1 and L1Accuracy are the mean L1 distance between the normalised Shapley vectors of every
	// pair of runs (as Compare normalises them).
	L1         float64 `json:"l1"`
	L1Accuracy float64 `json:"l1_accuracy"`
}

// Combine averages several runs of the same game (the same players, method and permutations,
// the retrainings drawn in other batch orders: Retrainer.RunRepeated) into one Result: values,
// leave-one-out and Shapley values are the runs' means; a Shapley value's standard error is the
// runs' standard deviation over √runs (which includes each run's sampling error), and Agreement
// compares the runs pairwise. One run is returned as it is.
func Combine(runs []*Result) (*Result, error) {
	if len(runs) == 0 || len(runs) > MaxRepeats {
		return nil, fmt.Errorf("%w: %d runs to combine, want 1 to %d", ErrOptions, len(runs), MaxRepeats)
	}
	first := runs[0]
	n := first.Players
	for k, r := range runs {
		if r == nil || r.Players != n || r.Method != first.Method || len(r.Shapley) != n || len(r.ShapleyAccuracy) != n ||
			len(r.LOO) != n || len(r.LOOAccuracy) != n || len(r.ShapleySE) != n {
			return nil, fmt.Errorf("%w: run %d is not a run of run 1's game (%d players, method %q)", ErrLength, k+1, n, first.Method)
		}
	}
	if len(runs) == 1 {
		return first, nil
	}
	m := float64(len(runs))
	out := &Result{Players: n, Method: first.Method, Repeats: len(runs),
		LOO: make([]float64, n), LOOAccuracy: make([]float64, n), Shapley: make([]float64, n), ShapleySE: make([]float64, n),
		ShapleyAccuracy: make([]float64, n), ShapleyAccuracySE: make([]float64, n)}
	for _, r := range runs {
		out.Permutations += r.Permutations
		out.Truncated += r.Truncated
		out.Evaluations += r.Evaluations
		out.Empty.Loss += r.Empty.Loss / m
		out.Empty.Accuracy += r.Empty.Accuracy / m
		out.Grand.Loss += r.Grand.Loss / m
		out.Grand.Accuracy += r.Grand.Accuracy / m
		for i := 0; i < n; i++ {
			out.LOO[i] += r.LOO[i] / m
			out.LOOAccuracy[i] += r.LOOAccuracy[i] / m
			out.Shapley[i] += r.Shapley[i] / m
			out.ShapleyAccuracy[i] += r.ShapleyAccuracy[i] / m
		}
		out.RepeatShapley = append(out.RepeatShapley, append([]float64(nil), r.Shapley...))
		out.RepeatShapleyAccuracy = append(out.RepeatShapleyAccuracy, append([]float64(nil), r.ShapleyAccuracy...))
	}
	for i := 0; i < n; i++ {
		var sl, sa float64
		for _, r := range runs {
			sl += (r.Shapley[i] - out.Shapley[i]) * (r.Shapley[i] - out.Shapley[i])
			sa += (r.ShapleyAccuracy[i] - out.ShapleyAccuracy[i]) * (r.ShapleyAccuracy[i] - out.ShapleyAccuracy[i])
		}
		out.ShapleySE[i] = math.Sqrt(sl / (m - 1) / m)
		out.ShapleyAccuracySE[i] = math.Sqrt(sa / (m - 1) / m)
	}
	out.Agreement = agreement(out.RepeatShapley, out.RepeatShapleyAccuracy)
	return out, nil
}

// agreement compares every pair of runs' Shapley vectors.
func agreement(loss, acc [][]float64) *Agreement {
	a := &Agreement{}
	var rl, ra float64
	var nl, na, pairs int
	for i := range loss {
		for j := i + 1; j < len(loss); j++ {
			pairs++
			if r := Spearman(loss[i], loss[j]); !math.IsNaN(r) {
				rl += r
				nl++
			}
			if r := Spearman(acc[i], acc[j]); !math.IsNaN(r) {
				ra += r
				na++
			}
			a.L1 += l1(normalise(loss[i]), normalise(loss[j]))
			a.L1Accuracy += l1(normalise(acc[i]), normalise(acc[j]))
		}
	}
	if pairs > 0 {
		a.L1 /= float64(pairs)
		a.L1Accuracy /= float64(pairs)
	}
	if nl > 0 {
		v := rl / float64(nl)
		a.Spearman = &v
	}
	if na > 0 {
		v := ra / float64(na)
		a.SpearmanAccuracy = &v
	}
	return a
}

func l1(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += math.Abs(a[i] - b[i])
	}
	return s
}
