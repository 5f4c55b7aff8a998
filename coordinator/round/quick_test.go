package round

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cohortlab/cohort/consensus"
)

// TestNextInvariants drives a cohort through random ticks, receipts, replica progress, leader
// changes and dead coordinators, and checks what the leader may never do: open a round while one
// is open or before the replica caught up, close one the replica has not applied, abandon one
// before AbortAfter past its deadline, extend a round twice, move a slice to a coordinator that
// did not answer or away from one that did, or set a deadline in the past.
func TestNextInvariants(t *testing.T) {
	kinds := map[Kind]int{}
	defer func() { t.Logf("actions: %v", kinds) }()
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 7))
		h := &harness{now: t0, self: "c1", coords: []string{"c1", "c2", "c3"}, params: 49152, minMembers: 1,
			suspects: map[string]int{}, distrusted: map[string]bool{}}
		h.cfg = Config{Timeout: 20 * time.Second}.WithDefaults()
		h.cohort = consensus.Cohort{ID: 1, Status: consensus.CohortRunning, Members: []consensus.CohortMember{{Member: "a"}, {Member: "b"}}}
		h.live = h.coords
		h.leader = Leadership{Leader: "c1", Since: t0.Add(-time.Hour)}
		extendedOnce := map[uint32]int{}
		for range 400 {
			switch rng.IntN(8) {
			case 0, 1:
				h.now = h.now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
			case 2:
				if r := h.last(); r != nil && r.Status == consensus.RoundOpen && rng.IntN(2) == 0 {
					h.applied = r.Number
				}
			case 3:
				if r := h.last(); r != nil && r.Status == consensus.RoundOpen && len(r.Receipts) < len(r.Participants) {
					r.Receipts = append(r.Receipts, consensus.Receipt{Member: r.Participants[len(r.Receipts)], At: h.now.UnixMilli()})
				}
			case 4:
				if rng.IntN(4) == 0 {
					h.leader = Leadership{Leader: "c2", Since: h.now}
				}
			case 5:
				h.live = nil
				for _, c := range h.coords {
					if c == h.self || rng.IntN(3) > 0 {
						h.live = append(h.live, c)
					}
				}
			case 6:
				if r := h.last(); r != nil && r.Status == consensus.RoundClosed {
					r.Scored = true
				}
			}
			before := h.last()
			var prev consensus.Round
			if before != nil {
				prev = *before
				prev.Slices = slices.Clone(prev.Slices)
			}
			applied, now := h.applied, h.now.UnixMilli()
			a := h.step(func() {})
			kinds[a.Kind]++
			open := before != nil && prev.Status == consensus.RoundOpen
			switch a.Kind {
			case Open:
				if open || applied != h.cohort.CurrentRound-1 {
					t.Fatalf("seed %d: opened round %d with round %+v open or the replica at %d", seed, a.Round, prev, applied)
				}
			case Close:
				if !open || applied != prev.Number {
					t.Fatalf("seed %d: closed round %d, replica at %d", seed, a.Round, applied)
				}
			case Abandon:
				if !open || now <= prev.Deadline+h.cfg.AbortAfter.Milliseconds() {
					t.Fatalf("seed %d: abandoned round %d at %d, deadline %d", seed, a.Round, now, prev.Deadline)
				}
			case Extend:
				if extendedOnce[a.Round]++; extendedOnce[a.Round] > 1 {
					t.Fatalf("seed %d: extended round %d twice", seed, a.Round)
				}
			case Reassign:
				for _, m := range a.Moves {
					if slices.Contains(h.live, m.From) || !slices.Contains(h.live, m.To) || prev.Slices[m.Slice].Aggregator != m.From {
						t.Fatalf("seed %d: move %+v with live %v", seed, m, h.live)
					}
				}
			}
			if (a.Kind == Open || a.Kind == Extend || a.Kind == Reassign) && a.Deadline <= now {
				t.Fatalf("seed %d: %v with deadline %d at %d", seed, a.Kind, a.Deadline, now)
			}
		}
	}
}
