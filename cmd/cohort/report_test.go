package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/report"
	"github.com/cohortlab/cohort/transport"
)

// TestReportCommand runs `cohort report` against an in-process coordinator holding a cohort with
// one member, in every format, with --plot.
func TestReportCommand(t *testing.T) {
	addr := startCoordinator(t)
	cl := cohortOf(t, addr, 1000, "fmnist-mlp", "mlp:784-256-10", consensus.Hyperparams{InnerSteps: 50, Rounds: 10, Codec: "topk:0.01+q4"})
	bg := context.Background()
	if _, err := cl.Submit(bg, &consensus.JoinBody{Cohort: 1, Contributors: []consensus.ContributorData{
		{Name: "alice", Fingerprint: make([]byte, 32), Samples: 321}}}); err != nil {
		t.Fatal(err)
	}

	out, err := run(t, "report", "--coordinator", addr, "--cohort", "1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cohort 1: fmnist-mlp (proposal 1), forming, round 0 of 10, 1 members", "pool 1000: paid 0",
		"CONTRIBUTOR", "alice", "321", "ROUND", "(none)"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	dir := filepath.Join(t.TempDir(), "charts")
	out, err = run(t, "report", "--coordinator", addr, "--cohort", "1", "--format", "json", "--plot", dir)
	if err != nil {
		t.Fatal(err)
	}
	var r report.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if r.Cohort != 1 || r.Name != "fmnist-mlp" || len(r.Contributors) != 1 || r.Contributors[0].Samples != 321 {
		t.Errorf("report %+v", r)
	}
	for _, f := range []string{"loss.svg", "shares.svg"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || !strings.Contains(string(b), "<svg") {
			t.Errorf("%s: %v", f, err)
		}
	}

	for format, header := range map[string][]string{"csv": report.ContributorsCSVHeader, "csv-rounds": report.RoundsCSVHeader} {
		out, err = run(t, "report", "--coordinator", addr, "--cohort", "1", "--format", format)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
		if err != nil || len(rows) == 0 || fmt.Sprint(rows[0]) != fmt.Sprint(header) {
			t.Errorf("--format %s: %v\n%s", format, err, out)
		}
	}

	if _, err := run(t, "report", "--coordinator", addr, "--cohort", "9", "--timeout", "5s"); err == nil ||
		!strings.Contains(err.Error(), "cohort 9") || strings.Contains(err.Error(), "\n") {
		t.Errorf("unknown cohort: %v", err)
	}
}

func nodeIdentity(t *testing.T, name string) *transport.Identity {
	seed := sha256.Sum256([]byte(name))
	id, err := transport.NewIdentity(ed25519.NewKeyFromSeed(seed[:]))
	if err != nil {
		t.Fatal(err)
	}
	return id
}
