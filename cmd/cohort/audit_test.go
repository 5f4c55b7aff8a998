package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/coordinator/audit"
)

func TestAuditRefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "--partition", "zipf", "--data", "embedded"}, "unknown kind"},
		{[]string{"audit", "--peers", "65"}, "--peers 65"},
		{[]string{"audit", "--peers", "21", "--method", "exact"}, "at most 20 peers"},
		{[]string{"audit", "--method", "guess"}, "--method"},
		{[]string{"audit", "--model", "resnet"}, "unknown model"},
		{[]string{"audit", "--codec", "gzip"}, "codec"},
		{[]string{"audit", "--permutations", "0"}, "--permutations 0"},
		{[]string{"audit", "--tolerance", "2"}, "--tolerance 2"},
		{[]string{"audit", "--repeats", "0"}, "--repeats 0"},
		{[]string{"audit", "--repeats", "17"}, "--repeats 17"},
		{[]string{"audit", "--link", "10xbit,5ms"}, "link"},
		{[]string{"audit", "stray"}, "unexpected argument"},
		{[]string{"audit", "--shards", "./shards"}, "--shards goes with --coordinator"},
		{[]string{"audit", "--cohort", "1"}, "--cohort goes with --coordinator"},
		{[]string{"audit", "--coordinator", "127.0.0.1:1", "--shards", "a=b"}, "needs --cohort"},
		{[]string{"audit", "--coordinator", "127.0.0.1:1", "--cohort", "1"}, "needs --shards"},
		{[]string{"audit", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--shards", "a=b", "--peers", "3", "--rounds", "2"}, "--peers, --rounds: a simulation's settings"},
		{[]string{"audit", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--shards", "a=b,a=c"}, "a is given twice"},
		{[]string{"audit", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--shards", "a=b,c"}, `"c": want NAME=DIR`},
		{[]string{"audit", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--shards", "/nonexistent/shards"}, "neither a directory of shards"},
		{[]string{"audit", "--coordinator", "127.0.0.1:1", "--cohort", "1", "--shards", "a=b", "--method", "guess"}, "--method"},
		{[]string{"audit", "--coordinator", "nowhere", "--cohort", "1", "--shards", "a=b"}, "--coordinator"},
	} {
		_, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: got %v, want one line containing %q", tc.args, err, tc.want)
		}
	}
}

// A two-peer cohort of two rounds, then its three retrainings, twice (in two batch orders): the
// JSON names both contributors, their normalised Shapley values and ledger shares each sum to 1,
// and the two runs' agreement is measured.
func TestAuditJSON(t *testing.T) {
	out, err := run(t, "--log-level", "error", "audit", "--peers", "2", "--coordinators", "1", "--model", "mlp:784-16-10", "--rounds", "2",
		"--inner-steps", "4", "--partition", "iid", "--val-samples", "200", "--seed", "3", "--repeats", "2", "--json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var s auditSummary
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if s.Method != string(audit.MethodExact) || s.Retrainings != 6 || len(s.Contributors) != 2 || s.Pool == 0 {
		t.Fatalf("summary %+v", s)
	}
	if s.Repeats != 2 || s.Agreement == nil || s.RunL1 < 0 || s.RunL1 > 2 {
		t.Errorf("repeats %d, agreement %+v, the ledger against one run: L1 %v", s.Repeats, s.Agreement, s.RunL1)
	}
	if o := s.Order; o == nil || o.Pairs != 1 || o.Resolved > 1 || o.Agreeing > o.Resolved || o.Z != 2 {
		t.Errorf("resolved order %+v, want 1 pair, at most 1 resolved and agreeing, z 2", o)
	}
	var shap, share float64
	for _, c := range s.Contributors {
		shap += c.ShapleyNormalised
		share += c.Share
	}
	if !(near(shap, 1) || shap == 0) || !near(share, 1) {
		t.Errorf("normalised Shapley values sum to %v, shares to %v", shap, share)
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

func TestPrintAudit(t *testing.T) {
	rho := 0.5
	s := auditSummary{Peers: 2, Model: "mlp", Partition: "iid", Rounds: 1, InnerSteps: 1, Codec: "q8", Method: "sampled", Permutations: 4, Truncated: 1,
		Spearman: &rho, L1: 0.25, Contributors: []auditRow{
			{Name: "peer-1", ShardSize: 10, LOO: 0.1, Shapley: 0.2, ShapleySE: 0.01, ShapleyNormalised: 0.75, Share: 0.625, OverPaid: -0.125},
			{Name: "peer-\x1b[2J", ShardSize: 10, LOO: -0.1, Shapley: -0.1, ShapleyNormalised: 0, Share: 0.375, OverPaid: 0.375},
		}}
	var b bytes.Buffer
	if err := printAudit(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sampled, 4 permutations (1 truncated)", "+0.2000 ± 0.0100", "75.0%", "-12.5 pt", "+37.5 pt",
		"Spearman (Shapley, ledger shares): 0.500", "L1 (normalised Shapley, ledger shares): 0.250"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "\x1b") {
		t.Errorf("a contributor's name reached the terminal unescaped:\n%s", b.String())
	}
	s.Repeats, s.Agreement, s.RunSpearman, s.RunL1 = 3, &audit.Agreement{Spearman: &rho, L1: 0.1}, &rho, 0.3
	s.Order = &audit.Order{Pairs: 15, Resolved: 12, Agreeing: 9, Z: 2}
	s.Contributors[0].ShapleyAccuracy, s.Contributors[0].ShapleyAccuracySE = 0.02, 0.005
	b.Reset()
	if err := printAudit(&b, s); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"3 runs of the retrainings", "+2.00 ± 0.50 pt", "one run against another (the ground truth's own resolution): Spearman 0.500, L1 0.100",
		"the ledger against one run: Spearman 0.500, L1 0.300",
		"pairs of contributors the retrainings tell apart (values more than 2 standard errors apart): 12 of 15; the ledger orders 9 of them the same way"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
	s.Repeats, s.Agreement, s.RunSpearman = 0, nil, nil
	s.Spearman = nil
	b.Reset()
	if err := printAudit(&b, s); err != nil || !strings.Contains(b.String(), "undefined") {
		t.Errorf("no Spearman: %v\n%s", err, b.String())
	}
}

// A conflict that an environment variable set (meant for another command, perhaps) says so.
func TestAuditConflictNamesTheEnvironment(t *testing.T) {
	t.Setenv("COHORT_COHORT", "1")
	if _, err := run(t, "audit"); err == nil || !strings.Contains(err.Error(), "--cohort (COHORT_COHORT is set) goes with --coordinator") {
		t.Errorf("COHORT_COHORT set, a simulation: %v", err)
	}
	t.Setenv("COHORT_COORDINATOR", "127.0.0.1:1")
	if _, err := run(t, "audit", "--peers", "3", "--shards", "a=b"); err == nil || !strings.Contains(err.Error(), "--coordinator (COHORT_COORDINATOR is set) audits a finished cohort") {
		t.Errorf("COHORT_COORDINATOR set, --peers given: %v", err)
	}
}
