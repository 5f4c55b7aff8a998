package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/attribution"
	"github.com/cohortlab/cohort/coordinator/round"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// sliceAgg is the aggregation of one slice of one round on this node: the slice's admission and
// closing rule (round.Slice) with the one timer that asks it when to close, and what its close
// produced.
type sliceAgg struct {
	sl           *round.Slice
	done         chan struct{}
	msg          []byte // the aggregate coded with the down codec: what every receiver decodes
	contributors int
	aborted      bool
	timer        *time.Timer
	// The updates stay after finalize for scoring; partial is their validation sums, once asked.
	partial *attribution.Partial
}

// uploadSlack is what an upload's payload may exceed its codec's largest encoding by: none is
// needed today; it absorbs a codec header that grows by a few bytes in a later version.
const uploadSlack = 4 << 10

// uploadLimit bounds an upload's payload from its header, before any of it is read: only a
// participant of the round may send one, for a slice this node aggregates, and no larger than
// the cohort's codec can encode that slice in. A stranger's upload costs its header.
func (s *Server) uploadLimit(_ context.Context, peer transport.NodeID, h transport.Header) (int64, error) {
	var u protocol.Upload
	if err := h.DecodeBody(&u); err != nil {
		return 0, err
	}
	if !s.isMember(peer.String()) {
		// Before roundSlice, which waits a few seconds for a round this node has not applied
		// yet: a participant registered long before its round.
		return 0, fmt.Errorf("upload: %s is not a registered member", peer)
	}
	rt, r, sl, err := s.roundSlice(u.Cohort, u.Round, u.Slice)
	if err != nil {
		return 0, err // as handleUpload would say it
	}
	if _, ok := slices.BinarySearch(r.Participants, peer.String()); !ok {
		return 0, fmt.Errorf("upload: %s is not a participant of cohort %d round %d", peer, u.Cohort, u.Round)
	}
	codec, err := compress.New(compress.Config{Setting: rt.codec, Shape: rt.shape.Slice(sl.Start, sl.End), MaxElements: sl.End - sl.Start})
	if err != nil {
		return 0, err
	}
	return int64(codec.MaxEncodedLen(sl.End-sl.Start)) + uploadSlack, nil
}

// handleUpload receives a participant's compressed pseudo-gradient for one slice.
func (s *Server) handleUpload(_ context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
	if _, err := s.admitUpload(peer, req); err != nil {
		return transport.Message{}, err
	}
	return transport.Message{Header: transport.Header{Type: protocol.MsgUpload}}, nil
}

// handleExchange is an upload answered with the slice's aggregate on the same stream
// (protocol.MsgExchange): once it is ready, within protocol.AggregateWait, or with no body, and
// the peer asks for it with MsgAggregate. Its refusals are the upload's.
func (s *Server) handleExchange(ctx context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
	a, err := s.admitUpload(peer, req)
	if err != nil {
		return transport.Message{}, err
	}
	wait := time.NewTimer(protocol.AggregateWait)
	defer wait.Stop()
	select {
	case <-a.done:
		return aggregateReply(protocol.MsgExchange, a)
	case <-wait.C:
	case <-ctx.Done():
	}
	return transport.Message{Header: transport.Header{Type: protocol.MsgExchange}}, nil
}

// admitUpload decodes, checks and admits an upload (MsgUpload, MsgExchange) into its slice's
// aggregation, and returns that aggregation.
func (s *Server) admitUpload(peer transport.NodeID, req transport.Message) (*sliceAgg, error) {
	t0 := time.Now()
	var u protocol.Upload
	if err := req.DecodeBody(&u); err != nil {
		return nil, err
	}
	rt, r, sl, err := s.roundSlice(u.Cohort, u.Round, u.Slice)
	if err != nil {
		return nil, err
	}
	if uint64(sl.Start) != u.Start || uint64(sl.End) != u.End {
		return nil, fmt.Errorf("upload: slice %d is [%d,%d), not [%d,%d)", u.Slice, sl.Start, sl.End, u.Start, u.End)
	}
	member := peer.String()
	if _, ok := slices.BinarySearch(r.Participants, member); !ok {
		return nil, fmt.Errorf("upload: %s is not a participant of cohort %d round %d", member, u.Cohort, u.Round)
	}
	if u.Samples == 0 || u.Samples > 1<<40 {
		return nil, fmt.Errorf("upload: %d samples", u.Samples)
	}
	weight, err := s.uploadWeight(rt, member, u.Samples)
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	codec, err := compress.New(compress.Config{Setting: rt.codec, Shape: rt.shape.Slice(sl.Start, sl.End), MaxElements: sl.End - sl.Start})
	if err != nil {
		return nil, err
	}
	vals, err := codec.Decode(nil, req.Payload)
	if err != nil {
		return nil, fmt.Errorf("upload: %w", err)
	}
	if len(vals) != sl.End-sl.Start {
		return nil, fmt.Errorf("upload: %d values for a slice of %d", len(vals), sl.End-sl.Start)
	}
	for i, v := range vals {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("upload: value %d is %v", i, v)
		}
	}
	a := s.sliceAggFor(rt, r, u.Slice, sl)
	v := s.sliceView(r)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	switch err := a.sl.Admit(member, weight, vals, s.cfg.Now(), v); {
	case errors.Is(err, round.ErrLate):
		return nil, fmt.Errorf("upload: cohort %d round %d slice %d closed at its deadline: %w", u.Cohort, u.Round, u.Slice, protocol.ErrLate)
	case errors.Is(err, round.ErrHeld):
		// Past the upload deadline the round records, in a slice held open while leadership
		// settles: it counts only if the new leader moves the deadline, so the peer is told to
		// resend — then it counts, or the slice has closed and it is late.
		return nil, fmt.Errorf("%w: upload: cohort %d round %d slice %d is past its upload deadline, held while a new leader may move it: resend", protocol.ErrUnavailable, u.Cohort, u.Round, u.Slice)
	case errors.Is(err, round.ErrDuplicate):
		return nil, fmt.Errorf("upload: %s: slice %d of round %d: %w", member, u.Slice, u.Round, protocol.ErrDuplicate)
	case err != nil:
		return nil, fmt.Errorf("upload: %w", err)
	}
	s.metrics.observeUpload(len(req.Payload), time.Since(t0))
	if a.sl.Complete() {
		s.finalize(rt, a)
	}
	return a, nil
}

// uploadWeight is the weight an update of member carries in the aggregate: the samples it claims
// (self-reported, so never trusted upwards), at most what the protocol fixes for a round
// (cohortRT.roundSamples) and at most the samples its contributors registered when it joined the
// cohort. A claim is only ever lowered: one member cannot outweigh the others by lying.
func (s *Server) uploadWeight(rt *cohortRT, member string, claimed uint64) (uint64, error) {
	var registered uint64
	found := false
	s.node.View(func(st *consensus.State) error {
		registered, found = st.RegisteredSamples(rt.id, member)
		return nil
	})
	if !found || registered == 0 {
		return 0, fmt.Errorf("%s registered no samples in cohort %d", member, rt.id)
	}
	return min(claimed, rt.roundSamples, registered), nil
}

func satAdd(a, b uint64) uint64 {
	if a+b < a {
		return math.MaxUint64
	}
	return a + b
}

// roundSlice looks up a round and one of its slices that this node aggregates. A peer may learn of
// a round from the leader before this node has applied it: a round just ahead of the local state
// is waited for (roundWait at most) rather than refused.
func (s *Server) roundSlice(cohort uint64, round uint32, slice int) (*cohortRT, consensus.Round, protocol.Slice, error) {
	for polls := 0; ; polls++ {
		rt, r, sl, err := s.roundSliceNow(cohort, round, slice)
		if !errors.Is(err, consensus.ErrNotFound) {
			return rt, r, sl, err
		}
		var current uint32
		known := false
		s.node.View(func(st *consensus.State) error {
			if c, err := st.PeekCohort(cohort); err == nil {
				current, known = c.CurrentRound, true
			}
			return nil
		})
		if !known || current >= round {
			return rt, r, sl, err // no such cohort, or the round exists here: the error is real
		}
		if polls >= int(roundWait/roundPoll) {
			// Still behind the leader after roundWait (a loaded or partitioned node): the round
			// may well exist, so the peer is told to resend, not that it does not.
			return rt, r, sl, fmt.Errorf("%w: cohort %d round %d is not applied on this coordinator yet (it has round %d): resend", protocol.ErrUnavailable, cohort, round, current)
		}
		time.Sleep(roundPoll)
	}
}

// roundWait is how long roundSlice waits for a round just ahead of the local state, looking every
// roundPoll.
const (
	roundWait = 5 * time.Second
	roundPoll = 20 * time.Millisecond
)

func (s *Server) roundSliceNow(cohort uint64, round uint32, slice int) (*cohortRT, consensus.Round, protocol.Slice, error) {
	var r consensus.Round
	var c consensus.Cohort
	var p consensus.Proposal
	s.rtMu.Lock()
	rt := s.rts[cohort]
	s.rtMu.Unlock()
	err := s.node.View(func(st *consensus.State) error {
		x, err := st.PeekRound(cohort, round)
		if err != nil {
			return err
		}
		r = x.Head() // on every upload and aggregate request: not a copy of every receipt
		if rt != nil {
			return nil // the cohort's runtime exists: no copy of its members and votes
		}
		if c, err = st.Cohort(cohort); err != nil {
			return err
		}
		p, err = st.Proposal(c.Proposal)
		return err
	})
	if err != nil {
		return nil, r, protocol.Slice{}, err
	}
	if slice < 0 || slice >= len(r.Slices) {
		return nil, r, protocol.Slice{}, fmt.Errorf("round %d of cohort %d has no slice %d", round, cohort, slice)
	}
	as := r.Slices[slice]
	if as.Aggregator != s.KeyID() {
		return nil, r, protocol.Slice{}, fmt.Errorf("slice %d of round %d is aggregated by %s: %w", slice, round, as.Aggregator, protocol.ErrNotAggregator)
	}
	if rt == nil {
		if rt, err = s.runtime(c, p); err != nil {
			return nil, r, protocol.Slice{}, err
		}
	}
	return rt, r, protocol.Slice{Start: int(as.Start), End: int(as.End), Aggregator: as.Aggregator}, nil
}

// sliceAggFor returns the aggregation of (round, slice), creating it with the one timer that closes
// it: armed at the round's upload deadline, then wherever the slice's closing rule (round.Slice.Due)
// says to look again.
func (s *Server) sliceAggFor(rt *cohortRT, r consensus.Round, slice int, sl protocol.Slice) *sliceAgg {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	key := [2]int{int(r.Number), slice}
	if a := rt.aggs[key]; a != nil {
		return a
	}
	a := &sliceAgg{sl: round.NewSlice(r, sl.Start, sl.End), done: make(chan struct{})}
	rt.aggs[key] = a
	wait := round.UploadDeadline(round.SliceView{Round: r}).Sub(s.cfg.Now())
	a.timer = time.AfterFunc(max(wait, 0), func() { s.sliceDue(rt, a, r) })
	rt.forgetAggs(r.Number)
	return a
}

// sliceDue is the slice timer's callback: it closes the slice or re-arms the timer, as the slice's
// closing rule says for the round as recorded now.
func (s *Server) sliceDue(rt *cohortRT, a *sliceAgg, r consensus.Round) {
	v := s.sliceView(r)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	now := s.cfg.Now()
	switch closeNow, next := a.sl.Due(now, v); {
	case closeNow:
		s.finalize(rt, a)
	case !next.IsZero():
		a.timer.Reset(next.Sub(now))
	}
}

// sliceView is what a slice's rules read of round r: the round as the replicated state records it
// now and the leadership as this node sees it.
func (s *Server) sliceView(r consensus.Round) round.SliceView {
	id, since := s.leaderChange()
	return round.SliceView{Round: s.roundState(r), Leadership: round.Leadership{Leader: id, Since: since}, Config: s.cfg.Rounds}
}

// heldAgg returns the aggregation of a slice of round r that this node holds, or nil (rt.mu not
// held).
func (rt *cohortRT) heldAgg(r consensus.Round, slice int) *sliceAgg {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.aggs[[2]int{int(r.Number), slice}]
}

// forgetAggs drops (rt.mu held) the aggregations of rounds long past, once round `current` has
// one: two rounds back when the leader has scored them already, keepStates back when not — the
// leader scores rounds in order, and one round it cannot score yet (the validator still loading,
// say) must not cost the rounds behind it their updates.
func (rt *cohortRT) forgetAggs(current uint32) {
	for k, old := range rt.aggs {
		scored := old.partial != nil || old.aborted
		if k[0] < int(current)-keepStates || (scored && k[0] < int(current)-2) {
			old.timer.Stop()
			delete(rt.aggs, k)
		}
	}
}

// roundState is round r as the replicated state records it now (r itself if it cannot be read).
func (s *Server) roundState(r consensus.Round) consensus.Round {
	now := r
	s.node.View(func(st *consensus.State) error {
		x, err := st.PeekRound(r.Cohort, r.Number)
		if err == nil {
			now = x.Head()
		}
		return err
	})
	return now
}

// finalize closes a slice (rt.mu held): its aggregate (round.Slice.Finalize: clipped, outliers and
// exclusions left out, averaged by the weights uploadWeight capped) coded for the way down with
// this node's error feedback. A slice with no update left to aggregate is aborted.
func (s *Server) finalize(rt *cohortRT, a *sliceAgg) {
	if a.sl.Closed() {
		return
	}
	a.timer.Stop()
	defer close(a.done)
	avg, n, err := a.sl.Finalize(s.cfg.Rounds)
	if err != nil {
		if n > 0 {
			s.log.Warn("aggregate", "cohort", rt.id, "slice", a.sl.Start, "updates", n, "err", err)
		}
		a.aborted = true
		return
	}
	msg, err := rt.downlink.Encode(a.sl.Round, a.sl.Start, avg)
	if err != nil {
		s.log.Error("aggregate", "err", err)
		a.aborted = true
		return
	}
	a.msg, a.contributors = msg, n
	s.log.Debug("aggregated", "cohort", rt.id, "slice", a.sl.Start, "updates", n, "values", len(avg), "bytes", len(a.msg))
}

// handleAggregate long-polls for the aggregate of a slice this node aggregates.
// Only the cohort's members and coordinators may ask (mayRead).
func (s *Server) handleAggregate(ctx context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
	var q protocol.AggregateRequest
	if err := req.DecodeBody(&q); err != nil {
		return transport.Message{}, err
	}
	rt, r, sl, err := s.roundSlice(q.Cohort, q.Round, q.Slice)
	if err != nil {
		return transport.Message{}, err
	}
	// After roundSlice: this node has applied the round, and so the joins of its participants.
	if err := s.mayRead(peer, q.Cohort); err != nil {
		return transport.Message{}, fmt.Errorf("aggregate: %w", err)
	}
	a := s.sliceAggFor(rt, r, q.Slice, sl)
	wait := time.NewTimer(protocol.AggregateWait)
	defer wait.Stop()
	select {
	case <-a.done:
	case <-wait.C:
		return transport.Message{}, fmt.Errorf("%w: aggregate of round %d slice %d: ask again", protocol.ErrNotReady, q.Round, q.Slice)
	case <-ctx.Done():
		return transport.Message{}, fmt.Errorf("%w: aggregate of round %d slice %d not ready: %w", protocol.ErrUnavailable, q.Round, q.Slice, ctx.Err())
	}
	return aggregateReply(protocol.MsgAggregate, a)
}

// aggregateReply is the answer of type typ carrying a's aggregate, once it is done.
func aggregateReply(typ string, a *sliceAgg) (transport.Message, error) {
	reply := transport.Message{Header: transport.Header{Type: typ}}
	if err := reply.SetBody(protocol.AggregateReply{Start: uint64(a.sl.Start), End: uint64(a.sl.End), Contributors: a.contributors, Aborted: a.aborted}); err != nil {
		return transport.Message{}, err
	}
	if !a.aborted {
		reply.Payload = a.msg
	}
	return reply, nil
}
