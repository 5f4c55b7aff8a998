package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestTrainStages: `cohort train --stages 2` (one micro-batch, raw fp32) trains to the bits of
// the whole-model workers, and its JSON summary describes the stages.
func TestTrainStages(t *testing.T) {
	args := []string{"train", "--model", "gpt:2-32-2-16", "--data", "embedded", "--workers", "2", "--rounds", "2",
		"--inner-steps", "3", "--batch", "4", "--val-samples", "16", "--json"}
	last := func(out string) string {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		return lines[len(lines)-1]
	}
	out, err := run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	var whole struct {
		FinalValLoss float64 `json:"final_val_loss"`
		ModelHash    string  `json:"model_hash"`
	}
	if err := json.Unmarshal([]byte(last(out)), &whole); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, append(args, "--stages", "2")...)
	if err != nil {
		t.Fatal(err)
	}
	var staged struct {
		FinalValLoss float64 `json:"final_val_loss"`
		ModelHash    string  `json:"model_hash"`
		Stages       int     `json:"stages"`
		StageStats   []struct {
			Range                  [2]int  `json:"range"`
			ActivationBytesPerStep float64 `json:"activation_bytes_per_step"`
		} `json:"stage_stats"`
	}
	if err := json.Unmarshal([]byte(last(out)), &staged); err != nil {
		t.Fatal(err)
	}
	if staged.FinalValLoss != whole.FinalValLoss || staged.ModelHash != whole.ModelHash {
		t.Errorf("--stages 2: val loss %v, hash %s; whole-model workers %v, %s", staged.FinalValLoss, staged.ModelHash, whole.FinalValLoss, whole.ModelHash)
	}
	if staged.Stages != 2 || len(staged.StageStats) != 2 || staged.StageStats[0].Range[1] != staged.StageStats[1].Range[0] || staged.StageStats[0].ActivationBytesPerStep <= 0 {
		t.Errorf("stage summary %+v", staged)
	}
	out, err = run(t, "train", "--model", "gpt:2-32-2-16", "--data", "embedded", "--workers", "1", "--rounds", "1",
		"--inner-steps", "2", "--batch", "4", "--val-samples", "8", "--stages", "2", "--micro-batches", "2", "--stage-codec", "q8")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2 stages, 2 micro-batches (1f1b), activations q8", "stage 1: blocks [1, 2)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestTrainStagesRejects(t *testing.T) {
	gpt := []string{"train", "--model", "gpt:2-32-2-16", "--data", "embedded", "--rounds", "1", "--inner-steps", "1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append(gpt, "--stages", "3"), "--stages 3: want 1 to 2 (gpt:2-32-2-16 has 2 blocks)"},
		{append(gpt, "--stages", "0"), "--stages 0: want 1 to 2"},
		{append(gpt, "--stages", "2", "--mode", "ddp"), "--mode diloco, not ddp"},
		{append(gpt, "--stages", "2", "--batch", "6", "--micro-batches", "4"), "--micro-batches 4: want a divisor of the batch of 6 sequences"},
		{append(gpt, "--stages", "2", "--micro-batches", "0"), "--micro-batches 0"},
		{append(gpt, "--stages", "2", "--stage-codec", "topk:0.1"), "--stage-codec topk:0.1"},
		{append(gpt, "--stages", "2", "--stage-codec", "q9"), "--stage-codec"},
		{append(gpt, "--stages", "2", "--schedule", "zigzag"), "--schedule"},
		{append(gpt, "--micro-batches", "2"), "--micro-batches applies to stage groups: give --stages"},
		{[]string{"train", "--model", "mlp", "--data", "embedded", "--stages", "2"}, "stage groups train gpt models, not mlp"},
	} {
		_, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}
