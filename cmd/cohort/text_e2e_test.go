package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/report"
	"github.com/cohortlab/cohort/protocol"
)

// TestTextCohortOfProcesses: a GPT cohort across real processes. Three `cohort coordinator`
// hold a small speaker-tagged text (--data) for validation; the proposal is made with the same
// text (`cohort propose --data`, which records its validation hash); `cohort shard` cuts the
// text by speaker for two `cohort join`, each with its text shard. The cohort completes on one
// model, every round is scored and paid (`cohort report`), and the final model exports and
// generates text.
func TestTextCohortOfProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("a text cohort of real processes; run without -short (make e2e)")
	}
	began := time.Now()
	dir := t.TempDir()
	text := writePlayText(t, dir, "play.txt", 16000)
	pc := startProcCluster(t, 3, "--data", text)
	bin := pc.bin
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cohort %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	addrs := strings.Join(pc.addrs(), ",")
	if out := run("shard", "--data", text, "--out", filepath.Join(dir, "shards"), "--peers", "2", "--partition", "speaker"); !strings.Contains(out, "peer-2") {
		t.Fatalf("shard: %s", out)
	}
	keys := map[string]string{}
	for _, n := range []string{"proposer", "alice", "bob"} {
		keys[n] = filepath.Join(dir, n+".key")
		out := run("keygen", "--out", keys[n])
		_, id, _ := strings.Cut(strings.TrimSpace(out), "\nid ")
		keys[n+"-id"] = id
	}
	eventually(t, 20*time.Second, "proposer registered", func() error {
		_, err := exec.Command(bin, "register", "--coordinator", addrs, "--key", keys["proposer"]).CombinedOutput()
		return err
	})
	if out := pc.operator(t, "grant", "--member", keys["proposer-id"], "--votes", "1"); !strings.Contains(out, "granted 1 votes") {
		t.Fatalf("grant: %s", out)
	}
	if out := pc.operator(t, "fund", "--amount", "1000"); !strings.Contains(out, "the treasury holds 1000") {
		t.Fatalf("fund: %s", out)
	}
	const model, rounds = "gpt:1-32-2-32", 2
	run("propose", "--coordinator", addrs, "--key", keys["proposer"], "--name", "play-lm", "--model", model, "--data", text,
		"--rounds", fmt.Sprint(rounds), "--inner-steps", "5", "--reward-pool", "1000", "--min-members", "2",
		"--quorum", "0.2", "--voting-period", "1s")
	run("vote", "--coordinator", addrs, "--key", keys["proposer"], "--proposal", "1", "--yes")
	cl := memberClient(t, pc.addrs(), "reader")
	ctx := context.Background()
	eventually(t, 20*time.Second, "cohort formed", func() error {
		r, err := cl.Query(ctx, protocol.Query{What: protocol.QueryProposal, ID: 1})
		if err != nil || r.Proposals[0].Cohort == 0 {
			return fmt.Errorf("not yet: %v", err)
		}
		return nil
	})
	type joiner struct {
		cmd *exec.Cmd
		out string
	}
	var joiners []joiner
	for i, n := range []string{"alice", "bob"} {
		out := filepath.Join(dir, n+".out")
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "join", "--coordinator", addrs, "--cohort", "1", "--key", keys[n],
			"--data", filepath.Join(dir, "shards", fmt.Sprintf("peer-%d", i+1)), "--contributor", n, "--batch", "8")
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				b, _ := os.ReadFile(out)
				t.Logf("output of %s:\n%s", n, tail(string(b), 3000))
			}
		})
		joiners = append(joiners, joiner{cmd, out})
	}
	final := regexp.MustCompile(`cohort 1 done: .* final model ([0-9a-f]+)`)
	var hashes []string
	for _, j := range joiners {
		done := make(chan error, 1)
		go func() { done <- j.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				b, _ := os.ReadFile(j.out)
				t.Fatalf("join: %v\n%s", err, b)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("a member did not finish")
		}
		b, _ := os.ReadFile(j.out)
		m := final.FindStringSubmatch(string(b))
		if m == nil || !strings.Contains(string(b), "joined cohort 1") {
			t.Fatalf("no final model:\n%s", b)
		}
		hashes = append(hashes, m[1])
	}
	if hashes[0] != hashes[1] {
		t.Fatalf("members ended on different models: %v", hashes)
	}
	// Every round is scored on the text's validation split and the pool is paid out.
	var rep report.Report
	eventually(t, 60*time.Second, "rounds scored and paid", func() error {
		out, err := exec.Command(bin, "report", "--coordinator", addrs, "--cohort", "1", "--format", "json").Output()
		if err != nil {
			return err
		}
		rep = report.Report{}
		if err := json.Unmarshal(out, &rep); err != nil {
			return err
		}
		if rep.Status != string(consensus.CohortDone) || rep.Totals.RoundsScored != rounds || rep.Totals.Paid == 0 {
			return fmt.Errorf("status %s, %d rounds scored, %d paid", rep.Status, rep.Totals.RoundsScored, rep.Totals.Paid)
		}
		return nil
	})
	if !strings.HasPrefix(rep.Dataset, "play.txt (validation: last 10 %") {
		t.Errorf("dataset %q", rep.Dataset)
	}
	for _, c := range rep.Contributors {
		if c.Samples == 0 || c.Payout == 0 {
			t.Errorf("contributor %+v: no samples or no payout", c)
		}
	}
	if len(rep.Contributors) != 2 {
		t.Errorf("%d contributors, want alice and bob", len(rep.Contributors))
	}
	// The model exports and writes text.
	st := filepath.Join(dir, "lm.safetensors")
	run("export", "--coordinator", addrs, "--cohort", "1", "--key", keys["alice"], "--out", st)
	out := run("generate", "--model", st, "--tokens", "60", "--prompt", "ROMEO:\n")
	if !strings.HasPrefix(out, "ROMEO:\n") || len(out) < 40 {
		t.Fatalf("generate printed %q", out)
	}
	t.Logf("text cohort of processes took %s; %d rounds scored, %d paid; sample %q", time.Since(began).Round(100*time.Millisecond),
		rep.Totals.RoundsScored, rep.Totals.Paid, out)
}
