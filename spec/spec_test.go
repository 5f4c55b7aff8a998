package spec

import (
	"strings"
	"testing"

	"github.com/cohortlab/cohort/consensus"
)

// TestCheck: a proposal's training settings are refused, with the field named, when
// no peer could train with them; the parsed values are what peers use.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		h    consensus.Hyperparams
		want string // "" = valid
	}{
		{consensus.Hyperparams{}, ""},
		{consensus.Hyperparams{Codec: "topk:0.03/m+q1", OuterLR: "1", OuterMomentum: "0.8", ErrorDecay: "0.9"}, ""},
		{consensus.Hyperparams{ErrorDecay: "1"}, ""},
		{consensus.Hyperparams{InnerSteps: MaxInnerSteps, Rounds: MaxRounds}, ""},
		{consensus.Hyperparams{InnerSteps: 0, Rounds: 1}, "inner steps H 0"},
		{consensus.Hyperparams{InnerSteps: MaxInnerSteps + 1, Rounds: 1}, "inner steps H 1000001"},
		{consensus.Hyperparams{InnerSteps: 1, Rounds: 0}, "rounds 0"},
		{consensus.Hyperparams{InnerSteps: 1, Rounds: 1 << 31}, "rounds 2147483648"},
		{consensus.Hyperparams{Codec: "topk:2"}, "codec"},
		{consensus.Hyperparams{Codec: "gzip"}, "codec"},
		{consensus.Hyperparams{OuterLR: "fast"}, "outer lr"},
		{consensus.Hyperparams{OuterLR: "0"}, "learning rate"},
		{consensus.Hyperparams{OuterLR: "Inf"}, "learning rate"},
		{consensus.Hyperparams{OuterMomentum: "1"}, "momentum"},
		{consensus.Hyperparams{OuterMomentum: "-0.1"}, "momentum"},
		{consensus.Hyperparams{OuterMomentum: "0"}, ""}, // no momentum: a setting, not "the default"
		{consensus.Hyperparams{ErrorDecay: "0"}, "error decay"},
		{consensus.Hyperparams{ErrorDecay: "1.01"}, "error decay"},
		{consensus.Hyperparams{ErrorDecay: "NaN"}, "error decay"},
		{consensus.Hyperparams{ErrorDecay: "0.9x"}, "error decay"},
		{consensus.Hyperparams{DownCodec: "topk:0.03/m+q8"}, ""},
		{consensus.Hyperparams{DownCodec: "q8+zstd"}, ""},
		{consensus.Hyperparams{DownCodec: "topk:0"}, "down codec"},
		{consensus.Hyperparams{DownCodec: "q8+gzip"}, "down codec"},
	} {
		if tc.h.InnerSteps == 0 && tc.h.Rounds == 0 {
			tc.h.InnerSteps, tc.h.Rounds = 50, 20 // the cases about the other fields
		}
		err := Check(tc.h)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.h, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one naming %q", tc.h, err, tc.want)
		}
	}
	p := consensus.Proposal{ID: 7, Params: consensus.Hyperparams{Codec: "q8", OuterLR: "1", OuterMomentum: "0", ErrorDecay: "0.9"}}
	ts, err := Of(p)
	if err != nil || ts.Outer.LR != 1 || ts.Outer.Momentum != 0 || ts.ErrorDecay != 0.9 || ts.Up.String() != "q8" || ts.Seed != InitSeed(7) {
		t.Fatalf("Of = %+v, %v", ts, err)
	}
	// An empty field means the table's value, for peers and coordinators alike.
	ts, err = Of(consensus.Proposal{ID: 8})
	if err != nil || ts.Up.String() != Defaults.Codec || ts.Outer.LR != 1 || ts.Outer.Momentum != 0.8 || ts.ErrorDecay != 0.9 ||
		ts.InnerSteps != Defaults.InnerSteps || ts.Rounds != Defaults.Rounds {
		t.Fatalf("Of(no settings) = %+v, %v; want Defaults", ts, err)
	}
}

// TestInner: the proposal's inner AdamW is refused, naming the field, when no peer could train with
// it, and otherwise parsed into the optimizer every peer builds, the cosine decaying over the
// cohort's whole timeline.
func TestInner(t *testing.T) {
	base := consensus.Hyperparams{InnerSteps: 50, Rounds: 20}
	for _, tc := range []struct {
		edit func(*consensus.Hyperparams)
		want string // "" = valid
	}{
		{func(h *consensus.Hyperparams) {}, ""},
		{func(h *consensus.Hyperparams) {
			h.InnerLR, h.Schedule, h.Warmup, h.ClipNorm, h.WeightDecay = "6e-4", "cosine", 100, "1", "0.1"
		}, ""},
		{func(h *consensus.Hyperparams) { h.Warmup = 1000 }, ""},
		{func(h *consensus.Hyperparams) { h.Warmup = 1001 }, "warm-up of 1001 steps is longer than the cohort's 20 rounds × 50 inner steps"},
		{func(h *consensus.Hyperparams) { h.InnerLR = "0" }, `inner lr "0"`},
		{func(h *consensus.Hyperparams) { h.InnerLR = "-1e-3" }, `inner lr "-1e-3"`},
		{func(h *consensus.Hyperparams) { h.InnerLR = "NaN" }, `inner lr "NaN"`},
		{func(h *consensus.Hyperparams) { h.InnerLR = "11" }, `inner lr "11"`},
		{func(h *consensus.Hyperparams) { h.WeightDecay = "-0.1" }, `weight decay "-0.1"`},
		{func(h *consensus.Hyperparams) { h.ClipNorm = "Inf" }, `clip norm "Inf"`},
		{func(h *consensus.Hyperparams) { h.ClipNorm = "x" }, `clip norm "x"`},
		{func(h *consensus.Hyperparams) { h.Schedule = "linear" }, `lr schedule "linear": want constant or cosine`},
	} {
		h := base
		tc.edit(&h)
		err := Check(h)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", h, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error containing %q", h, err, tc.want)
		}
	}
	tr, err := Of(consensus.Proposal{ID: 3, Params: consensus.Hyperparams{InnerSteps: 50, Rounds: 20, InnerLR: "6e-4", Schedule: "cosine", Warmup: 100, ClipNorm: "1", WeightDecay: "0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if in := tr.Inner; in.LR != 6e-4 || in.Warmup != 100 || in.DecaySteps != 1000 || in.ClipNorm != 1 || in.WeightDecay != 0.1 {
		t.Fatalf("inner AdamW %+v: want lr 6e-4, warm-up 100, decay over 1000 steps, clip 1, weight decay 0.1", in)
	}
	if got := tr.Inner.LRAt(999); !(got > 6e-5 && got < 6.01e-5) {
		t.Fatalf("lr at the last step %v, want the floor lr/10 = 6e-5", got)
	}
	// Empty fields are Defaults': a constant 1e-3, no warm-up, no clipping, no weight decay.
	tr, err = Of(consensus.Proposal{ID: 1})
	if err != nil {
		t.Fatal(err)
	}
	if in := tr.Inner; in.LR != 1e-3 || in.Warmup != 0 || in.DecaySteps != 0 || in.ClipNorm != 0 || in.WeightDecay != 0 {
		t.Fatalf("default inner AdamW %+v", in)
	}
}

// TestDownCodec: a proposal's empty down codec is the rule it was recorded under (protocol's
// DownCodec of its codec), not Defaults'; a set one is what every replica decodes with.
func TestDownCodec(t *testing.T) {
	for _, tc := range []struct {
		h    consensus.Hyperparams
		want string
	}{
		{consensus.Hyperparams{}, "q8+zstd"}, // Defaults' codec is top-k
		{consensus.Hyperparams{Codec: "topk:0.01+q4"}, "q8+zstd"},
		{consensus.Hyperparams{Codec: "fp32"}, "fp32"},
		{consensus.Hyperparams{Codec: "q4"}, "q8"},
		{consensus.Hyperparams{Codec: "q4", DownCodec: "topk:0.05/m+q8"}, "topk:0.05/m+q8"},
		{consensus.Hyperparams{DownCodec: "fp16"}, "fp16"},
	} {
		if got := DownCodec(tc.h); got != tc.want {
			t.Errorf("DownCodec(%+v) = %q, want %q", tc.h, got, tc.want)
		}
		ts, err := Of(consensus.Proposal{ID: 1, Params: tc.h})
		if err != nil || ts.Down.String() != tc.want {
			t.Errorf("Of(%+v).Down = %v, %v; want %q", tc.h, ts.Down, err, tc.want)
		}
	}
	if _, err := Of(consensus.Proposal{ID: 1, Params: consensus.Hyperparams{DownCodec: "topk:2"}}); err == nil || !strings.Contains(err.Error(), "down codec") {
		t.Errorf("a bad down codec: %v", err)
	}
}
