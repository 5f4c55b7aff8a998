package audit

import (
	"fmt"
	"math"
	"sort"
)

// Comparison holds a Shapley vector against a share vector, per contributor.
type Comparison struct {
	// Spearman is the rank correlation of the raw Shapley values and the shares (average ranks
	// for ties); NaN when either vector is constant (no ranking to compare).
	Spearman float64 `json:"-"`
	// L1 is Σ|share_i − shapley_i| of the normalised vectors: 0 when the shares are the
	// normalised Shapley values, at most 2.
	L1 float64 `json:"l1"`
	// Shapley is the Shapley values with negatives clamped to 0, normalised to sum 1 (all 0 if
	// no value is positive); Shares the shares normalised to sum 1 (all 0 if none was paid).
	Shapley []float64 `json:"shapley_normalised"`
	Shares  []float64 `json:"shares_normalised"`
	// Diff is Shares − Shapley: positive means over-paid against the retrainings, negative
	// under-paid.
	Diff []float64 `json:"diff"`
}

// Compare compares Shapley values with shares (both per contributor, in the same order).
func Compare(shapley, shares []float64) (Comparison, error) {
	if len(shapley) != len(shares) {
		return Comparison{}, fmt.Errorf("%w: %d Shapley values, %d shares", ErrLength, len(shapley), len(shares))
	}
	for i := range shapley {
		if !finite(shapley[i]) || !finite(shares[i]) || shares[i] < 0 {
			return Comparison{}, fmt.Errorf("%w: contributor %d: Shapley %v, share %v (want finite, share ≥ 0)", ErrNotANumber, i, shapley[i], shares[i])
		}
	}
	c := Comparison{Spearman: Spearman(shapley, shares)}
	c.Shapley = normalise(shapley)
	c.Shares = normalise(shares)
	c.Diff = make([]float64, len(shares))
	for i := range shares {
		c.Diff[i] = c.Shares[i] - c.Shapley[i]
		c.L1 += math.Abs(c.Diff[i])
	}
	return c, nil
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// normalise clamps negatives to 0 and scales to sum 1 (all zeros if nothing is positive).
func normalise(x []float64) []float64 {
	out := make([]float64, len(x))
	var sum float64
	for i, v := range x {
		out[i] = max(v, 0)
		sum += out[i]
	}
	if sum > 0 {
		for i := range out {
			out[i] /= sum
		}
	}
	return out
}

// Spearman is the rank correlation of a and b (Pearson's of their average ranks); NaN if their
// lengths differ, they have fewer than two values, or either is constant.
func Spearman(a, b []float64) float64 {
	if len(a) != len(b) || len(a) < 2 {
		return math.NaN()
	}
	ra, rb := Ranks(a), Ranks(b)
	n := float64(len(a))
	var ma, mb float64
	for i := range ra {
		ma += ra[i] / n
		mb += rb[i] / n
	}
	var cov, va, vb float64
	for i := range ra {
		cov += (ra[i] - ma) * (rb[i] - mb)
		va += (ra[i] - ma) * (ra[i] - ma)
		vb += (rb[i] - mb) * (rb[i] - mb)
	}
	if va == 0 || vb == 0 {
		return math.NaN()
	}
	return cov / math.Sqrt(va*vb)
}

// Ranks gives the 1-based ranks of x, ascending; ties share their average rank.
func Ranks(x []float64) []float64 {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return x[idx[i]] < x[idx[j]] })
	r := make([]float64, len(x))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && x[idx[j+1]] == x[idx[i]] {
			j++
		}
		for k := i; k <= j; k++ {
			r[idx[k]] = float64(i+j)/2 + 1
		}
		i = j + 1
	}
	return r
}

// Order counts the pairs of contributors whose values the retrainings tell apart and how many of
// them the shares order the same way. Where two Shapley values differ by less than their
// standard errors allow, another run of the retrainings may order them the other way, and no
// ranking can be held against theirs; Spearman over every pair counts those coin flips too.
type Order struct {
	// Pairs is every pair of contributors; Resolved those whose values differ by more than Z
	// standard errors of the difference, √(se_i² + se_j²); Agreeing those of Resolved whose shares
	// differ in the same direction (equal shares do not agree).
	Pairs    int     `json:"pairs"`
	Resolved int     `json:"resolved"`
	Agreeing int     `json:"agreeing"`
	Z        float64 `json:"z"`
}

// ResolvedOrder compares the order of shares with that of values on the pairs whose values differ
// by more than z standard errors (se, per value; all zero: every pair of unequal values counts).
func ResolvedOrder(values, se, shares []float64, z float64) (Order, error) {
	n := len(values)
	if len(se) != n || len(shares) != n {
		return Order{}, fmt.Errorf("%w: %d values, %d standard errors, %d shares", ErrLength, n, len(se), len(shares))
	}
	if !finite(z) || z < 0 {
		return Order{}, fmt.Errorf("%w: z %v (want finite, ≥ 0)", ErrNotANumber, z)
	}
	for i := 0; i < n; i++ {
		if !finite(values[i]) || !finite(se[i]) || se[i] < 0 || !finite(shares[i]) {
			return Order{}, fmt.Errorf("%w: contributor %d: value %v, se %v, share %v (want finite, se ≥ 0)", ErrNotANumber, i, values[i], se[i], shares[i])
		}
	}
	o := Order{Z: z}
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			o.Pairs++
			d := values[i] - values[j]
			if d == 0 || math.Abs(d) <= z*math.Hypot(se[i], se[j]) {
				continue
			}
			o.Resolved++
			if s := shares[i] - shares[j]; (d > 0 && s > 0) || (d < 0 && s < 0) {
				o.Agreeing++
			}
		}
	}
	return o, nil
}
