package sim

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
)

// TestAggregatorsTakeSlices: a cohort on three voters and two aggregators trains every round,
// every round's slices lie on all five coordinators, and the aggregators' own replayed logs
// record the rounds closed with the voters' model hashes.
func TestAggregatorsTakeSlices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	sum, err := Run(ctx, Config{Coordinators: 3, Aggregators: 2, Peers: 3, Model: "mlp:784-128-10", Rounds: 3, InnerSteps: 5, Batch: 32,
		Codec: "q8", Partition: "iid", Seed: 1, ValSamples: 300, Logger: quiet(), Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if sum.RoundsCompleted != 3 || !sum.ReplicasAgree {
		t.Fatalf("rounds completed %d, replicas agree %v", sum.RoundsCompleted, sum.ReplicasAgree)
	}
	voter, _, err := consensus.ReplayDir(filepath.Join(dir, "c1"))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, c := range voter.Coordinators() {
		names[c.ID] = c.Name
	}
	rounds, err := voter.Rounds(1)
	if err != nil || len(rounds) != 3 {
		t.Fatalf("%d rounds recorded, %v", len(rounds), err)
	}
	for _, r := range rounds {
		on := map[string]bool{}
		for _, sl := range r.Slices {
			on[names[sl.Aggregator]] = true
		}
		for _, n := range []string{"c1", "c2", "c3", "a1", "a2"} {
			if !on[n] {
				t.Fatalf("round %d: no slice on %s (slices on %v)", r.Number, n, on)
			}
		}
	}
	for _, a := range []string{"a1", "a2"} {
		st, _, err := consensus.ReplayDir(filepath.Join(dir, a))
		if err != nil {
			t.Fatal(err)
		}
		rs, err := st.Rounds(1)
		if err != nil || len(rs) != len(rounds) {
			t.Fatalf("%s recorded %d rounds, %v", a, len(rs), err)
		}
		for i := range rs {
			if string(rs[i].NewModelHash) != string(rounds[i].NewModelHash) {
				t.Fatalf("%s: round %d closed with another model hash than on c1", a, i+1)
			}
		}
	}
	t.Logf("%d rounds, val acc %.3f, model %s", sum.RoundsCompleted, sum.FinalValAccuracy, sum.ModelHash)
}
