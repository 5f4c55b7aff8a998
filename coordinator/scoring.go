package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/attribution"
	"github.com/cohortlab/cohort/internal/wirecode"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// Scoring: every coordinator measures each θ_t its replica reaches (validator);
// an aggregator answers the leader with the validation sums of its slice (handleScore); the leader
// adds them up, scores the round (package attribution) and commits one ScoreCommit per round, in
// round order, which the ledger pays by.

// receiptWait is how long after a round closed the leader waits for the receipts of participants
// whose updates every slice aggregated before it scores the round: a receipt sent through a
// leader that died reaches the next one a client retry later, and counts until the round is
// scored (consensus accepts it for the recorded θ_{t+1}).
const receiptWait = 10 * time.Second

// unreported are the members whose updates every slice of r aggregated (they will send a
// receipt: a peer reports once every slice of its update was accepted) and whose receipt is
// not recorded yet.
func unreported(r consensus.Round, partials []attribution.Partial) []string {
	if len(partials) == 0 {
		return nil
	}
	count := map[string]int{}
	for _, p := range partials {
		for _, m := range p.Members {
			count[m]++
		}
	}
	var out []string
	for m, n := range count {
		if n != len(partials) {
			continue
		}
		i := sort.Search(len(r.Receipts), func(i int) bool { return r.Receipts[i].Member >= m })
		if i == len(r.Receipts) || r.Receipts[i].Member != m {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

// scoreWait bounds how long after a round closed the leader keeps trying to collect its
// validation sums; after that the round is recorded unscored (its budget carries over).
const scoreWait = 60 * time.Second

// remember records (rt.mu held) that θ with hash h was reached by applying aggregate delta, and
// starts measuring it.
func (rt *cohortRT) remember(h [32]byte, delta []float32) {
	if _, ok := rt.deltaTo[h]; !ok {
		rt.deltaQ = append(rt.deltaQ, h)
	}
	rt.deltaTo[h] = delta
	for len(rt.deltaQ) > keepStates {
		delete(rt.deltaTo, rt.deltaQ[0])
		rt.deltaQ = rt.deltaQ[1:]
	}
	rt.measure(rt.theta, h)
}

// handleScore (aggregator) answers the leader with the validation sums of one slice of a round:
// the slice's aggregation must be final and the validator must have measured the round's θ_t.
func (s *Server) handleScore(ctx context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
	if peer != (transport.NodeID{}) && !s.isCoordinator(peer.String()) {
		return transport.Message{}, fmt.Errorf("score: %s is not a coordinator", peer)
	}
	var q ScoreRequest
	if err := req.DecodeBody(&q); err != nil {
		return transport.Message{}, err
	}
	p, err := s.partial(ctx, q)
	if err != nil {
		return transport.Message{}, err
	}
	reply, err := scoreReply(p)
	if err != nil {
		return transport.Message{}, fmt.Errorf("score: slice %d of round %d: %w", q.Slice, q.Round, err)
	}
	return reply, nil
}

// scoreReply is the MsgScore reply carrying p. The sums grow with the participants (P·K values,
// and P sketches or the P×P Gram matrix): they are the payload, in attribution's binary layout,
// and the header stays a few bytes whatever P. A partial that cannot be encoded never will be (it
// is cached): final.
func scoreReply(p attribution.Partial) (transport.Message, error) {
	b, err := p.AppendBinary(nil)
	if err != nil {
		return transport.Message{}, fmt.Errorf("%w: %w", err, errUnscorable)
	}
	return transport.Message{Header: transport.Header{Type: MsgScore}, Payload: b}, nil
}

// decodeScoreReply decodes an aggregator's MsgScore reply for slice sl, whose pairwise products
// must come as sk says.
func decodeScoreReply(reply transport.Message, sl consensus.SliceAssignment, sk attribution.Sketch) (attribution.Partial, error) {
	p, err := attribution.DecodePartial(reply.Payload)
	if err != nil {
		return attribution.Partial{}, err
	}
	if p.Start != sl.Start || p.End != sl.End {
		return attribution.Partial{}, fmt.Errorf("score: aggregator answered for [%d,%d)", p.Start, p.End)
	}
	if p.Sketch != sk {
		return attribution.Partial{}, fmt.Errorf("score: the aggregator answered with %v, want %v", p.Sketch, sk)
	}
	return p, nil
}

func (s *Server) partial(ctx context.Context, q ScoreRequest) (attribution.Partial, error) {
	rt, r, sl, err := s.roundSlice(q.Cohort, q.Round, q.Slice)
	if err != nil {
		return attribution.Partial{}, err
	}
	val, err := rt.validator()
	switch {
	case errors.Is(err, errValidatorLoading):
		return attribution.Partial{}, err
	case err != nil:
		return attribution.Partial{}, fmt.Errorf("score: %v: %w", err, errUnscorable)
	}
	a := rt.heldAgg(r, q.Slice)
	if a == nil {
		if r.Status != consensus.RoundOpen {
			return attribution.Partial{}, fmt.Errorf("score: slice %d of round %d: this node holds no updates for it (restarted, or the round is long past): %w", q.Slice, q.Round, errUnscorable)
		}
		return attribution.Partial{}, fmt.Errorf("%w: score: round %d is still open on this node", protocol.ErrUnavailable, q.Round)
	}
	select {
	case <-a.done:
	case <-ctx.Done():
		return attribution.Partial{}, fmt.Errorf("%w: slice %d of round %d still aggregating", protocol.ErrUnavailable, q.Slice, q.Round)
	}
	if a.aborted {
		return attribution.Partial{}, fmt.Errorf("score: slice %d of round %d has no updates: %w", q.Slice, q.Round, errUnscorable)
	}
	rt.mu.Lock()
	if a.partial != nil {
		defer rt.mu.Unlock()
		return *a.partial, nil
	}
	// θ_t is measured when the replica reaches it; a replica still behind θ_t will measure it.
	behind := rt.applied+1 < r.Number
	rt.mu.Unlock()
	st, err := val.state(ctx, r.ModelHash)
	switch {
	case errors.Is(err, errNotMeasured) && behind:
		return attribution.Partial{}, fmt.Errorf("%w: score: this node has not reached round %d's model yet", protocol.ErrUnavailable, q.Round)
	case errors.Is(err, errNotMeasured):
		return attribution.Partial{}, fmt.Errorf("score: %v: %w", err, errUnscorable)
	case err != nil:
		return attribution.Partial{}, fmt.Errorf("score: %w", err)
	}
	// The sketch's seed comes from θ_{t+1}'s hash, recorded when the round closed: a replica that
	// has not applied the close yet is asked again.
	sk, err := roundSketch(r)
	if err != nil {
		return attribution.Partial{}, err
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if a.partial != nil {
		return *a.partial, nil
	}
	members := a.sl.Members()
	updates := make([][]float32, len(members))
	for i, m := range members {
		updates[i] = a.sl.Updates[m].Vals
	}
	g := make([][]float32, len(st.grads))
	for k, gk := range st.grads {
		g[k] = gk[sl.Start:sl.End]
	}
	var u []float32
	if d, ok := rt.deltaTo[[32]byte(r.ModelHash)]; ok {
		u = d[sl.Start:sl.End]
	} else if r.Number == 1 {
		u = make([]float32, sl.End-sl.Start) // θ_0: there is no previous step
	}
	p, err := attribution.ComputePartial(uint64(sl.Start), uint64(sl.End), g, u, members, updates, sk)
	if err != nil {
		return attribution.Partial{}, err
	}
	a.partial = &p
	// The sums are all scoring needs: the updates' values can go.
	a.sl.DropValues()
	return p, nil
}

// roundSketch is how the partials of round r carry the updates' pairwise products
// (attribution.SketchFor): the same on every coordinator that applied the round's close, and
// ErrUnavailable before, when the sketch needs the new model's hash.
func roundSketch(r consensus.Round) (attribution.Sketch, error) {
	if len(r.Participants) <= attribution.ExactGramMax {
		return attribution.Sketch{}, nil
	}
	if r.Status == consensus.RoundOpen || len(r.NewModelHash) == 0 {
		return attribution.Sketch{}, fmt.Errorf("%w: score: round %d is not closed on this node yet", protocol.ErrUnavailable, r.Number)
	}
	return attribution.SketchFor(len(r.Participants), r.Seed, r.NewModelHash), nil
}

// errUnscorable marks a slice the leader can never have validation sums for (its updates are
// gone, it had none, or the validator never saw the round's model): the round is recorded
// unscored at once rather than retried until scoreWait, which would hold up the rounds behind it.
var errUnscorable error = wirecode.New(192, "cannot be scored")

// unscorable reports whether err, from this node or (a remote error of its code) from another,
// is final for the slice's scoring.
func unscorable(err error) bool { return errors.Is(err, errUnscorable) }

// scoreNext (leader) starts scoring the cohort's oldest closed, unscored round, unless a scoring
// is under way.
func (s *Server) scoreNext(ctx context.Context, rt *cohortRT, c consensus.Cohort, rounds []consensus.Round) {
	var next *consensus.Round
	for i := range rounds {
		if rounds[i].Status == consensus.RoundClosed && !rounds[i].Scored {
			next = &rounds[i]
			break
		}
	}
	if next == nil {
		return
	}
	rt.mu.Lock()
	if rt.scoring {
		rt.mu.Unlock()
		return
	}
	rt.scoring = true
	rt.mu.Unlock()
	r := *next
	ctx = s.runCtx // the tick's context ends with the tick; scoring outlives it
	go func() {
		defer func() {
			rt.mu.Lock()
			rt.scoring = false
			rt.mu.Unlock()
		}()
		start := time.Now()
		body, err := s.scoreRound(ctx, rt, c, r)
		if err != nil {
			s.log.Debug("score round: will retry", "cohort", c.ID, "round", r.Number, "err", err)
			return
		}
		res, err := s.commitScore(ctx, body)
		s.metrics.observeScore(time.Since(start), err)
		if err != nil {
			if !errors.Is(err, consensus.ErrWrongStatus) {
				s.log.Warn("score commit", "cohort", c.ID, "round", r.Number, "err", err)
			}
			return
		}
		s.log.Info("scored round", "cohort", c.ID, "round", r.Number, "paid", res.Amount, "earners", len(body.Data),
			"flags", len(body.Flags), "note", body.Note, "took", time.Since(start).Round(time.Millisecond))
	}()
}

// commitScore commits a round's scores. When the state refuses them for good (a rejection other
// than ErrWrongStatus, which means the round is not scorable yet or already was), retrying the same
// scores would refuse them again on every tick and hold up every later round, which are scored in
// order: the round is recorded unscored instead, with the refusal as its note, and its budget
// carries over to the next round scored.
func (s *Server) commitScore(ctx context.Context, body *consensus.ScoreCommitBody) (consensus.Result, error) {
	res, err := s.applyAsSelf(ctx, body)
	if err == nil || errors.Is(err, consensus.ErrWrongStatus) || !rejected(err) {
		return res, err
	}
	s.log.Warn("score commit refused: recording the round unscored", "cohort", body.Cohort, "round", body.Round, "err", err)
	note := "unscored: the ledger refused the scores: " + err.Error()
	if len(note) > consensus.MaxNameLen {
		note = strings.ToValidUTF8(note[:consensus.MaxNameLen], "")
	}
	return s.applyAsSelf(ctx, &consensus.ScoreCommitBody{Cohort: body.Cohort, Round: body.Round, Note: note})
}

// rejected reports whether err is the state's final verdict on a command (see rejections).
func rejected(err error) bool {
	for _, r := range rejections {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// scoreRound builds the ScoreCommit of closed round r. An error means "not yet": the leader
// retries on a later tick; past scoreWait the round is committed unscored, with a note.
func (s *Server) scoreRound(ctx context.Context, rt *cohortRT, c consensus.Cohort, r consensus.Round) (*consensus.ScoreCommitBody, error) {
	body := &consensus.ScoreCommitBody{Cohort: c.ID, Round: r.Number}
	waiting := s.cfg.Now().Sub(time.UnixMilli(r.ClosedAt)) < receiptWait
	switch {
	case bytes.Equal(r.NewModelHash, r.ModelHash):
		body.Note = "abandoned: the model did not change"
		return body, nil
	case len(r.Receipts) == 0 && waiting:
		return nil, errors.New("no receipt yet")
	case len(r.Receipts) == 0:
		body.Note = "no participant reported"
		return body, nil
	}
	val, err := rt.validator()
	switch {
	case errors.Is(err, errValidatorLoading):
		return nil, err
	case err != nil:
		body.Note = "not validated: " + err.Error()
		return body, nil
	}
	late := s.cfg.Now().Sub(time.UnixMilli(r.ClosedAt)) > scoreWait
	sk, err := roundSketch(r)
	if err != nil {
		return nil, err
	}
	partials := make([]attribution.Partial, len(r.Slices))
	for i, sl := range r.Slices {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		p, err := s.fetchPartial(cctx, ScoreRequest{Cohort: c.ID, Round: r.Number, Slice: i}, sl, sk)
		cancel()
		if err != nil {
			if late || unscorable(err) {
				body.Note = fmt.Sprintf("unscored: slice %d: %v", i, err)
				return body, nil
			}
			return nil, fmt.Errorf("slice %d: %w", i, err)
		}
		partials[i] = p
	}
	if pending := unreported(r, partials); len(pending) > 0 && waiting {
		// Their updates are in the aggregate: their receipts are on the way (through a leader
		// that died, say) and count until the round is scored.
		return nil, fmt.Errorf("%d participants whose updates were aggregated have not reported yet", len(pending))
	}
	rt.mu.Lock()
	n := uint64(len(rt.theta))
	rt.mu.Unlock()
	sums, err := attribution.Combine(n, partials)
	if err != nil {
		body.Note = "unscored: " + err.Error()
		return body, nil
	}
	hist, _, credit := s.memberRecord(c.ID, r.Number)
	parts := s.participants(c, r, hist, credit)
	res, err := attribution.Score(sums, parts, attribution.Config{})
	if err != nil {
		body.Note = "unscored: " + err.Error()
		return body, nil
	}
	body.Data, body.Compute, body.Influence, body.Flags = res.Data, res.Compute, res.Influence, res.Flags
	if len(body.Data) == 0 {
		body.Note = "no update improved the validation loss"
	}
	// The validation loss and accuracy of θ_{t+1}, as measured by this node.
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if st, err := val.state(mctx, r.NewModelHash); err == nil {
		body.Metrics = st.metrics
	}
	cancel()
	if s.cfg.OnScore != nil {
		tr := attribution.Trace{Cohort: c.ID, Round: r.Number, Sums: sums, Participants: parts, After: body.Metrics, Result: res}
		bctx, cancel := context.WithTimeout(ctx, time.Second)
		if st, err := val.state(bctx, r.ModelHash); err == nil {
			tr.Before = st.metrics
		}
		cancel()
		s.cfg.OnScore(tr)
	}
	return body, nil
}

// participants are the members of cohort c that sent a receipt for round r, as scoring sees them.
// Compute is paid by the samples the protocol lets a participant train on, not by what its
// receipt claims: min(claim, consensus.State.SampleCap), the cap the state clamps receipts to.
func (s *Server) participants(c consensus.Cohort, r consensus.Round, hist map[string][]float64, credit map[string]float64) []attribution.Participant {
	orders := map[string]consensus.CohortMember{}
	for _, m := range c.Members {
		orders[m.Member] = m
	}
	caps := map[string]uint64{}
	s.node.View(func(st *consensus.State) error {
		for _, rc := range r.Receipts {
			caps[rc.Member] = st.SampleCap(c.ID, rc.Member)
		}
		return nil
	})
	var parts []attribution.Participant
	for _, rc := range r.Receipts {
		m, ok := orders[rc.Member]
		if !ok {
			continue
		}
		_, left := slices.BinarySearch(r.Excluded, rc.Member)
		parts = append(parts, attribution.Participant{Member: rc.Member, Order: m.Order, Samples: min(rc.SamplesUsed, caps[rc.Member]),
			Contributors: m.Contributors, History: hist[rc.Member], LeftOut: left, Credit: credit[rc.Member]})
	}
	return parts
}

// fetchPartial asks a slice's aggregator (this node or another) for its validation sums, which
// must carry the pairwise products as sk says.
func (s *Server) fetchPartial(ctx context.Context, q ScoreRequest, sl consensus.SliceAssignment, sk attribution.Sketch) (attribution.Partial, error) {
	if sl.Aggregator == s.KeyID() {
		return s.partial(ctx, q)
	}
	req := transport.Message{Header: transport.Header{Type: MsgScore}}
	if err := req.SetBody(q); err != nil {
		return attribution.Partial{}, err
	}
	addr, err := s.addrOfKey(sl.Aggregator)
	if err != nil {
		return attribution.Partial{}, err
	}
	reply, err := s.call(ctx, addr, req)
	if err != nil {
		return attribution.Partial{}, err
	}
	p, err := decodeScoreReply(reply, sl, sk)
	if err != nil {
		return attribution.Partial{}, fmt.Errorf("slice %d from %s: %w", q.Slice, sl.Aggregator, err)
	}
	return p, nil
}

// distrusted returns the members of a cohort the leader excludes from the next round's aggregate
// (consensus.OpenRoundBody.Excluded) after round last, from the rounds before last (round.View's
// Distrusted; last is scored while the next round trains): a member whose influence
// over its scored rounds is negative on average (label-flipped data, replays, empty updates), or
// whose latest scored update was flagged scaled, empty or a duplicate of an earlier member's.
// Payment asks more — influence consistently positive, a lower confidence bound above zero —
// but leaving out of the aggregate every member that fails that bar also left out honest members
// whose label-skewed data helps in some rounds and not in others: the model then forgot their
// classes (the demo's 4-peer Dirichlet(0.5) cohort fell from 69 % to 64.6 % over its last five
// rounds, with the validation loss rising from 1.07 to 1.95; with this rule it ends at 80.9 %,
// and the planted-peer test still pays its planted peers 0.05 % of the pool). A member with no scored round yet is
// trusted, and a distrusted member's updates are still scored, so trust comes back when its
// updates help again. (Robust aggregation by validation, as in FLTrust, with the validator's
// own scores: the cohort's model does not pay for what the ledger refuses to pay for.)
func (s *Server) distrusted(cohort uint64, last uint32) map[string]bool {
	hist, flagged, _ := s.memberRecord(cohort, last)
	out := flagged
	for m, xs := range hist {
		if !attribution.Consistent(xs, 0) {
			out[m] = true
		}
	}
	return out
}

// memberRecord walks a cohort's rounds scored before round n once and returns each member's
// influence history, oldest first (its contributors share its influence: counted once a round),
// the members whose latest scored round flagged them scaled, empty or a duplicate, and the credit
// each member's contributors earned (Influence.Credit, in units of a round's whole credit).
func (s *Server) memberRecord(cohort uint64, n uint32) (hist map[string][]float64, flagged map[string]bool, credit map[string]float64) {
	hist, flagged, credit = map[string][]float64{}, map[string]bool{}, map[string]float64{}
	s.node.View(func(st *consensus.State) error {
		c, err := st.Cohort(cohort)
		if err != nil {
			return err
		}
		rounds, err := st.Rounds(cohort)
		if err != nil {
			return err
		}
		memberOf := map[string]string{} // contributor → member
		for _, m := range c.Members {
			for _, cd := range m.Contributors {
				memberOf[cd.Name] = m.Member
			}
		}
		for _, r := range rounds {
			if !r.Scored || r.Number >= n {
				continue
			}
			seen := map[string]bool{}
			for _, x := range r.Influence {
				m := memberOf[x.Contributor]
				if m != "" {
					credit[m] += float64(x.Credit) / consensus.CreditScale
				}
				if m == "" || seen[m] {
					continue
				}
				seen[m] = true
				hist[m] = append(hist[m], float64(x.Value)/consensus.InfluenceUnit)
				delete(flagged, m) // its latest round decides the flags
			}
			for _, f := range r.Flags {
				if m := memberOf[f.Contributor]; m != "" && (f.Kind == "scaled" || f.Kind == "empty" || f.Kind == "duplicate") {
					flagged[m] = true
				}
			}
		}
		return nil
	})
	return hist, flagged, credit
}

var errValidatorLoading = fmt.Errorf("%w: the validator is still loading", protocol.ErrUnavailable)

// validator returns the cohort's validator, errValidatorLoading while it loads, or why this node
// cannot validate.
func (rt *cohortRT) validator() (*validator, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	switch {
	case rt.val != nil:
		return rt.val, nil
	case rt.valErr != nil:
		return nil, rt.valErr
	}
	return nil, errValidatorLoading
}
