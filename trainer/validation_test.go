package trainer

import (
	"testing"

	"github.com/cohortlab/cohort/trainer/nn"
)

// The validator's split is the one `cohort train` and `cohort simulate` evaluate on, bit for bit.
func TestValidationForMatchesTask(t *testing.T) {
	for _, model := range []string{"mlp", "mlp:784-32-10", "charlm"} {
		v, err := ValidationFor(model, EmbeddedData, 300)
		if err != nil {
			t.Fatal(err)
		}
		task, info, err := BuildTask(TaskSpec{Model: model, Workers: 2, DataDir: EmbeddedData, ValSamples: 300, Partition: "iid"})
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewValidation(task.Val, info.ValSamples)
		if err != nil {
			t.Fatal(err)
		}
		if v.Hash() != w.Hash() || v.Len() != info.ValSamples {
			t.Fatalf("%s: validator split differs from the task's", model)
		}
	}
}

func TestValidationDrawAndSubset(t *testing.T) {
	v, err := ValidationFor("mlp", EmbeddedData, 100)
	if err != nil {
		t.Fatal(err)
	}
	d1, err := v.Draw(7, 4, 25)
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := v.Draw(7, 4, 25)
	seen := map[int]bool{}
	for k := range d1 {
		for j, i := range d1[k] {
			if d2[k][j] != i {
				t.Fatal("same seed, different draw")
			}
			if seen[i] {
				t.Fatalf("sample %d drawn twice", i)
			}
			seen[i] = true
		}
	}
	if _, err := v.Draw(1, 5, 25); err == nil {
		t.Fatal("drew 125 of 100 samples")
	}
	var nb nn.Batch
	v.Subset(&nb, []int{3})
	if len(nb.Y) != 1 || len(nb.X) != 784 {
		t.Fatalf("subset of one: %d labels, %d pixels", len(nb.Y), len(nb.X))
	}
	if _, err := NewValidation(nb, 2); err == nil {
		t.Fatal("a one-sample batch wrapped as two samples")
	}
}
