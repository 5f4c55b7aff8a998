package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.Run(append([]string{"cohort"}, args...))
	return out.String(), err
}

func TestHelpOnEveryCommand(t *testing.T) {
	for _, cmd := range newApp().Commands {
		out, err := run(t, cmd.Name, "--help")
		if err != nil {
			t.Fatalf("%s --help: %v", cmd.Name, err)
		}
		if !strings.Contains(out, "USAGE") || !strings.Contains(out, cmd.Name) {
			t.Fatalf("%s --help printed:\n%s", cmd.Name, out)
		}
	}
}

func TestBadInputGivesOneLineError(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "--no-such-flag"}, "no-such-flag"},
		{[]string{"train", "--workers", "many"}, "workers"},
		{[]string{"train", "--model", "resnet"}, "unknown model"},
		{[]string{"train", "--mode", "async", "--rounds", "1"}, "async"},
		{[]string{"train", "--data", "embedded", "--partition", "dirichlet:0"}, "dirichlet"},
		{[]string{"train", "stray"}, "unexpected argument"},
		{[]string{"--log-level", "loud", "train"}, "log-level"},
		{[]string{"simulate", "--no-such-flag"}, "no-such-flag"},
		{[]string{"simulate", "--link", "10xbit,5ms"}, "link"},
		{[]string{"simulate", "--kill-peer", "peer-1"}, "NAME@ROUND"},
		{[]string{"simulate", "--kill-leader-at", "3", "--coordinators", "1"}, "3 coordinators"},
		{[]string{"join", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--key", "k", "--data", "a", "--data", "b", "--contributor", "x"}, "one contributor per data directory"},
		{[]string{"join", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--key", "k", "--data", "/nonexistent", "--contributor", "x"}, "/nonexistent"},
		{[]string{"vote", "--coordinator", "127.0.0.1:1", "--key", "k", "--proposal", "1"}, "exactly one of --yes and --no"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--quorum", "2"}, "--quorum"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--codec", "topk:2"}, "codec"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--ef-decay", "1.5"}, "error decay"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--outer-momentum", "1"}, "momentum"},
		{[]string{"simulate", "--outer-lr", "0"}, "learning rate"},
		{[]string{"simulate", "--ef-decay", "0"}, "error decay"},
		{[]string{"keygen"}, "out"},
		{[]string{"report", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--format", "xml"}, "--format"},
		{[]string{"report", "--coordinator", "127.0.0.1:1", "--cohort", "0"}, "--cohort"},
		{[]string{"report", "--coordinator", "127.0.0.1:1"}, "cohort"},
	} {
		_, err := run(t, tc.args...)
		if err == nil {
			t.Errorf("%v: no error", tc.args)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
			t.Errorf("%v: error %q, want one line mentioning %q", tc.args, msg, tc.want)
		}
	}
}

func TestTrainPrintsProgressAndJSON(t *testing.T) {
	out, err := run(t, "--log-level", "error", "train", "--model", "mlp:784-32-10", "--workers", "2",
		"--inner-steps", "3", "--rounds", "2", "--batch", "16", "--val-samples", "200", "--data", "embedded", "--json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "round   1/2") || !strings.HasPrefix(lines[1], "round   2/2") {
		t.Fatalf("progress lines:\n%s", out)
	}
	var sum map[string]any
	if err := json.Unmarshal([]byte(lines[2]), &sum); err != nil {
		t.Fatalf("last line is not JSON: %v\n%s", err, lines[2])
	}
	for _, k := range []string{"mode", "model", "workers", "inner_steps", "rounds", "samples_per_worker",
		"final_val_loss", "final_val_accuracy", "bytes_per_worker", "wall_seconds", "codec"} {
		if _, ok := sum[k]; !ok {
			t.Errorf("JSON summary lacks %q", k)
		}
	}
	if sum["samples_per_worker"].(float64) != 2*3*16 {
		t.Errorf("samples_per_worker = %v, want 96", sum["samples_per_worker"])
	}
}

func TestEnvironmentVariablesSetFlags(t *testing.T) {
	t.Setenv("COHORT_WORKERS", "0")
	_, err := run(t, "train", "--rounds", "1")
	if err == nil || !strings.Contains(err.Error(), "workers 0") {
		t.Fatalf("COHORT_WORKERS=0 not applied: %v", err)
	}
}
