package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// rawTerminal reports a byte or rune a terminal would act on, or that reorders text.
func rawTerminal(b []byte) bool {
	return bytes.ContainsAny(b, "\x1b\x07\r\t\x00") || bytes.ContainsRune(b, '\u202e') || bytes.ContainsRune(b, '\u200d') || !utf8.Valid(b)
}

// TestPrintingEscapesNames: proposal names, models, codecs and statuses, and everything a
// coordinator's status carries, reach the terminal with their control and format characters
// escaped (golden).
func TestPrintingEscapesNames(t *testing.T) {
	ps := []consensus.Proposal{
		{ID: 1, Name: "fmnist-mlp", Model: "mlp:784-256-10", Params: consensus.Hyperparams{Rounds: 30, Codec: "q8"}, RewardPool: 1000,
			Status: consensus.ProposalOpen, Deadline: 1_800_000_000_000, Votes: []consensus.Vote{{Member: "a", Yes: true}}},
		{ID: 2, Name: "\x1b]0;owned\x07\x1b[2Jwipe", Model: "mlp\u202e01-652-487", Params: consensus.Hyperparams{Rounds: 1, Codec: "q8\x1b[K"},
			Status: "open\r\x1b[1A", Deadline: 1_800_000_000_000, Cohort: 3},
		{ID: 3, Name: "tab\there zero\u200dwidth bad\xff back\\slash", Model: "mlp", Status: consensus.ProposalPassed, Deadline: 1_800_000_000_000},
	}
	var b bytes.Buffer
	if err := writeProposals(&b, ps); err != nil {
		t.Fatal(err)
	}
	golden(t, "proposals_hostile.txt", b.Bytes())
	if rawTerminal(b.Bytes()) {
		t.Errorf("proposals table carries raw control or format characters:\n%q", b.String())
	}

	b.Reset()
	printStatus(&b, protocol.Status{ID: "c1\x1b[31m", Addr: "127.0.0.1:7001", Role: "leader\u202e", Term: "3", LeaderID: "c1",
		LeaderAddr: "127.0.0.1:7001", LastIndex: "42", AppliedIndex: 42, StateHash: "abc", // shorter than 16: no panic
		Servers: []protocol.ServerInfo{{ID: "c1", Addr: "127.0.0.1:7001\x1b[0m"}}, Cohorts: []protocol.CohortBrief{{ID: 1, Proposal: 2, Status: "running\x1b]0;x\x07", Members: 3}}})
	printStatus(&b, protocol.Status{Addr: "10.0.0.2:7001", Role: "unreachable: \x1b[5mdial failed"})
	golden(t, "status_hostile.txt", b.Bytes())
	if rawTerminal(b.Bytes()) {
		t.Errorf("status carries raw control or format characters:\n%q", b.String())
	}
}

func TestStatusListsAggregators(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, protocol.Status{ID: "a1", Addr: "127.0.0.1:7004", Role: "Follower", Aggregator: true, Term: "2", LeaderID: "c1",
		LeaderAddr: "127.0.0.1:7001", StateHash: "abc", Servers: []protocol.ServerInfo{{ID: "c1", Addr: "127.0.0.1:7001", Suffrage: consensus.Voter},
			{ID: "a1", Addr: "127.0.0.1:7004", Suffrage: consensus.Nonvoter}, {ID: "c2", Addr: "127.0.0.1:7002"}}})
	out := b.String()
	for _, want := range []string{"a1 at 127.0.0.1:7004: Follower (aggregator)", "voters: c1=127.0.0.1:7001 c2=127.0.0.1:7002\n", "aggregators: a1=127.0.0.1:7004\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}
