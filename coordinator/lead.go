package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/round"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// recentRounds is how many of a cohort's latest rounds a tick reads: what the round engine looks
// at (the open round, the last closed ones' receipts for the deadline), the replica's next rounds
// to apply (further behind, it fetches θ instead), and the rounds waiting to be scored — not the
// whole history every tick.
const recentRounds = 16

// driveCohorts runs on every tick: every node keeps its replicas in step with the rounds; the
// leader opens and closes rounds.
func (s *Server) driveCohorts(ctx context.Context) {
	type item struct {
		c      consensus.Cohort
		p      consensus.Proposal
		rounds []consensus.Round
	}
	var items []item
	var coordinators []string
	s.rtMu.Lock()
	known := map[uint64]bool{}
	for id := range s.rts {
		known[id] = true
	}
	s.rtMu.Unlock()
	s.node.View(func(st *consensus.State) error {
		for _, c := range st.Cohorts() {
			if c.Status == consensus.CohortDone && !known[c.ID] {
				continue
			}
			p, err := st.Proposal(c.Proposal)
			if err != nil {
				continue
			}
			rs, _, _ := st.RoundsRange(c.ID, int(c.CurrentRound)-recentRounds, int(c.CurrentRound))
			items = append(items, item{c, p, rs})
		}
		for _, co := range st.Coordinators() {
			coordinators = append(coordinators, co.ID)
		}
		return nil
	})
	sort.Strings(coordinators)
	for _, it := range items {
		rt, err := s.runtime(it.c, it.p)
		if err != nil {
			s.log.Warn("cohort runtime", "cohort", it.c.ID, "err", err)
			continue
		}
		s.syncReplica(rt, it.rounds)
		if s.node.IsLeader() {
			s.leadCohort(ctx, rt, it.c, it.p, it.rounds, coordinators)
			s.scoreNext(ctx, rt, it.c, it.rounds)
		}
	}
}

// leadCohort (leader only) asks the round engine for the cohort's next action (round.Next) and
// executes it: the pings a decision needs run here, before it, and the Raft writes after it.
func (s *Server) leadCohort(ctx context.Context, rt *cohortRT, c consensus.Cohort, p consensus.Proposal, rounds []consensus.Round, coordinators []string) {
	v := s.leaderView(rt, c, p, rounds, coordinators)
	a := round.Next(v)
	if a.Kind == round.Check {
		v.Checked, v.Live, v.Distrusted = true, s.live(ctx, coordinators), s.distrusted(c.ID, c.CurrentRound)
		a = round.Next(v)
	}
	if a.LiveChecked {
		rt.mu.Lock()
		rt.lastCheck, rt.suspects = v.Now, a.Suspects
		rt.mu.Unlock()
	}
	switch a.Kind {
	case round.Open:
		res, err := s.applyAsSelf(ctx, &consensus.OpenRoundBody{Cohort: c.ID, Number: a.Round, Participants: a.Participants,
			Slices: a.Slices, ModelHash: a.ModelHash[:], Seed: a.Seed, Deadline: a.Deadline, Excluded: a.Excluded})
		if err != nil {
			s.log.Warn("open round", "cohort", c.ID, "round", a.Round, "err", err)
			return
		}
		s.log.Info("opened round", "cohort", c.ID, "round", res.ID, "participants", len(a.Participants), "slices", len(a.Slices), "excluded", len(a.Excluded))
	case round.Close:
		if s.closeRound(ctx, c.ID, a.Round, a.ModelHash, "") {
			open := rounds[len(rounds)-1]
			s.metrics.observeRoundClosed(time.Duration(v.Now.UnixMilli()-open.OpenedAt) * time.Millisecond)
			s.leadAgain(ctx, rt, c.ID, p, coordinators) // open the next round in this same tick
		}
	case round.Abandon:
		if s.closeRound(ctx, c.ID, a.Round, a.ModelHash, a.Why) {
			s.leadAgain(ctx, rt, c.ID, p, coordinators)
		}
	case round.Extend:
		s.extend(ctx, rt, c.ID, a)
	case round.Reassign:
		for _, m := range a.Moves {
			_, err := s.applyAsSelf(ctx, &consensus.ReassignBody{Cohort: c.ID, Round: a.Round, Slice: m.Slice, Aggregator: m.To, Deadline: a.Deadline})
			if err != nil {
				s.log.Warn("reassign slice", "cohort", c.ID, "round", a.Round, "slice", m.Slice, "err", err)
				continue
			}
			s.log.Warn("aggregator does not answer: slice moved", "cohort", c.ID, "round", a.Round, "slice", m.Slice, "from", m.From, "to", m.To)
		}
	}
}

// leaderView gathers what the round engine decides on for cohort c: the replicated state, the
// replica, the leadership and the leader's memory of what it did (the pings come later, if asked).
func (s *Server) leaderView(rt *cohortRT, c consensus.Cohort, p consensus.Proposal, rounds []consensus.Round, coordinators []string) round.View {
	id, since := s.leaderChange()
	v := round.View{Now: s.cfg.Now(), Config: s.cfg.Rounds, Cohort: c, MinMembers: p.MinMembers, Rounds: rounds,
		Self: s.KeyID(), Coordinators: coordinators, Leadership: round.Leadership{Leader: id, Since: since}}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	v.Applied, v.Hash, v.Params = rt.applied, rt.hash, len(rt.theta)
	v.Extended, v.LastCheck, v.Suspects = rt.extended, rt.lastCheck, maps.Clone(rt.suspects)
	return v
}

// extend (leader) gives a round an earlier leader opened a whole round-time for uploads from now,
// once (round.Next asks it). Peers that were long-polling the dead leader learn of the round only
// now; and the aggregators hold their slices open while leadership settles (round.Slice.Due),
// which without a later deadline made the aggregate — and so every receipt — arrive after the
// round's deadline: the process end-to-end test's leader-kill round was applied by everyone and
// credited to no one.
func (s *Server) extend(ctx context.Context, rt *cohortRT, cohort uint64, a round.Action) {
	rt.mu.Lock()
	rt.extended = a.Round // asked; the state will say when it is applied
	rt.mu.Unlock()
	if _, err := s.applyAsSelf(ctx, &consensus.ExtendRoundBody{Cohort: cohort, Round: a.Round, Deadline: a.Deadline}); err != nil {
		s.log.Warn("extend round", "cohort", cohort, "round", a.Round, "err", err)
		rt.mu.Lock()
		rt.extended = 0
		rt.mu.Unlock()
		return
	}
	s.log.Info("extended a round opened by an earlier leader", "cohort", cohort, "round", a.Round,
		"deadline", time.UnixMilli(a.Deadline).Format(time.RFC3339Nano))
}

// leadAgain re-reads the cohort after a round closed and leads it once more, so the next round
// opens without waiting for the next tick: peers idle for one commit, not a tick.
func (s *Server) leadAgain(ctx context.Context, rt *cohortRT, cohort uint64, p consensus.Proposal, coordinators []string) {
	var c consensus.Cohort
	var rounds []consensus.Round
	err := s.node.View(func(st *consensus.State) error {
		var err error
		if c, err = st.Cohort(cohort); err != nil {
			return err
		}
		rounds, _, err = st.RoundsRange(cohort, int(c.CurrentRound)-recentRounds, int(c.CurrentRound))
		return err
	})
	if err != nil {
		return
	}
	rt.mu.Lock()
	if rt.applied < c.CurrentRound { // an abandoned round: θ unchanged, the replica moves on
		rt.applied = c.CurrentRound
	}
	rt.mu.Unlock()
	if len(rounds) > 0 && rounds[len(rounds)-1].Status == consensus.RoundClosed {
		s.leadCohort(ctx, rt, c, p, rounds, coordinators)
	}
}

// live keeps the coordinators that answer a ping within two seconds (this node always), in the
// order given. The pings go out together.
func (s *Server) live(ctx context.Context, ids []string) []string {
	ok := make([]bool, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		if id == s.KeyID() {
			ok[i] = true
			continue
		}
		addr, err := s.addrOfKey(id)
		if err != nil {
			continue
		}
		wg.Go(func() {
			req := transport.Message{Header: transport.Header{Type: protocol.MsgQuery}}
			req.SetBody(protocol.Query{What: protocol.QueryPing})
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := s.call(cctx, addr, req)
			ok[i] = err == nil
		})
	}
	wg.Wait()
	var out []string
	for i, id := range ids {
		if ok[i] {
			out = append(out, id)
		}
	}
	return out
}

func (s *Server) closeRound(ctx context.Context, cohort uint64, round uint32, hash [32]byte, why string) bool {
	res, err := s.applyAsSelf(ctx, &consensus.CloseRoundBody{Cohort: cohort, Round: round, ModelHash: hash[:]})
	if err != nil {
		if !errors.Is(err, consensus.ErrWrongStatus) {
			s.log.Warn("close round", "cohort", cohort, "round", round, "err", err)
		}
		return false
	}
	s.log.Info("closed round", "cohort", cohort, "round", round, "hash", fmt.Sprintf("%x", hash[:8]), "cohort_status", res.Status, "note", why)
	return true
}
