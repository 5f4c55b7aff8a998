package coordinator

import (
	"strings"
	"testing"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// The state bounds a proposed model by its own count of the parameters (consensus.ParseModel,
// which cannot import the trainer): it must be the trainer's count for every spec the trainer
// builds, and an upper bound for bare "charlm", whose vocabulary the trainer reads from its data.
func TestModelParamsMatchTheTrainer(t *testing.T) {
	for _, spec := range []string{"mlp", "mlp:784-256-10", "mlp:784-16-10", "mlp:784-32-10", "mlp:2-2", "mlp:10-300-200-100-3",
		"charlm:v96-t64-d64-h128", "charlm:v96-t64-d64-h128-ln", "charlm:v256-t32-d48-h0", "charlm:v2-t2-d2-h0-ln",
		"charlm:v65-t16-d24-h96"} {
		t.Run(spec, func(t *testing.T) {
			sh, err := consensus.ParseModel(spec)
			if err != nil {
				t.Fatal(err)
			}
			var m nn.Model
			switch {
			case strings.HasPrefix(spec, "charlm:"):
				cfg, err := nn.ParseCharLMName(spec)
				if err != nil {
					t.Fatal(err)
				}
				m, err = nn.NewCharLM(cfg)
				if err != nil {
					t.Fatal(err)
				}
			default:
				if m, err = trainer.NewModel(spec, 0, 0); err != nil {
					t.Fatal(err)
				}
			}
			if got := uint64(len(m.Params())); got != sh.Params {
				t.Fatalf("consensus counts %d parameters, the trainer builds %d", sh.Params, got)
			}
		})
	}
	m, err := trainer.NewModel("charlm", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	sh, err := consensus.ParseModel("charlm")
	if err != nil {
		t.Fatal(err)
	}
	if got := uint64(len(m.Params())); got > sh.Params {
		t.Fatalf("charlm: consensus counts %d parameters, below the trainer's %d", sh.Params, got)
	}
	// Specs the trainer refuses, the state refuses too.
	for _, spec := range []string{"mlp:784", "mlp:784-1-10", "mlp:784--10", "charlm:v1-t64-d64-h128", "charlm:v96-t64-d64-h1",
		"charlm:v96-t64-d64", "charlm:x96-t64-d64-h128", "gpt:2-64-3-32", "resnet"} {
		if _, err := consensus.ParseModel(spec); err == nil {
			t.Errorf("%s: accepted", spec)
		}
		if strings.HasPrefix(spec, "mlp:") {
			if _, err := nn.ParseMLPName(spec); err == nil {
				t.Errorf("%s: the trainer accepts it", spec)
			}
		}
		if strings.HasPrefix(spec, "charlm:") {
			if _, err := nn.ParseCharLMName(spec); err == nil {
				t.Errorf("%s: the trainer accepts it", spec)
			}
		}
	}
}
