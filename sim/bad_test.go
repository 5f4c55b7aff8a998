package sim

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/peer"
	"github.com/cohortlab/cohort/protocol"
)

// rounds is a peer.Coordinators that knows one round, whose deadline a new leader may move once.
type rounds struct {
	peer.Coordinators // nil: only Round and Upload are called
	mu                sync.Mutex
	r                 consensus.Round
	moved             consensus.Round // the round after the move; zero: never moved
	reads             int
	uploadedAt        time.Time
}

func (c *rounds) Round(context.Context, uint64, uint32) (consensus.Round, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reads++
	if c.reads > 1 && c.moved.Number != 0 {
		return c.moved, nil
	}
	return c.r, nil
}

func (c *rounds) Upload(context.Context, string, protocol.Upload, []byte) (protocol.AggregateReply, []byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.uploadedAt = time.Now()
	return protocol.AggregateReply{}, nil, false, nil
}

// TestLateUploads: a straggler's upload goes out just past the round's upload deadline, as the
// round records it when that passes: a deadline a new leader moved later is waited for too.
func TestLateUploads(t *testing.T) {
	// Upload deadline = opened + ¾ of the round: start + 150ms, or start + 800ms once moved; the
	// upload goes 500ms after it.
	for _, tc := range []struct {
		name  string
		move  bool
		after time.Duration
	}{
		{"deadline kept", false, 650 * time.Millisecond},
		{"deadline moved", true, 1300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			at := func(d time.Duration) int64 { return start.Add(d).UnixMilli() }
			c := &rounds{r: consensus.Round{Number: 1, Status: consensus.RoundOpen, OpenedAt: at(-600 * time.Millisecond), Deadline: at(400 * time.Millisecond)}}
			if tc.move {
				c.moved = c.r
				c.moved.OpenedAt, c.moved.Deadline = at(0), at(1067*time.Millisecond)
			}
			if _, _, _, err := (late{c}).Upload(context.Background(), "agg", protocol.Upload{Cohort: 1, Round: 1}, nil); err != nil {
				t.Fatal(err)
			}
			if got := c.uploadedAt.Sub(start); got < tc.after-50*time.Millisecond {
				t.Fatalf("uploaded %v after the start, want ≥ %v (past the upload deadline)", got, tc.after)
			}
		})
	}
}

// stepper is a peer.Worker whose update is fixed and whose outer steps may fail.
type stepper struct {
	peer.Worker // nil: only Update and the outer steps are called
	fail        bool
}

func (s *stepper) Update(uint32) []float32 { return []float32{1, 2} }

func (s *stepper) OuterStep([]float32) error {
	if s.fail {
		return context.Canceled
	}
	return nil
}

func (s *stepper) OuterStepCarry(agg []float32) error { return s.OuterStep(agg) }

// TestTampered: a planted peer's rule sees the round, the honest update and the aggregate applied
// last (nil before the first; an outer step that failed applied nothing).
func TestTampered(t *testing.T) {
	type call struct {
		round       uint32
		delta, prev []float32
	}
	var calls []call
	w := &stepper{}
	tw := &tampered{Worker: w, rule: func(round uint32, delta, prev []float32) []float32 {
		calls = append(calls, call{round, delta, append([]float32(nil), prev...)})
		return []float32{0, 0}
	}}
	if got := tw.Update(1); got[0] != 0 || len(calls) != 1 || calls[0].round != 1 || calls[0].delta[1] != 2 || calls[0].prev != nil {
		t.Fatalf("round 1: update %v, calls %+v", got, calls)
	}
	if err := tw.OuterStep([]float32{5, 6}); err != nil {
		t.Fatal(err)
	}
	w.fail = true
	if err := tw.OuterStepCarry([]float32{7, 8}); err == nil {
		t.Fatal("the failing outer step succeeded")
	}
	tw.Update(3)
	if p := calls[1].prev; calls[1].round != 3 || len(p) != 2 || p[0] != 5 || p[1] != 6 {
		t.Fatalf("round 3: rule called with %+v, want prev = the aggregate of the last applied round", calls[1])
	}
}
