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
