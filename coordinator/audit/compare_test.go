package audit

import (
	"errors"
	"math"
	"testing"
)

func TestCompare(t *testing.T) {
	for _, c := range []struct {
		name            string
		shapley, shares []float64
		spearman, l1    float64
		diff            []float64
	}{
		{"proportional", []float64{1, 2, 3, 4}, []float64{10, 20, 30, 40}, 1, 0, []float64{0, 0, 0, 0}},
		{"reversed", []float64{1, 2, 3}, []float64{3, 2, 1}, -1, 2.0 / 3, []float64{1.0 / 3, 0, -1.0 / 3}},
		// The negative value is clamped to 0 for the normalised vector; its rank still counts.
		{"negative clamped", []float64{-1, 1, 3}, []float64{0, 1, 3}, 1, 0, []float64{0, 0, 0}},
		{"over-paid hurter", []float64{-1, 1, 1}, []float64{2, 1, 1}, -1, 1, []float64{0.5, -0.25, -0.25}},
		{"nothing paid", []float64{1, 1}, []float64{0, 0}, math.NaN(), 1, []float64{-0.5, -0.5}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Compare(c.shapley, c.shares)
			if err != nil {
				t.Fatal(err)
			}
			if !(near(got.Spearman, c.spearman, 1e-12) || math.IsNaN(c.spearman) && math.IsNaN(got.Spearman)) || !near(got.L1, c.l1, 1e-12) {
				t.Errorf("Spearman %v, L1 %v; want %v, %v", got.Spearman, got.L1, c.spearman, c.l1)
			}
			for i := range c.diff {
				if !near(got.Diff[i], c.diff[i], 1e-12) {
					t.Errorf("diff %v, want %v", got.Diff, c.diff)
					break
				}
			}
		})
	}
}

func TestCompareRefuses(t *testing.T) {
	for _, c := range []struct {
		name            string
		shapley, shares []float64
		want            error
	}{
		{"lengths", []float64{1, 2}, []float64{1}, ErrLength},
		{"NaN", []float64{math.NaN(), 2}, []float64{1, 1}, ErrNotANumber},
		{"negative share", []float64{1, 2}, []float64{-1, 1}, ErrNotANumber},
	} {
		if _, err := Compare(c.shapley, c.shares); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestRanksAverageTies(t *testing.T) {
	got := Ranks([]float64{3, 1, 3, 2})
	want := []float64{3.5, 1, 3.5, 2}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ranks %v, want %v", got, want)
		}
	}
}

func TestResolvedOrder(t *testing.T) {
	for _, c := range []struct {
		name               string
		values, se, shares []float64
		z                  float64
		resolved, agreeing int
	}{
		// Three values 0.12 ± 0.003 apart by 0.0001 (tied within their errors) and one well
		// below: only the three pairs with the low one count, and the shares' order of the tied
		// three does not matter.
		{"ties within errors", []float64{0.1198, 0.1199, 0.1200, 0.06}, []float64{0.003, 0.003, 0.003, 0.002},
			[]float64{0.30, 0.20, 0.25, 0.05}, 2, 3, 3},
		{"a resolved pair reversed", []float64{0.10, 0.20}, []float64{0.01, 0.01}, []float64{0.6, 0.4}, 2, 1, 0},
		{"equal shares do not agree", []float64{0.10, 0.20}, []float64{0.01, 0.01}, []float64{0.5, 0.5}, 2, 1, 0},
		{"no errors: every unequal pair", []float64{1, 2, 2}, []float64{0, 0, 0}, []float64{1, 2, 3}, 2, 2, 2},
		{"z 0 with errors", []float64{0.1, 0.1001}, []float64{0.01, 0.01}, []float64{1, 2}, 0, 1, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, err := ResolvedOrder(c.values, c.se, c.shares, c.z)
			if err != nil {
				t.Fatal(err)
			}
			n := len(c.values)
			if o.Pairs != n*(n-1)/2 || o.Resolved != c.resolved || o.Agreeing != c.agreeing {
				t.Errorf("got %+v, want %d pairs, %d resolved, %d agreeing", o, n*(n-1)/2, c.resolved, c.agreeing)
			}
		})
	}
	for _, bad := range []struct {
		name               string
		values, se, shares []float64
		z                  float64
		want               error
	}{
		{"lengths", []float64{1, 2}, []float64{0}, []float64{1, 2}, 2, ErrLength},
		{"negative se", []float64{1, 2}, []float64{0, -1}, []float64{1, 2}, 2, ErrNotANumber},
		{"NaN value", []float64{math.NaN(), 2}, []float64{0, 0}, []float64{1, 2}, 2, ErrNotANumber},
		{"negative z", []float64{1, 2}, []float64{0, 0}, []float64{1, 2}, -1, ErrNotANumber},
	} {
		if _, err := ResolvedOrder(bad.values, bad.se, bad.shares, bad.z); !errors.Is(err, bad.want) {
			t.Errorf("%s: got %v, want %v", bad.name, err, bad.want)
		}
	}
}
