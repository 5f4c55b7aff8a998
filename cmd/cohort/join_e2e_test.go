package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
)

// TestCohortOfProcesses runs the mission across real processes: three `cohort coordinator` and
// four `cohort join`. The leader coordinator is SIGKILLed mid-run and a peer is killed and
// restarted (it resumes from its checkpoint); the cohort finishes, every peer ends on the same
// model, and the model's validation accuracy (as the coordinators measured it) is within 1 point
// of the same cohort's without the faults (the mean over the last three rounds, on the 1,000
// embedded test images) and, in both runs, at least cohortAccuracyFloorBP: two runs that fail
// alike agree too.
//
// The cohort trains with the defaults every proposal gets (spec.Defaults' codec and outer step):
// both runs reach 79–81 % and agree within a few tenths. (With plain topk:0.05+q4, whose chunks
// starve the classifier and biases — see compress.Setting.Matrices — the fault-free run reached
// only 65–70 % and the faulty one, with fewer outer steps, did better.) Every round is scored:
// the test logs each round's accuracy, and why a round went unscored.
func TestCohortOfProcesses(t *testing.T) {
	if testing.Short() {
		// Measured at 44–67 s on 2 cores, most of it the run with the faults: `make e2e` runs it.
		t.Skip("two cohorts of real processes, about a minute; run without -short (make e2e)")
	}
	faulty := cohortOfProcesses(t, true)
	clean := cohortOfProcesses(t, false)
	t.Logf("validation accuracy with faults %.2f %%, without %.2f %%", float64(faulty)/100, float64(clean)/100)
	if d := faulty - clean; d < -100 || d > 100 {
		t.Fatalf("accuracy with faults %.2f %%, without %.2f %%: more than 1 point apart", float64(faulty)/100, float64(clean)/100)
	}
	for _, run := range []struct {
		name string
		bp   int
	}{{"with faults", faulty}, {"without", clean}} {
		if run.bp < cohortAccuracyFloorBP {
			t.Errorf("accuracy %s %.2f %%, below the floor of %.2f %%", run.name, float64(run.bp)/100, float64(cohortAccuracyFloorBP)/100)
		}
	}
}

// cohortAccuracyFloorBP is the least validation accuracy (basis points, the mean of the last
// three rounds) TestCohortOfProcesses accepts from either run. Measured in eight runs:
// 79.50–80.60 % with the faults, 79.73 % without (the same each time); the round before the
// last three is at 76–78 %. 75 % leaves four points for a slow machine's unlucky run and still fails
// a cohort that stopped learning early (round 3 of these runs is at 67–69 %).
const cohortAccuracyFloorBP = 7500

// cohortOfProcesses runs the cohort, with or without the faults, and returns the final model's
// validation accuracy in basis points.
func cohortOfProcesses(t *testing.T, faults bool) int {
	pc := startProcCluster(t, 3)
	dir := t.TempDir()
	run := func(args ...string) string {
		out, err := exec.Command(pc.bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cohort %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("shard", "--out", filepath.Join(dir, "shards"), "--peers", "4", "--partition", "iid", "--seed", "3")
	names := []string{"alice", "bob", "carol", "dave"}
	for _, n := range names {
		run("keygen", "--out", filepath.Join(dir, n+".key"))
	}
	ctx := context.Background()
	began := time.Now()
	defer func() { t.Logf("faults %v: the cohort took %s", faults, time.Since(began).Round(100*time.Millisecond)) }()
	cl := memberClient(t, pc.addrs(), "proposer")
	eventually(t, 20*time.Second, "cluster up", func() error { return cl.EnsureRegistered(ctx, "proposer", nil) })
	// The operators grant the proposer a vote (a fresh key weighs nothing) and fund the pool.
	if out := pc.operator(t, "grant", "--member", cl.ID(), "--votes", "1"); !strings.Contains(out, "granted 1 votes") {
		t.Fatalf("grant: %s", out)
	}
	if out := pc.operator(t, "fund", "--amount", "800"); !strings.Contains(out, "the treasury holds 800") {
		t.Fatalf("fund: %s", out)
	}
	const rounds = 8
	res, err := cl.Submit(ctx, &consensus.ProposeBody{Name: "e2e", Model: "mlp:784-32-10", Dataset: "fashion-mnist",
		Params: consensus.Hyperparams{InnerSteps: 60, Rounds: rounds, Codec: spec.Defaults.Codec,
			OuterLR: spec.Defaults.OuterLR, OuterMomentum: spec.Defaults.OuterMomentum, ErrorDecay: spec.Defaults.ErrorDecay}, RewardPool: 800,
		MinMembers: 4, QuorumBP: 2000, ThresholdBP: 5000, VotingPeriodMs: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Submit(ctx, &consensus.VoteBody{Proposal: res.ID, Yes: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "proposal passed", func() error {
		r, err := cl.Query(ctx, protocol.Query{What: protocol.QueryProposal, ID: res.ID})
		if err != nil || r.Proposals[0].Cohort == 0 {
			return fmt.Errorf("not yet: %v", err)
		}
		return nil
	})
	type joiner struct {
		cmd *exec.Cmd
		out string
	}
	start := func(i int) *joiner {
		out := filepath.Join(dir, fmt.Sprintf("%s-%d.out", names[i], time.Now().UnixNano()))
		f, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(pc.bin, "join", "--coordinator", strings.Join(pc.addrs(), ","), "--cohort", "1",
			"--key", filepath.Join(dir, names[i]+".key"), "--data", filepath.Join(dir, "shards", fmt.Sprintf("peer-%d", i+1)),
			"--contributor", names[i], "--batch", "32", "--checkpoint", filepath.Join(dir, names[i]+".ckpt"))
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				b, _ := os.ReadFile(out)
				t.Logf("output of %s:\n%s", names[i], tail(string(b), 3000))
			}
		})
		return &joiner{cmd: cmd, out: out}
	}
	joiners := []*joiner{start(0), start(1), start(2), start(3)}
	current := func() uint32 {
		r, err := cl.Query(ctx, protocol.Query{What: protocol.QueryCohort, ID: 1})
		if err != nil {
			return 0
		}
		return r.Cohort.CurrentRound
	}
	bob := joiners[1]
	if faults {
		eventually(t, 60*time.Second, "round 2", func() error {
			if current() < 2 {
				return fmt.Errorf("round %d", current())
			}
			return nil
		})
		joiners[1].cmd.Process.Kill() // bob's machine dies
		joiners[1].cmd.Wait()
		eventually(t, 60*time.Second, "round 3", func() error {
			if current() < 3 {
				return fmt.Errorf("round %d", current())
			}
			return nil
		})
		if l := pc.leader(cl); l != nil {
			pc.kill(l) // the leader coordinator dies
		}
		bob = start(1) // bob comes back and resumes from his checkpoint
	}
	peers := []*joiner{joiners[0], bob, joiners[2], joiners[3]}
	for i, j := range peers {
		done := make(chan error, 1)
		go func() { done <- j.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				b, _ := os.ReadFile(j.out)
				t.Fatalf("%s: %v\n%s", names[i], err, b)
			}
		case <-time.After(3 * time.Minute):
			b, _ := os.ReadFile(j.out)
			t.Fatalf("%s did not finish:\n%s", names[i], b)
		}
	}
	final := regexp.MustCompile(`cohort 1 done: .* final model ([0-9a-f]+)`)
	var hashes []string
	for i, j := range peers {
		b, _ := os.ReadFile(j.out)
		m := final.FindStringSubmatch(string(b))
		if m == nil {
			t.Fatalf("%s printed no final model:\n%s", names[i], b)
		}
		hashes = append(hashes, m[1])
		if faults && i == 1 && (!strings.Contains(string(b), "joined cohort 1") || !strings.Contains(string(b), "resumed from checkpoint")) {
			t.Fatalf("restarted bob did not rejoin from his checkpoint:\n%s", b)
		}
	}
	for _, h := range hashes[1:] {
		if h != hashes[0] {
			t.Fatalf("peers ended on different models: %v", hashes)
		}
	}
	// The replicated record agrees with the peers (a follower may answer a moment behind).
	eventually(t, 20*time.Second, "the cohort recorded done", func() error {
		r, err := cl.Query(ctx, protocol.Query{What: protocol.QueryCohort, ID: 1, Linearizable: true})
		if err != nil || r.Cohort.Status != consensus.CohortDone || !strings.HasPrefix(fmt.Sprintf("%x", r.Cohort.ModelHash), hashes[0]) {
			return fmt.Errorf("cohort record %+v (err %v), peers hold %s", r.Cohort, err, hashes[0])
		}
		return nil
	})
	// The leader scores the last round just after it closes, with the final model's accuracy.
	var acc int
	eventually(t, 90*time.Second, "last round scored", func() error {
		q, err := cl.Query(ctx, protocol.Query{What: protocol.QueryRounds, ID: 1})
		if err != nil || len(q.Rounds) != rounds {
			return fmt.Errorf("rounds: %v", err)
		}
		last := q.Rounds[rounds-1]
		if !last.Scored || !last.Metrics.Measured {
			return fmt.Errorf("round %d not scored yet", rounds)
		}
		var by []string
		acc = 0
		n := 0
		for i, r := range q.Rounds {
			// accuracy (receipts, left out of the aggregate)
			note := fmt.Sprintf("(%d,%d)", len(r.Receipts), len(r.Excluded))
			if !r.Metrics.Measured {
				by = append(by, "-"+note)
				if r.ScoreNote != "" {
					t.Logf("faults %v: round %d: %s", faults, r.Number, r.ScoreNote)
				}
				continue
			}
			by = append(by, fmt.Sprintf("%.1f%s", float64(r.Metrics.ValAccuracyBP)/100, note))
			if i >= rounds-3 {
				acc += int(r.Metrics.ValAccuracyBP)
				n++
			}
		}
		if n == 0 {
			return fmt.Errorf("none of the last three rounds measured")
		}
		acc /= n
		t.Logf("faults %v: validation accuracy by round %s", faults, strings.Join(by, " "))
		return nil
	})
	return acc
}
