package audit

import (
	"context"
	"errors"
	"testing"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/trainer"
)

func tinyScenario() Scenario {
	return Scenario{
		Task:   trainer.TaskSpec{Model: "mlp:784-16-10", Workers: 3, Partition: "dirichlet:0.5", Seed: 3, DataDir: trainer.EmbeddedData, ValSamples: 200},
		Params: consensus.Hyperparams{Rounds: 3, InnerSteps: 8},
	}
}

// Three contributors, a tiny model, three rounds: every coalition is retrained, the grand
// coalition beats θ_0, a coalition's value is the same however often it is asked for, and
// Shapley values share out exactly what the grand coalition gained.
func TestRetrainThreeContributors(t *testing.T) {
	r, err := NewRetrainer(tinyScenario())
	if err != nil {
		t.Fatal(err)
	}
	if r.Players() != 3 || len(r.ShardSizes()) != 3 || r.Codec() == "" {
		t.Fatalf("players %d, shard sizes %v, codec %q", r.Players(), r.ShardSizes(), r.Codec())
	}
	res, err := r.Run(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Method != MethodExact || res.Evaluations != 8 {
		t.Fatalf("method %s, %d evaluations", res.Method, res.Evaluations)
	}
	if !(res.Grand.Loss < res.Empty.Loss) || !(res.Grand.Accuracy > res.Empty.Accuracy) {
		t.Errorf("grand coalition %+v, θ_0 %+v: training did not help", res.Grand, res.Empty)
	}
	var sum float64
	for i, x := range res.Shapley {
		sum += x
		t.Logf("contributor %d (%d samples): LOO %+.4f, Shapley %+.4f, accuracy Shapley %+.4f", i, r.ShardSizes()[i], res.LOO[i], x, res.ShapleyAccuracy[i])
	}
	if !near(sum, res.Empty.Loss-res.Grand.Loss, 1e-9) {
		t.Errorf("Shapley values sum to %v, the gain is %v", sum, res.Empty.Loss-res.Grand.Loss)
	}
	again, err := r.Value(context.Background(), All(3)&^2)
	if err != nil {
		t.Fatal(err)
	}
	if want := res.Grand.Loss + res.LOO[1]; again.Loss != want {
		t.Errorf("coalition {0,2} retrained again: loss %v, first time %v", again.Loss, want)
	}
	if _, err := r.Value(context.Background(), 1<<3); !errors.Is(err, ErrPlayers) {
		t.Errorf("coalition beyond the players: %v", err)
	}
}

func TestScenarioRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*Scenario)
		want error
	}{
		{"unknown partition", func(s *Scenario) { s.Task.Partition = "zipf" }, ErrScenario},
		{"65 contributors", func(s *Scenario) { s.Task.Workers = 65 }, ErrPlayers},
		{"no contributors", func(s *Scenario) { s.Task.Workers = 0 }, ErrPlayers},
		{"unknown codec", func(s *Scenario) { s.Params.Codec = "gzip" }, ErrScenario},
		{"unknown model", func(s *Scenario) { s.Task.Model = "resnet" }, ErrScenario},
		{"bad outer step", func(s *Scenario) { s.Params.OuterMomentum = "1.5" }, ErrScenario},
		{"negative parallel", func(s *Scenario) { s.Parallel = -1 }, ErrScenario},
	} {
		t.Run(c.name, func(t *testing.T) {
			sc := tinyScenario()
			c.edit(&sc)
			if _, err := NewRetrainer(sc); !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
}
