package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/export"
)

func writeModelFile(t *testing.T, spec string) string {
	t.Helper()
	m, err := trainer.NewModel(spec, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := export.Export(export.Provenance{Spec: spec, Cohort: 1, Round: 1, ModelHash: make([]byte, 32)}, m.Layout(), m.Params())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGenerateCommand(t *testing.T) {
	gpt := writeModelFile(t, "gpt:1-16-2-8")
	args := []string{"generate", "--model", gpt, "--prompt", "ROMEO:", "--tokens", "24", "--temperature", "0.8", "--seed", "3"}
	out, err := run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := run(t, args...)
	if !strings.HasPrefix(out, "ROMEO:") || len(out) != len("ROMEO:")+24+1 || out != again {
		t.Fatalf("output %q (again %q): want the prompt, 24 bytes and a newline, the same twice", out, again)
	}
	mlp := writeModelFile(t, "mlp:784-16-10")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"generate", "--model", filepath.Join(t.TempDir(), "none.safetensors")}, "no such file"},
		{[]string{"generate", "--model", mlp}, "mlp:784-16-10"},
		{[]string{"generate", "--model", gpt, "--tokens", "0"}, "--tokens 0"},
		{[]string{"generate", "--model", gpt, "--temperature", "-1"}, "--temperature -1"},
	} {
		if _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
}

// TestTrainPrintsASample: a text model's training run ends with a sample of what it learnt.
func TestTrainPrintsASample(t *testing.T) {
	out, err := run(t, "--log-level", "warn", "train", "--model", "gpt:1-16-2-8", "--data", "embedded", "--workers", "1",
		"--inner-steps", "2", "--rounds", "1", "--batch", "2", "--val-samples", "4")
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(out, "sample (200 bytes, temperature 0.8):\n")
	if i < 0 || len(out) < i+len("sample (200 bytes, temperature 0.8):\n")+200 {
		t.Fatalf("no sample at the end of:\n%s", out)
	}
}
