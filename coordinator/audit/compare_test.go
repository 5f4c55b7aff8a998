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
