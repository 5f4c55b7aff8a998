package peer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/trainer/nn"
)

// params is the test model's parameter count.
func params(p *Peer) int { return len(p.Worker().Global()) }

// takeRound has p take part in the round f has open, and returns its report.
func takeRound(t *testing.T, p *Peer, reports *[]Report) Report {
	t.Helper()
	n := len(*reports)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done, err := p.step(ctx)
	if err != nil || done {
		t.Fatalf("step: done %v, err %v", done, err)
	}
	p.receipts.Wait()
	if len(*reports) != n+1 {
		t.Fatalf("%d reports after the round, want %d", len(*reports), n+1)
	}
	return (*reports)[n]
}

func recording(reports *[]Report) func(*Config) {
	return func(c *Config) { c.OnRound = func(r Report) { *reports = append(*reports, r) } }
}

// TestRoundApplied: the peer trains H steps, sends each slice to its aggregator, applies the
// aggregate — bit for bit as a replica from the same θ does — and claims the round with a receipt;
// the residual keeps what the messages did not carry. Aggregators that answer the upload with the
// aggregate (protocol.MsgExchange) are not asked for it again.
func TestRoundApplied(t *testing.T) {
	for _, exchange := range []bool{false, true} {
		t.Run(fmt.Sprintf("exchange=%v", exchange), func(t *testing.T) { testRoundApplied(t, exchange) })
	}
}

func testRoundApplied(t *testing.T, exchange bool) {
	f := newFake(t, "q8")
	f.exchange = exchange
	var reports []Report
	p := newTestPeer(t, f, recording(&reports))
	m := mirror(t, p)
	f.open(1, hashOf(p.Worker().Global()), params(p), "agg-1", "agg-2")

	rep := takeRound(t, p, &reports)

	if _, err := m.InnerSteps(testH); err != nil {
		t.Fatal(err)
	}
	delta := m.PseudoGradient(nil)
	if err := m.OuterStep(f.aggregate(1, params(p))); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Worker().Global(), m.Global()) {
		t.Fatal("θ after the round differs from a replica's")
	}
	if !rep.Applied || rep.Samples != testH*testBatch || rep.PayloadBytes == 0 || !sameHash(hashOf(m.Global()), rep.ModelHash) {
		t.Fatalf("report %+v", rep)
	}
	if len(f.receipts) != 1 {
		t.Fatalf("%d receipts, want 1", len(f.receipts))
	}
	rc := f.receipts[0]
	if rc.Round != 1 || rc.SamplesUsed != testH*testBatch || rc.BytesSent != uint64(rep.PayloadBytes) || !sameHash(rc.ModelHashAfter, rep.ModelHash) {
		t.Fatalf("receipt %+v for report %+v", rc, rep)
	}
	// Error feedback: what was sent plus what is left is the update.
	for i, sl := range f.rounds[0].Slices {
		sent := f.uploads[upKey{1, i, sl.Aggregator}]
		got := make([]float32, len(sent))
		for j := range sent {
			got[j] = sent[j] + p.fb.e[int(sl.Start)+j]
		}
		if !near(got, delta[sl.Start:sl.End]) {
			t.Fatalf("slice %d: sent + residual %v, want the update %v", i, got, delta[sl.Start:sl.End])
		}
	}
	if p.Stats.Rounds != 1 || p.Stats.Samples != testH*testBatch || p.Stats.PayloadBytes != int64(rep.PayloadBytes) {
		t.Fatalf("totals %+v", p.Stats)
	}
	want := 2 // one per slice
	if exchange {
		want = 0
	}
	if f.aggregateCalls != want {
		t.Fatalf("%d aggregate calls, want %d", f.aggregateCalls, want)
	}
}

// TestRoundAbandoned: the aggregate comes back aborted — the round is abandoned: θ stays, no
// receipt, the local progress is dropped and the residual gets the uploads back.
func TestRoundAbandoned(t *testing.T) {
	f := newFake(t, "q8")
	var reports []Report
	p := newTestPeer(t, f, recording(&reports))
	m := mirror(t, p)
	theta0 := slices.Clone(p.Worker().Global())
	f.open(1, hashOf(theta0), params(p), "agg-1", "agg-2")
	f.aborted[1] = true

	rep := takeRound(t, p, &reports)

	if _, err := m.InnerSteps(testH); err != nil {
		t.Fatal(err)
	}
	delta := m.PseudoGradient(nil)
	if rep.Applied || rep.PayloadBytes == 0 || len(f.receipts) != 0 {
		t.Fatalf("report %+v, %d receipts: want abandoned, uploads sent, no receipt", rep, len(f.receipts))
	}
	if !slices.Equal(p.Worker().Global(), theta0) {
		t.Fatal("θ changed in an abandoned round")
	}
	if d := p.Worker().PseudoGradient(nil); !slices.Equal(d, make([]float32, len(d))) {
		t.Fatal("the local progress of an abandoned round is kept")
	}
	if !near(p.fb.e, delta) {
		t.Fatalf("residual %v, want the whole update %v back", p.fb.e, delta)
	}
	if p.st.ahead.steps != 0 {
		t.Fatalf("%d steps taken ahead of an abandoned round", p.st.ahead.steps)
	}
}

// TestReceiptOnlyWhenEveryUploadAccepted: one slice's upload is refused (late): the round is
// applied from the others' updates, but this peer claims nothing, and that slice's residual keeps
// its whole update.
func TestReceiptOnlyWhenEveryUploadAccepted(t *testing.T) {
	f := newFake(t, "q8")
	f.beforeUpload = func(agg string, u protocol.Upload) error {
		if u.Slice == 1 {
			return remote(protocol.MsgUpload, fmt.Errorf("upload: slice %d closed at its deadline: %w", u.Slice, protocol.ErrLate))
		}
		return nil
	}
	var reports []Report
	p := newTestPeer(t, f, recording(&reports))
	m := mirror(t, p)
	f.open(1, hashOf(p.Worker().Global()), params(p), "agg-1", "agg-2")

	rep := takeRound(t, p, &reports)

	if _, err := m.InnerSteps(testH); err != nil {
		t.Fatal(err)
	}
	delta := m.PseudoGradient(nil)
	if err := m.OuterStep(f.aggregate(1, params(p))); err != nil {
		t.Fatal(err)
	}
	if !rep.Applied || !slices.Equal(p.Worker().Global(), m.Global()) {
		t.Fatalf("report %+v: want the round applied as a replica applies it", rep)
	}
	if len(f.receipts) != 0 {
		t.Fatalf("receipt %+v for a round one of whose slices was refused", f.receipts[0])
	}
	sl := f.rounds[0].Slices[1]
	if !slices.Equal(p.fb.e[sl.Start:sl.End], delta[sl.Start:sl.End]) {
		t.Fatal("the refused slice's residual does not hold its whole update")
	}
}

// TestSliceReassigned: an aggregator stops answering and the round names another for its slice:
// the peer resends its upload there and fetches the aggregate from there; the round is applied and
// claimed.
func TestSliceReassigned(t *testing.T) {
	for _, tc := range []struct {
		name   string
		moveOn string // the call the silent aggregator does not answer
	}{
		{"aggregate", "aggregate"}, // accepted the upload, then fell silent
		{"upload", "upload"},       // silent from the start
		// The silent aggregator was the leader: while the others elect a new one, no coordinator
		// answers for the round, and the peer keeps trying until the round names the new
		// aggregator (it took the failed query for a closed round, and gave the round up).
		{"upload during an election", "election"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, "q8")
			move := func(round uint32, slice int) error { // the leader's live check moves the slice
				f.rounds[round-1].Slices[slice].Aggregator = "agg-3"
				f.rounds[round-1].Reassignments++
				return errSilent
			}
			if tc.moveOn == "aggregate" {
				f.beforeAggregate = func(agg string, q protocol.AggregateRequest) error {
					if agg == "agg-1" {
						return move(q.Round, q.Slice)
					}
					return nil
				}
			} else if tc.moveOn == "upload" {
				f.beforeUpload = func(agg string, u protocol.Upload) error {
					if agg == "agg-1" {
						return move(u.Round, u.Slice)
					}
					return nil
				}
			} else {
				queries := 0
				f.beforeUpload = func(agg string, u protocol.Upload) error {
					if agg == "agg-1" {
						return errSilent
					}
					return nil
				}
				f.beforeRound = func(number uint32) error {
					if queries++; queries == 3 { // the new leader moves the slice
						move(number, 0)
					}
					if queries <= 3 {
						return fmt.Errorf("%w: no leader", protocol.ErrUnavailable)
					}
					return nil
				}
			}
			var reports []Report
			p := newTestPeer(t, f, recording(&reports))
			m := mirror(t, p)
			f.open(1, hashOf(p.Worker().Global()), params(p), "agg-1", "agg-2")

			rep := takeRound(t, p, &reports)

			if f.uploads[upKey{1, 0, "agg-3"}] == nil || f.served[upKey{1, 0, "agg-3"}] == nil {
				t.Fatal("slice 0 was not sent to, or fetched from, its new aggregator")
			}
			if _, err := m.InnerSteps(testH); err != nil {
				t.Fatal(err)
			}
			if err := m.OuterStep(f.aggregate(1, params(p))); err != nil {
				t.Fatal(err)
			}
			if !rep.Applied || !slices.Equal(p.Worker().Global(), m.Global()) || len(f.receipts) != 1 {
				t.Fatalf("report %+v, %d receipts: want applied and claimed", rep, len(f.receipts))
			}
		})
	}
}

// TestResume: a peer saves a checkpoint after its round; a new peer on the same file resumes at
// that round with the same θ and residual, and takes the next round without fetching the model.
func TestResume(t *testing.T) {
	f := newFake(t, "q8")
	file := filepath.Join(t.TempDir(), "peer.ckpt")
	var reports []Report
	checkpointed := func(c *Config) { recording(&reports)(c); c.Checkpoint = file }
	p := newTestPeer(t, f, checkpointed)
	if p.Resumed {
		t.Fatal("resumed without a checkpoint")
	}
	f.open(1, hashOf(p.Worker().Global()), params(p), "agg-1", "agg-2")
	rep := takeRound(t, p, &reports)
	f.close(1, rep.ModelHash[:])

	q := newTestPeer(t, f, checkpointed) // joining again is harmless
	if !q.Resumed || q.st.last != 1 {
		t.Fatalf("resumed %v at round %d, want round 1", q.Resumed, q.st.last)
	}
	if !slices.Equal(q.Worker().Global(), p.Worker().Global()) || !slices.Equal(q.Worker().Momentum(), p.Worker().Momentum()) || !slices.Equal(q.fb.e, p.fb.e) {
		t.Fatal("the resumed peer's θ, momentum or residual differs")
	}
	f.open(2, rep.ModelHash[:], params(q), "agg-1", "agg-2")
	if rep := takeRound(t, q, &reports); !rep.Applied || rep.Round != 2 || f.fetches != 0 {
		t.Fatalf("report %+v after %d model fetches: want round 2 applied from the checkpoint", rep, f.fetches)
	}
}

// counting records the worker calls of a peer.
type counting struct {
	Worker
	mu    sync.Mutex
	calls []string
}

func (c *counting) note(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, s)
}

func (c *counting) InnerSteps(h int) (trainer.InnerStats, error) {
	c.note(fmt.Sprint("inner ", h))
	return c.Worker.InnerSteps(h)
}

func (c *counting) Discard() { c.note("discard"); c.Worker.Discard() }

func (c *counting) Reset(theta, momentum []float32) error {
	c.note("reset")
	return c.Worker.Reset(theta, momentum)
}

func (c *counting) OuterStep(agg []float32) error { c.note("outer"); return c.Worker.OuterStep(agg) }

func (c *counting) OuterStepCarry(agg []float32) error {
	c.note("outer carry")
	return c.Worker.OuterStepCarry(agg)
}

// TestStepsAhead: after a round the peer takes the next round's H steps before it opens; they
// count when it opens from the θ they were taken from, and are dropped when it opens from
// another (the peer re-syncs θ and trains H steps afresh). With overlap, τ of them are taken while
// the update travels.
func TestStepsAhead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		overlap int
		other   bool // round 2 opens from another θ
		want    []string
	}{
		{"kept", 0, false, []string{"inner 4", "outer", "inner 4", "inner 0", "outer", "inner 4"}},
		{"dropped", 0, true, []string{"inner 4", "outer", "inner 4", "reset", "discard", "inner 4", "outer", "inner 4"}},
		{"overlap kept", 1, false, []string{"inner 4", "inner 1", "outer carry", "inner 3", "inner 0", "inner 1", "outer carry", "inner 3"}},
		{"overlap dropped", 1, true, []string{"inner 4", "inner 1", "outer carry", "inner 3", "reset", "discard", "inner 4", "inner 1", "outer carry", "inner 3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, "fp32")
			var reports []Report
			var w *counting
			p := newTestPeer(t, f, func(c *Config) {
				recording(&reports)(c)
				c.Overlap = tc.overlap
				c.Worker = func(x Worker) Worker { w = &counting{Worker: x}; return w }
			})
			theta0 := slices.Clone(p.Worker().Global())
			f.open(1, hashOf(theta0), params(p), "agg-1")
			rep := takeRound(t, p, &reports)
			f.close(1, rep.ModelHash[:])
			from := rep.ModelHash[:]
			if tc.other {
				other := slices.Clone(theta0)
				other[0] += 0.5
				from = f.addModel(other, make([]float32, len(other)))
			}
			f.open(2, from, params(p), "agg-1")
			rep2 := takeRound(t, p, &reports)
			if !slices.Equal(w.calls, tc.want) {
				t.Fatalf("worker calls %q, want %q", w.calls, tc.want)
			}
			if !rep2.Applied || rep2.Samples != testH*testBatch {
				t.Fatalf("round 2 report %+v: want applied with H steps' samples", rep2)
			}
			if wantFetches := map[bool]int{false: 0, true: 1}[tc.other]; f.fetches != wantFetches {
				t.Fatalf("%d model fetches, want %d", f.fetches, wantFetches)
			}
			if u := f.uploads[upKey{2, 0, "agg-1"}]; u == nil {
				t.Fatal("round 2 was not uploaded")
			}
		})
	}
}

// TestCohortDone: a finished cohort ends the peer's run on the final model: fetched when this
// peer's θ differs (the last rounds passed it by), kept when it has it.
func TestCohortDone(t *testing.T) {
	for _, differs := range []bool{true, false} {
		t.Run(fmt.Sprint("differs=", differs), func(t *testing.T) {
			f := newFake(t, "fp32")
			p := newTestPeer(t, f, nil)
			final := slices.Clone(p.Worker().Global())
			if differs {
				final[1] -= 0.25
			}
			f.cohort.Status, f.cohort.ModelHash = consensus.CohortDone, f.addModel(final, make([]float32, len(final)))
			if err := p.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.Worker().Global(), final) {
				t.Fatal("the peer did not finish on the final model")
			}
			if want := map[bool]int{true: 1, false: 0}[differs]; f.fetches != want {
				t.Fatalf("%d model fetches, want %d", f.fetches, want)
			}
		})
	}
}

// TestLearningRateFollowsTheCohortStep: the proposal's inner schedule is applied on the cohort's
// timeline: a peer whose first round is round 3 trains at the rates of steps 2·H to 3·H−1, as
// every replica that trained from round 1 does, not from the start of its warm-up.
func TestLearningRateFollowsTheCohortStep(t *testing.T) {
	f := newFake(t, "q8")
	f.prop.Params.InnerLR, f.prop.Params.Warmup, f.prop.Params.Schedule = "0.01", testH*testRounds/2, spec.ScheduleCosine
	var reports []Report
	p := newTestPeer(t, f, recording(&reports))
	m := mirror(t, p)
	f.open(3, hashOf(p.Worker().Global()), params(p), "agg-1", "agg-2")

	takeRound(t, p, &reports)

	if got, want := p.Worker().Step(), 3*testH; got != want {
		t.Fatalf("the peer's next step is %d, want %d", got, want)
	}
	m.SeekStep(2 * testH)
	if _, err := m.InnerSteps(testH); err != nil {
		t.Fatal(err)
	}
	if err := m.OuterStep(f.aggregate(3, params(p))); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Worker().Global(), m.Global()) {
		t.Fatal("θ after round 3 differs from a replica's that trained at the cohort's steps")
	}
	ts, err := spec.Of(f.prop)
	if err != nil {
		t.Fatal(err)
	}
	if ts.Inner.LRAt(2*testH) == ts.Inner.LRAt(0) {
		t.Fatal("the test's schedule does not tell step 0 from step 2·H")
	}
}

// TestBindBeforeCommit: Bind sees the cohort's model before anything is committed; its error
// refuses the join with nothing registered, and what it returns is the data the peer trains on
// and registers.
func TestBindBeforeCommit(t *testing.T) {
	f := newFake(t, "q8")
	p, err := New(Config{Name: "member", Coordinators: f, Cohort: testCohort, Batch: testBatch, Logger: quiet(),
		Bind: func(model nn.Model) (trainer.Source, []Contributor, error) {
			return nil, nil, fmt.Errorf("shard: %w: %s does not take it", ErrDataMismatch, model.Name())
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Join(context.Background()); !errors.Is(err, ErrDataMismatch) || !strings.Contains(err.Error(), testModel) {
		t.Fatalf("join: %v, want ErrDataMismatch naming %s", err, testModel)
	}
	if f.registered != 0 || f.joins != 0 {
		t.Fatalf("a refused bind registered %d times and joined %d times", f.registered, f.joins)
	}
	var bound string
	f2 := newFake(t, "q8")
	p = newTestPeer(t, f2, func(c *Config) {
		c.Source, c.Contributors = nil, nil
		c.Bind = func(model nn.Model) (trainer.Source, []Contributor, error) {
			bound = model.Name()
			return testSource(t), []Contributor{{Name: "bob", Fingerprint: []byte{2}, Samples: 9}}, nil
		}
	})
	if bound != testModel || f2.joins != 1 || p.cfg.Contributors[0].Name != "bob" || p.cfg.Source == nil {
		t.Fatalf("bound to %q, %d joins, contributors %+v", bound, f2.joins, p.cfg.Contributors)
	}
}
