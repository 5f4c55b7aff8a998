package peer

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"testing"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/trainer"
)

func TestStateNext(t *testing.T) {
	open := func(n uint32, who ...string) consensus.Round {
		return consensus.Round{Number: n, Status: consensus.RoundOpen, Participants: who}
	}
	closed := open(3, "a", "me")
	closed.Status = consensus.RoundClosed
	running := func(current uint32) *consensus.Cohort {
		return &consensus.Cohort{Status: consensus.CohortRunning, CurrentRound: current}
	}
	for _, tc := range []struct {
		name     string
		last     uint32
		cohort   *consensus.Cohort
		rounds   []consensus.Round
		want     verdict
		wantLast uint32
		err      bool
	}{
		{"no cohort", 2, nil, nil, pollAgain, 2, true},
		{"done", 2, &consensus.Cohort{Status: consensus.CohortDone, CurrentRound: 5}, []consensus.Round{open(5, "me")}, finish, 2, false},
		{"no round yet", 0, running(0), nil, pollAgain, 0, false},
		{"seen already", 3, running(3), []consensus.Round{open(3, "me")}, pollAgain, 3, false},
		{"no round in the answer", 2, running(3), nil, pollAgain, 2, false},
		{"closed before seen", 2, running(3), []consensus.Round{closed}, pollAgain, 3, false},
		{"not a participant", 2, running(3), []consensus.Round{open(3, "a", "b")}, pollAgain, 3, false},
		{"participant", 2, running(3), []consensus.Round{open(3, "a", "me", "z")}, takePart, 3, false},
		{"a round skipped", 1, running(4), []consensus.Round{open(4, "me")}, takePart, 4, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := state{me: "me", last: tc.last}
			got, r, err := s.next(tc.cohort, tc.rounds)
			if (err != nil) != tc.err || got != tc.want || s.last != tc.wantLast {
				t.Fatalf("next = %v, round %d, err %v; last %d: want %v, last %d, err %v", got, r.Number, err, s.last, tc.want, tc.wantLast, tc.err)
			}
			if got == takePart && r.Number != tc.rounds[0].Number {
				t.Fatalf("takes part in round %d, want %d", r.Number, tc.rounds[0].Number)
			}
		})
	}
}

func TestStateAhead(t *testing.T) {
	h1, h2 := [32]byte{1}, [32]byte{2}
	for _, tc := range []struct {
		name      string
		ahead     ahead
		modelHash [32]byte
		stale     bool
		owed      int
	}{
		{"none", ahead{}, h1, false, 4},
		{"from this θ", ahead{steps: 3, of: h1}, h1, false, 1},
		{"all H", ahead{steps: 4, of: h1}, h1, false, 0},
		{"from another θ", ahead{steps: 3, of: h1}, h2, true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := state{h: 4, ahead: tc.ahead}
			r := consensus.Round{ModelHash: tc.modelHash[:]}
			if got := s.stale(r); got != tc.stale {
				t.Fatalf("stale = %v, want %v", got, tc.stale)
			}
			if got := s.owed(); got != tc.owed {
				t.Fatalf("owed = %d, want %d", got, tc.owed)
			}
			if tc.stale {
				if n := s.dropAhead(); n != tc.ahead.steps || s.owed() != 4 {
					t.Fatalf("dropAhead = %d, then owed %d: want %d, 4", n, s.owed(), tc.ahead.steps)
				}
			}
		})
	}
}

// TestStateAccounting: the steps taken ahead are part of the round's H: their samples, losses and
// time add to those taken after it opened.
func TestStateAccounting(t *testing.T) {
	s := state{h: 4, batch: 8, rounds: 10}
	s.overlapped(trainer.InnerStats{Steps: 1, MeanLoss: 2, Samples: 8}, 0.5) // τ = 1 while the update travelled
	s.applied([32]byte{7})
	if n := s.stepsAhead(consensus.Round{Number: 1}, [32]byte{7}); n != 3 {
		t.Fatalf("stepsAhead = %d, want 3", n)
	}
	s.tookAhead(trainer.InnerStats{Steps: 3, MeanLoss: 1, Samples: 24}, 1.5)
	st, compute := s.trained(trainer.InnerStats{}, 0.25) // nothing owed once the round opens
	if st.Steps != 4 || st.Samples != 32 || st.MeanLoss != (2+3)/4.0 || compute != 2.25 {
		t.Fatalf("trained = %+v, compute %v: want 4 steps, 32 samples, loss 1.25, 2.25 s", st, compute)
	}
	if s.ahead != (ahead{}) {
		t.Fatalf("steps ahead left after the round: %+v", s.ahead)
	}
	x := newExchange(consensus.Round{Number: 2, Slices: []consensus.SliceAssignment{{Aggregator: "a"}, {Aggregator: "b"}}})
	x.accepted(0, "a", protocol.Upload{}, make([]byte, 10), nil)
	x.accepted(1, "b", protocol.Upload{}, make([]byte, 5), nil)
	rep := s.report(x.r, st, compute, x, true, [32]byte{9})
	want := Report{Round: 2, Rounds: 10, Applied: true, TrainLoss: 1.25, Samples: 32, PayloadBytes: 15, ComputeSeconds: 2.25, ModelHash: [32]byte{9}}
	if rep != want {
		t.Fatalf("report %+v, want %+v", rep, want)
	}
	if s.totals != (Totals{Rounds: 1, Samples: 32, PayloadBytes: 15, ComputeSeconds: 2.25}) {
		t.Fatalf("totals %+v", s.totals)
	}
	if rep := s.report(x.r, st, compute, x, false, [32]byte{9}); rep.ModelHash != ([32]byte{}) || rep.Applied {
		t.Fatalf("an abandoned round reports %+v", rep)
	}
}

func TestStateOverlapAndStepsAhead(t *testing.T) {
	h := [32]byte{3}
	for _, tc := range []struct {
		name    string
		tau     int
		round   uint32
		ahead   ahead
		theta   [32]byte
		overlap int
		steps   int
	}{
		{"no overlap", 0, 1, ahead{of: h}, h, 0, 4},
		{"overlap", 2, 1, ahead{steps: 2, of: h}, h, 2, 2},
		{"last round: nothing to carry to", 2, 5, ahead{of: h}, h, 0, 0},
		{"not applied here", 0, 1, ahead{of: h}, [32]byte{4}, 0, 0},
		{"all H ahead already", 0, 1, ahead{steps: 4, of: h}, h, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := state{h: 4, rounds: 5, tau: tc.tau, ahead: tc.ahead}
			r := consensus.Round{Number: tc.round}
			if got := s.overlap(r); got != tc.overlap {
				t.Fatalf("overlap = %d, want %d", got, tc.overlap)
			}
			if got := s.stepsAhead(r, tc.theta); got != tc.steps {
				t.Fatalf("stepsAhead = %d, want %d", got, tc.steps)
			}
		})
	}
}

// TestExchangeFollow: after an aggregator failed to answer, the round as recorded now says where
// the slice's aggregate is and whether the upload must go there again.
func TestExchangeFollow(t *testing.T) {
	round := func(agg string) consensus.Round {
		return consensus.Round{Status: consensus.RoundOpen, Slices: []consensus.SliceAssignment{{Aggregator: agg}}}
	}
	for _, tc := range []struct {
		name       string
		acceptedBy string // "" = the upload was not accepted
		now        string
		resend     bool
		from       string
	}{
		{"not moved", "a", "a", false, "a"},
		{"moved after accepting", "a", "b", true, "b"},
		{"moved, nothing accepted", "", "b", false, "b"},
		{"not moved, nothing accepted", "", "a", false, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newExchange(round("a"))
			if tc.acceptedBy != "" {
				x.accepted(0, tc.acceptedBy, protocol.Upload{}, []byte{1}, nil)
			}
			if got := x.follow(0, round(tc.now)); got != tc.resend || x.fetchFrom(0) != tc.from {
				t.Fatalf("follow = %v, fetch from %s: want %v, %s", got, x.fetchFrom(0), tc.resend, tc.from)
			}
			if tc.resend {
				x.resent(0, tc.now)
				if x.follow(0, round(tc.now)) || x.fetchFrom(0) != tc.now || !x.receipt() {
					t.Fatal("a resent upload is not recorded with its new aggregator")
				}
			}
		})
	}
}

func TestExchangeClosed(t *testing.T) {
	h0, h1 := []byte{0}, []byte{1}
	for _, tc := range []struct {
		name      string
		status    consensus.RoundStatus
		newHash   []byte
		abandoned bool
		err       error
	}{
		{"open", consensus.RoundOpen, nil, false, nil},
		{"closed with θ unchanged", consensus.RoundClosed, h0, true, nil},
		{"closed with a new θ", consensus.RoundClosed, h1, false, ErrClosedEarly},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newExchange(consensus.Round{ModelHash: h0})
			abandoned, err := x.closed(consensus.Round{Status: tc.status, NewModelHash: tc.newHash})
			if abandoned != tc.abandoned || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("closed = %v, %v: want %v, %v", abandoned, err, tc.abandoned, tc.err)
			}
		})
	}
}

// TestExchangeOutcome: applied when every aggregate came back; claimed when every upload was
// accepted; the two are independent.
func TestExchangeOutcome(t *testing.T) {
	for _, tc := range []struct {
		name               string
		accepted, received []bool
		complete, receipt  bool
	}{
		{"all", []bool{true, true}, []bool{true, true}, true, true},
		{"one refused", []bool{true, false}, []bool{true, true}, true, false},
		{"one aggregate missing", []bool{true, true}, []bool{false, true}, false, true},
		{"nothing", []bool{false, false}, []bool{false, false}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newExchange(consensus.Round{Slices: make([]consensus.SliceAssignment, 2)})
			for i := range 2 {
				if tc.accepted[i] {
					x.accepted(i, "a", protocol.Upload{}, []byte{1, 2}, nil)
				}
				if tc.received[i] {
					x.received(i, 0)
				}
			}
			if x.complete() != tc.complete || x.receipt() != tc.receipt {
				t.Fatalf("complete %v, receipt %v: want %v, %v", x.complete(), x.receipt(), tc.complete, tc.receipt)
			}
		})
	}
}

// TestFeedbackLosesNothing: the residual after a message is what the message did not carry; an
// abandoned round gives the message back, and a refused one never took it: either way the residual
// is β·e + Δ.
func TestFeedbackLosesNothing(t *testing.T) {
	for _, tc := range []struct {
		codec string
		decay float32
	}{{"fp32", 1}, {"fp16", 1}, {"q8", 0.9}} {
		t.Run(tc.codec, func(t *testing.T) {
			set, err := compress.Parse(tc.codec)
			if err != nil {
				t.Fatal(err)
			}
			sl := consensus.SliceAssignment{Start: 2, End: 8}
			e0 := []float32{9, 9, 0.5, -0.25, 1, 0, 2, -3, 9}
			delta := []float32{0.1, 0.2, -0.3, 0.4, 0.05, -1}
			want := slices.Clone(e0)
			compress.Accumulate(want[2:8], e0[2:8], delta, tc.decay)

			f := feedback{e: slices.Clone(e0), decay: tc.decay, codec: set, shape: compress.Shape{}}
			msg, dec, err := f.encode(3, 1, sl, delta)
			if err != nil {
				t.Fatal(err)
			}
			if len(msg) == 0 || len(dec) != len(delta) {
				t.Fatalf("message of %d bytes decoding to %d values", len(msg), len(dec))
			}
			if !slices.Equal(f.e, want) {
				t.Fatalf("refused: residual %v, want %v", f.e, want)
			}
			f.sent(sl, dec)
			for j := range dec {
				if got := f.e[2+j] + dec[j]; !near([]float32{got}, []float32{want[2+j]}) {
					t.Fatalf("sent: residual + message %v, want %v", got, want[2+j])
				}
			}
			f.giveBack(sl, dec)
			if !near(f.e, want) || f.e[0] != 9 || f.e[8] != 9 {
				t.Fatalf("given back: residual %v, want %v", f.e, want)
			}
			f.reset()
			if !slices.Equal(f.e, make([]float32, len(e0))) {
				t.Fatal("reset left a residual")
			}
		})
	}
}

// TestStateIsPure: the round state reads no clock, starts no goroutine and does no I/O; the
// driver does.
func TestStateIsPure(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "state.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		switch p {
		case "time", "net", "os", "sync", "context", "math/rand", "math/rand/v2", "log/slog":
			t.Errorf("state.go imports %s", p)
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if g, ok := n.(*ast.GoStmt); ok {
			t.Errorf("state.go starts a goroutine at offset %d", g.Pos())
		}
		return true
	})
}
