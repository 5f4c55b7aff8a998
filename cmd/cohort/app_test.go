package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
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
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--down-codec", "q8+gzip"}, "down codec"},
		{[]string{"simulate", "--down-codec", "topk:5"}, "down codec"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--ef-decay", "1.5"}, "error decay"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--outer-momentum", "1"}, "momentum"},
		{[]string{"simulate", "--outer-lr", "0"}, "learning rate"},
		{[]string{"simulate", "--ef-decay", "0"}, "error decay"},
		{[]string{"keygen"}, "out"},
		{[]string{"report", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--format", "xml"}, "--format"},
		{[]string{"report", "--coordinator", "127.0.0.1:1", "--cohort", "0"}, "--cohort"},
		{[]string{"report", "--coordinator", "127.0.0.1:1"}, "cohort"},
		// Zeros a config would read as a default, and values a narrower field would truncate.
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--inner-steps", "0"}, "--inner-steps 0: want 1 to 1e+06"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--rounds", "0"}, "--rounds 0"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--rounds", "4294967297"}, "--rounds 4294967297"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--min-members", "0"}, "--min-members 0"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--outer-momentum", "-0.1"}, "momentum"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--quorum", "0.00001"}, "--quorum 1e-05 is below one basis point"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--voting-period", "500us"}, "--voting-period 500µs: want at least 1ms"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--voting-period", "0s"}, "--voting-period 0s"},
		{[]string{"train", "--rounds", "0"}, "--rounds 0: want 1 to"},
		{[]string{"train", "--inner-steps", "0"}, "--inner-steps 0"},
		{[]string{"train", "--workers", "100000"}, "--workers 100000"},
		{[]string{"train", "--batch", "1"}, "--batch 1: want 0 (the model's default) or 2 to"},
		{[]string{"train", "--lr", "0"}, "--lr 0"},
		{[]string{"train", "--lr", "NaN"}, "--lr NaN"},
		{[]string{"train", "--outer-lr", "0"}, "--outer-lr 0"},
		{[]string{"train", "--outer-momentum", "-0.5"}, "--outer-momentum -0.5"},
		{[]string{"train", "--outer-momentum", "1"}, "--outer-momentum 1"},
		{[]string{"train", "--ef-decay", "0"}, "--ef-decay 0"},
		{[]string{"train", "--weight-decay", "-1"}, "--weight-decay -1"},
		{[]string{"stage", "--model", "gpt:2-32-2-16", "--stage", "2/2", "--key", "k", "--peers", "x"}, `--stage "2/2": want i/S with 0 ≤ i < S`},
		{[]string{"stage", "--model", "gpt:2-32-2-16", "--stage", "0/3", "--key", "k", "--peers", "x"}, "gpt:2-32-2-16 has 2 blocks"},
		{[]string{"stage", "--model", "mlp", "--stage", "0/1", "--key", "k", "--peers", "x"}, "stage groups train gpt models"},
		{[]string{"stage", "--model", "gpt:2-32-2-16", "--stage", "0/2", "--key", "k", "--peers", "x"}, "--peers: 1 entries for a group of 2 stages"},
		{[]string{"stage", "--model", "gpt:2-32-2-16", "--stage", "0/1", "--key", "k", "--peers", "zz@127.0.0.1:1"}, "node id"},
		{[]string{"stage", "--model", "gpt:2-32-2-16", "--stage", "0/1", "--key", "k", "--peers", "x", "--micro-batches", "5"}, "--micro-batches 5: want a divisor"},
		{[]string{"stage", "--model", "gpt:2-32-2-16", "--stage", "0/1", "--key", "k", "--peers", "x", "--link-timeout", "0s"}, "--link-timeout 0s"},
		{[]string{"stage", "--model", "gpt:2-32-2-16", "--stage", "0/1", "--key", "k", "--peers", "x", "--stage-codec", "topk:0.1"}, "want a dense setting"},
		{[]string{"simulate", "--rounds", "0"}, "--rounds 0"},
		{[]string{"simulate", "--peers", "0"}, "--peers 0"},
		{[]string{"simulate", "--coordinators", "0"}, "--coordinators 0"},
		{[]string{"simulate", "--aggregators", "17"}, "--aggregators 17"},
		{[]string{"simulate", "--inner-steps", "0"}, "--inner-steps 0"},
		{[]string{"simulate", "--val-samples", "0"}, "--val-samples 0"},
		{[]string{"simulate", "--round-timeout", "0s"}, "--round-timeout 0s"},
		{[]string{"simulate", "--outer-momentum", "1"}, "momentum"},
		{[]string{"simulate", "--lr-schedule", "linear"}, `lr schedule "linear": want constant or cosine`},
		{[]string{"simulate", "--rounds", "2", "--inner-steps", "5", "--warmup", "11"}, "warm-up of 11 steps is longer than the cohort's 2 rounds × 5 inner steps"},
		{[]string{"simulate", "--clip", "-1"}, "--clip -1"},
		{[]string{"train", "--lr-schedule", "step"}, `lr schedule "step"`},
		{[]string{"train", "--clip", "NaN"}, "--clip NaN"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--lr-schedule", "cosine", "--rounds", "1", "--inner-steps", "1", "--warmup", "2"}, "warm-up of 2 steps"},
		{[]string{"propose", "--coordinator", "127.0.0.1:1", "--key", "k", "--name", "n", "--lr", "0"}, "--lr 0"},
		{[]string{"join", "--coordinator", "127.0.0.1:1", "--cohort", "0", "--key", "k", "--data", "a", "--contributor", "x"}, "--cohort 0"},
		{[]string{"join", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--key", "k", "--data", "a", "--contributor", "x", "--batch", "-1"}, "--batch -1"},
		{[]string{"join", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--key", "k", "--data", "a", "--contributor", "x", "--overlap", "-1"}, "--overlap -1"},
		{[]string{"vote", "--coordinator", "127.0.0.1:1", "--key", "k", "--proposal", "0", "--yes"}, "--proposal"},
		{[]string{"report", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--timeout", "0s"}, "--timeout 0s"},
		{[]string{"shard", "--out", "x", "--peers", "0"}, "--peers 0"},
		{[]string{"coordinator", "--id", "c1", "--dir", "x", "--listen", "127.0.0.1:1", "--val-samples", "0"}, "--val-samples 0"},
		{[]string{"coordinator", "--id", "c1", "--dir", "x"}, "--listen IP:PORT is required"},
		{[]string{"coordinator", "--id", "c1", "--dir", "x", "--listen-fds", "3"}, `--listen-fds "3": want UDP,TCP`},
		{[]string{"coordinator", "--id", "c1", "--dir", "x", "--listen-fds", "1,2"}, `--listen-fds "1,2": want UDP,TCP`},
		{[]string{"coordinator", "--id", "c1", "--dir", "x", "--listen-fds", "3,3"}, `--listen-fds "3,3": want UDP,TCP`},
		// A coordinator address without a port is refused at once, not retried for 30 s.
		{[]string{"report", "--coordinator", "127.0.0.1", "--cohort", "1"}, `"127.0.0.1": want HOST:PORT`},
		{[]string{"status", "--coordinator", "127.0.0.1:7001,10.0.0.2"}, `"10.0.0.2": want HOST:PORT`},
		{[]string{"join", "--coordinator", "127.0.0.1", "--cohort", "1", "--key", "k", "--data", "a", "--contributor", "x"}, `"127.0.0.1": want HOST:PORT`},
		{[]string{"proposals", "--coordinator", "127.0.0.1:http"}, `port "http"`},
	} {
		start := time.Now()
		_, err := run(t, tc.args...)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("%v: took %s, want the error at once", tc.args, d.Round(time.Millisecond))
		}
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
