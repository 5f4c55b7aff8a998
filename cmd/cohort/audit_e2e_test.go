package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator"
	"github.com/cohortlab/cohort/coordinator/audit"
	"github.com/cohortlab/cohort/coordinator/report"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
)

// TestAuditFinishedCohort: three members train a two-round cohort of a tiny MLP on shards written
// by `cohort shard`, on a one-node in-process cluster validating on the embedded test split. Then
// `cohort audit --coordinator` retrains every coalition of their shards with the cohort's own
// settings: its table names every contributor, its JSON gives each the share of the ledger that
// `cohort report` gives and a finite Shapley value. Shards that leave out a contributor who was
// paid, name one the cohort does not know, or are not the data a contributor registered are
// refused with one line naming it. (About 6 s on 2 cores: in process, so -short runs it too.)
func TestAuditFinishedCohort(t *testing.T) {
	const model = "mlp:784-16-10"
	names := []string{"alice", "bob", "carol"}
	addr, shards, rounds := finishedCohort(t, model, names, []string{"--partition", "dirichlet:1"}, consensus.Hyperparams{InnerSteps: 10, Rounds: 2})
	// The retrainings start from the cohort's own θ_0.
	theta0, err := trainer.NewModel(model, 0, spec.InitSeed(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkInitialModel(cohortRecords{proposal: consensus.Proposal{ID: 1}, cohort: consensus.Cohort{ID: 1}, rounds: rounds}, theta0); err != nil {
		t.Error(err)
	}
	if theta0.Params()[0]++; checkInitialModel(cohortRecords{cohort: consensus.Cohort{ID: 1}, rounds: rounds}, theta0) == nil {
		t.Error("another θ_0 passed for the cohort's")
	}

	out, err := run(t, "report", "--coordinator", addr, "--cohort", "1", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rep report.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	if rep.Totals.Paid == 0 {
		t.Fatalf("the ledger paid nothing: %+v", rep.Totals)
	}
	paid := map[string]report.Contributor{}
	for _, c := range rep.Contributors {
		paid[c.Name] = c
	}
	// `cohort balance`: each member's contributor earned what the report says it was paid (the
	// only cohort), read by two point queries.
	for _, name := range names {
		out, err := run(t, "balance", "--coordinator", addr, "--key", filepath.Join(filepath.Dir(shards), name+".key"), "--json")
		if err != nil {
			t.Fatal(err)
		}
		var b balanceSummary
		if err := json.Unmarshal([]byte(out), &b); err != nil {
			t.Fatalf("balance: %v\n%s", err, out)
		}
		if len(b.Contributors) != 1 || b.Contributors[0].Name != name || b.Earned != paid[name].Payout || b.VoteWeight != b.Earned+b.Granted {
			t.Errorf("balance of %s: %+v, the report paid %d", name, b, paid[name].Payout)
		}
	}
	if _, err := run(t, "balance", "--coordinator", addr, "--member", "no-such-member", "--timeout", "5s"); err == nil ||
		!strings.Contains(err.Error(), "no-such-member") || strings.Contains(err.Error(), "\n") {
		t.Errorf("an unknown member: %v", err)
	}

	// Refused: a paid contributor without its shard, a shard of a stranger, another's data.
	for _, tc := range []struct {
		shards string
		want   string
	}{
		{"alice=" + filepath.Join(shards, "alice") + ",bob=" + filepath.Join(shards, "bob"), "no shard for carol"},
		{"alice=" + filepath.Join(shards, "alice") + ",bob=" + filepath.Join(shards, "bob") + ",carol=" + filepath.Join(shards, "carol") +
			",dave=" + filepath.Join(shards, "bob"), `"dave", who is not a contributor of cohort 1`},
		{"alice=" + filepath.Join(shards, "alice") + ",bob=" + filepath.Join(shards, "carol") + ",carol=" + filepath.Join(shards, "bob"), "not the data it trained the cohort on"},
	} {
		_, err := run(t, "audit", "--coordinator", addr, "--cohort", "1", "--shards", tc.shards)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("--shards %s: got %v, want one line containing %q", tc.shards, err, tc.want)
		}
	}
	if _, err := run(t, "audit", "--coordinator", addr, "--cohort", "1", "--shards", shards+"/alice,bob="+shards+"/bob"); err == nil {
		t.Errorf("a shard without its contributor's name: no error")
	}

	began := time.Now()
	out, err = run(t, "audit", "--coordinator", addr, "--cohort", "1", "--shards", shards, "--json")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("audit --json took %s", time.Since(began).Round(10*time.Millisecond))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var s auditSummary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if s.CohortID != 1 || s.Model != model || s.Rounds != 2 || s.InnerSteps != 10 || s.Method != string(audit.MethodExact) ||
		s.Retrainings != 7 || len(s.Contributors) != 3 || s.Utility != "accuracy" || s.Paid != rep.Totals.Paid || s.Pool != 900 || s.RoundsScored != 2 {
		t.Fatalf("summary %+v", s)
	}
	if !(s.Retrained.Loss < s.Initial.Loss) {
		t.Errorf("the whole cohort retrained: val_loss %.4f, θ_0's %.4f", s.Retrained.Loss, s.Initial.Loss)
	}
	seen := map[string]bool{}
	for _, c := range s.Contributors { // in join order
		want, ok := paid[c.Name]
		if !ok || seen[c.Name] {
			t.Fatalf("contributor %q: the report has %v", c.Name, rep.Contributors)
		}
		seen[c.Name] = true
		if c.Payout != want.Payout || math.Abs(100*c.Share-want.SharePaid) > 1e-9 {
			t.Errorf("%s: audit payout %d, share %.4f %%; report %d, %.4f %%", c.Name, c.Payout, 100*c.Share, want.Payout, want.SharePaid)
		}
		for _, x := range []float64{c.Shapley, c.ShapleyAccuracy, c.LOO, c.LOOAccuracy, c.ShapleyNormalised} {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				t.Errorf("%s: %+v is not finite", c.Name, c)
			}
		}
		t.Logf("%s: %d samples, Shapley loss %+.4f, accuracy %+.2f pt, paid %d (%.1f %%)", c.Name, c.ShardSize, c.Shapley, 100*c.ShapleyAccuracy, c.Payout, 100*c.Share)
	}

	out, err = run(t, "audit", "--coordinator", addr, "--cohort", "1", "--shards",
		"alice="+filepath.Join(shards, "alice")+",bob="+filepath.Join(shards, "bob")+",carol="+filepath.Join(shards, "carol"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cohort audit:\n%s", out)
	for _, want := range append([]string{"3 contributors of cohort 1 (proposal 1)", "2 rounds scored, pool 900", "retrained: 7 coalitions"}, names...) {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// finishedCohort has one member per name train cohort 1 (model, params) on a one-node in-process
// cluster that validates on the embedded data (1,000 samples of the test split, or the embedded
// play's validation text for a GPT; hashed in the proposal), each on its shard written by `cohort
// shard` with shardArgs (the embedded training set unless they give --data) and renamed to
// SHARDS/NAME. It returns when every round is scored: the cluster's address, SHARDS and the rounds.
func finishedCohort(t *testing.T, model string, names []string, shardArgs []string, params consensus.Hyperparams) (string, string, []consensus.Round) {
	t.Helper()
	addr := startCoordinatorWith(t, func(c *coordinator.Config) { c.Validation.Data = trainer.EmbeddedData })
	bg := context.Background()
	cl := memberClient(t, []string{addr}, "proposer")
	eventually(t, 10*time.Second, "register", func() error { return cl.EnsureRegistered(bg, "proposer", nil) })
	fundAndGrant(t, addr, 900, cl)
	val, err := trainer.ValidationFor(model, trainer.EmbeddedData, 1000)
	if err != nil {
		t.Fatal(err)
	}
	vh := val.Hash()
	res, err := cl.Submit(bg, &consensus.ProposeBody{Name: "audited", Model: model, Dataset: "fashion-mnist", ValidationHash: vh[:],
		Params: params, RewardPool: 900, MinMembers: uint32(len(names)), QuorumBP: 5000, ThresholdBP: 5000, VotingPeriodMs: 300})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Submit(bg, &consensus.VoteBody{Proposal: res.ID, Yes: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "cohort 1", func() error {
		_, err := cl.Query(bg, protocol.Query{What: protocol.QueryCohort, ID: 1})
		return err
	})

	dir := t.TempDir()
	shards := filepath.Join(dir, "shards")
	if _, err := run(t, append([]string{"shard", "--out", shards, "--peers", fmt.Sprint(len(names)), "--seed", "5"}, shardArgs...)...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bg)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	joined := make(chan error, len(names))
	for i, name := range names {
		if err := os.Rename(filepath.Join(shards, fmt.Sprintf("peer-%d", i+1)), filepath.Join(shards, name)); err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(dir, name+".key")
		if _, err := run(t, "keygen", "--out", key); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			app := newApp()
			var out bytes.Buffer
			app.Writer, app.ErrWriter = &out, &out
			err := app.RunContext(ctx, []string{"cohort", "join", "--coordinator", addr, "--cohort", "1", "--key", key,
				"--data", filepath.Join(shards, name), "--contributor", name})
			if err != nil {
				err = fmt.Errorf("%s: join: %w\n%s", name, err, out.String())
			}
			joined <- err
		}()
	}
	for range names {
		select {
		case err := <-joined:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Minute):
			t.Fatal("the cohort did not finish")
		}
	}
	var rounds []consensus.Round
	eventually(t, 30*time.Second, "every round scored", func() error {
		q, err := cl.Query(bg, protocol.Query{What: protocol.QueryRounds, ID: 1, Linearizable: true})
		if err != nil {
			return err
		}
		if len(q.Rounds) != int(params.Rounds) || !q.Rounds[len(q.Rounds)-1].Scored {
			return fmt.Errorf("%d rounds, not all scored", len(q.Rounds))
		}
		rounds = q.Rounds
		return nil
	})
	return addr, shards, rounds
}

// TestAuditFinishedTextCohort: two members train a byte-level GPT on text shards, and the audit
// of the finished cohort retrains them as text (its windows of the model's context), against the
// fingerprints the members registered.
func TestAuditFinishedTextCohort(t *testing.T) {
	if testing.Short() {
		t.Skip("a text cohort trained and audited; run without -short (make e2e)")
	}
	text := writePlayText(t, t.TempDir(), "play.txt", 40_000)
	addr, shards, _ := finishedCohort(t, "gpt:1-16-2-32", []string{"ann", "ben"}, []string{"--data", text, "--partition", "contiguous"},
		consensus.Hyperparams{InnerSteps: 4, Rounds: 2})
	out, err := run(t, "audit", "--coordinator", addr, "--cohort", "1", "--shards", shards, "--json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var s auditSummary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if s.Utility != "loss" || s.Retrainings != 3 || len(s.Contributors) != 2 {
		t.Fatalf("summary %+v", s)
	}
	for _, c := range s.Contributors {
		if c.ShardSize < 10_000 || math.IsNaN(c.Shapley) || math.IsInf(c.Shapley, 0) {
			t.Errorf("%s: %+v", c.Name, c)
		}
		t.Logf("%s: %d bytes, Shapley loss %+.4f, paid %d (%.1f %%)", c.Name, c.ShardSize, c.Shapley, c.Payout, 100*c.Share)
	}
}
