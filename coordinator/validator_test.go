package coordinator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/datasets"
	"github.com/cohortlab/cohort/trainer"
)

// TestValidationDataFor: one coordinator serves image and text proposals, each from its path.
func TestValidationDataFor(t *testing.T) {
	cfg := ValidationConfig{Data: "fmnist", Text: "input.txt"}
	for _, tc := range []struct{ model, want string }{
		{"mlp", "fmnist"}, {"mlp:784-256-10", "fmnist"}, {"gpt:1-32-2-32", "input.txt"}, {"charlm", ""},
	} {
		if got := cfg.dataFor(tc.model); got != tc.want {
			t.Errorf("dataFor(%s) = %q, want %q", tc.model, got, tc.want)
		}
	}
	if got := (ValidationConfig{Data: "fmnist"}).dataFor("gpt:1-32-2-32"); got != "" {
		t.Errorf("a GPT on a coordinator given no text: %q, want the embedded play (\"\")", got)
	}
}

// TestTextValidator: a GPT proposal's validator loads the last 10 % of the coordinator's text;
// a proposal whose validation hash is of other text is refused, and one of the same text passes.
func TestTextValidator(t *testing.T) {
	dir := t.TempDir()
	play, err := datasets.EmbeddedPlay()
	if err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "play.txt")
	if err := os.WriteFile(text, []byte(play.Text()[:20000]), 0o644); err != nil {
		t.Fatal(err)
	}
	const model = "gpt:1-16-2-16"
	want, err := trainer.ValidationFor(model, text, 200)
	if err != nil {
		t.Fatal(err)
	}
	h := want.Hash()
	cfg := ValidationConfig{Data: "embedded", Text: text, Samples: 200}.withDefaults()
	v, err := newValidator(cfg, consensus.Proposal{ID: 3, Model: model, ValidationHash: h[:]})
	if err != nil {
		t.Fatal(err)
	}
	if v.val.Hash() != h {
		t.Fatal("the validator's split differs from the text's")
	}
	other, err := trainer.ValidationFor(model, "", 200) // the embedded play
	if err != nil {
		t.Fatal(err)
	}
	oh := other.Hash()
	_, err = newValidator(cfg, consensus.Proposal{ID: 4, Model: model, ValidationHash: oh[:]})
	if err == nil || !strings.Contains(err.Error(), "differs from proposal 4's") {
		t.Fatalf("a proposal validated on other text: err = %v", err)
	}
	// Without text the coordinator validates GPTs on the embedded play.
	if _, err := newValidator(ValidationConfig{Samples: 200}.withDefaults(), consensus.Proposal{ID: 5, Model: model, ValidationHash: oh[:]}); err != nil {
		t.Fatal(err)
	}
}
