package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/attribution"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/trainer"
	"github.com/cohortlab/cohort/transport"
)

// RoundConfig configures how the leader drives training rounds. Zero values mean the defaults.
type RoundConfig struct {
	// Timeout is the time from opening a round to its deadline; default 120s. Whatever arrived
	// by the deadline counts; the leader closes a round early once every participant reported.
	Timeout time.Duration
	// AbortAfter is how long past the deadline a round whose aggregates cannot all be fetched
	// (an aggregator died, and so did the one its slice moved to) waits before it is abandoned:
	// closed with θ unchanged. Default 5s.
	AbortAfter time.Duration
	// ScoreWait is how long the leader waits for a closed round's scores before opening the next
	// round anyway (its exclusions then come from the rounds scored before); default 2s.
	ScoreWait time.Duration
	// LiveCheck is how often the leader checks that an open round's aggregators answer, and moves
	// the slices of those that do not to live coordinators (consensus.Reassign); default 2s.
	LiveCheck time.Duration
	// ClipMultiple clips every update (per slice) to this multiple of the median update norm;
	// default 2. Scaling an update up gains nothing.
	ClipMultiple float64
	// DropMultiple leaves out of the aggregate (per slice) an update longer than this multiple of
	// the median norm, or shorter than the median over it; default 4, as
	// attribution.Config.NormOutlier. An honest update is never that far from its peers; a
	// scaled-up one would otherwise still push at ClipMultiple, an empty one shrink the step.
	DropMultiple float64
}

func (c RoundConfig) withDefaults() RoundConfig {
	if c.Timeout == 0 {
		c.Timeout = 120 * time.Second
	}
	if c.AbortAfter == 0 {
		c.AbortAfter = 5 * time.Second
	}
	if c.LiveCheck == 0 {
		c.LiveCheck = 2 * time.Second
	}
	if c.ScoreWait == 0 {
		c.ScoreWait = 2 * time.Second
	}
	if c.ClipMultiple == 0 {
		c.ClipMultiple = 2
	}
	if c.DropMultiple == 0 {
		c.DropMultiple = 4
	}
	return c
}

// cohortRT is one coordinator's runtime for a cohort: a full replica of θ and the outer momentum
// (every coordinator applies every round, so any of them can serve the model, take over slices
// and, later, validate), and the aggregation state of the slices this node aggregates.
type cohortRT struct {
	id     uint64
	codec  compress.Setting
	down   compress.Setting  // codec of aggregates sent down (protocol.DownCodec)
	downE  map[int][]float32 // the aggregator's error feedback per slice start, for the down codec
	shape  compress.Shape
	outerC trainer.OuterConfig
	// roundSamples is what the protocol fixes one round of one member to train on: the proposal's
	// H inner steps × the model's batch size. No update weighs more in an aggregate.
	roundSamples uint64

	mu       sync.Mutex
	theta    []float32
	outer    *trainer.Nesterov
	applied  uint32 // rounds applied to theta
	hash     [32]byte
	fetching bool
	aggs     map[[2]int]*sliceAgg // (round, slice)
	// The model blob in the transfer store, for the round it was made at.
	blobRoot  transport.Hash
	blobRound uint32
	// Scoring: the validator (nil if this node cannot validate: valErr says why), the aggregate
	// that led to each recent θ (by its hash: the previous global step of the round starting
	// there), and whether the leader is scoring a round now.
	val     *validator
	valErr  error
	deltaTo map[[32]byte][]float32
	deltaQ  [][32]byte
	scoring bool
	// unmeasured are the recent θ the replica held while the validator was still loading (θ_0
	// first), measured once it is ready: a validator that loads slowly still scores those rounds.
	unmeasured []heldTheta
	// liveCheck is when the leader last checked the open round's aggregators; suspects counts the
	// checks in a row each aggregator failed.
	liveCheck time.Time
	suspects  map[string]int
	// extended is the round this node, as leader, last asked to extend (extendTakenOver).
	extended uint32
}

type heldTheta struct {
	theta []float32
	hash  [32]byte
}

// measure has the validator measure θ (whose hash is h), or keeps a copy until it has loaded
// (rt.mu held).
func (rt *cohortRT) measure(theta []float32, h [32]byte) {
	switch {
	case rt.val != nil:
		rt.val.measure(theta, h)
	case rt.valErr == nil:
		rt.unmeasured = append(rt.unmeasured, heldTheta{append([]float32(nil), theta...), h})
		if len(rt.unmeasured) > keepStates {
			rt.unmeasured = rt.unmeasured[1:]
		}
	}
}

type sliceAgg struct {
	start, end   int
	participants []string
	updates      map[string]upd
	done         chan struct{}
	msg          []byte // the aggregate coded with the down codec: what every receiver decodes
	contributors int
	aborted      bool
	timer        *time.Timer
	// The updates stay after finalize for scoring; partial is their validation sums, once asked.
	partial *attribution.Partial
	// excluded are the round's participants left out of the aggregate (consensus.Round.Excluded).
	excluded map[string]bool
}

type upd struct {
	vals    []float32
	samples uint64
}

// runtime returns (creating on first use) the runtime of cohort c.
func (s *Server) runtime(c consensus.Cohort, p consensus.Proposal) (*cohortRT, error) {
	s.rtMu.Lock()
	defer s.rtMu.Unlock()
	if rt := s.rts[c.ID]; rt != nil {
		return rt, nil
	}
	ts, err := spec.Of(p)
	if err != nil {
		return nil, fmt.Errorf("cohort %d: %w", c.ID, err)
	}
	model, err := trainer.NewModel(p.Model, 0, ts.Seed)
	if err != nil {
		return nil, fmt.Errorf("cohort %d: %w", c.ID, err)
	}
	theta := append([]float32(nil), model.Params()...)
	outer, err := trainer.NewNesterov(len(theta), ts.Outer)
	if err != nil {
		return nil, err
	}
	setting, down, oc := ts.Up, ts.Down, ts.Outer
	rt := &cohortRT{id: c.ID, codec: setting, down: down, downE: map[int][]float32{}, shape: trainer.CodecShape(model.Layout()), outerC: oc,
		roundSamples: uint64(ts.InnerSteps) * uint64(model.BatchSize()), theta: theta, outer: outer, hash: protocol.HashParams(theta), aggs: map[[2]int]*sliceAgg{}, deltaTo: map[[32]byte][]float32{}}
	// The validator loads its data and model in the background: rounds need not wait for it.
	rt.measure(rt.theta, rt.hash)
	go func() {
		time.Sleep(s.cfg.Validation.LoadDelay)
		start := time.Now()
		v, err := newValidator(s.cfg.Validation, p)
		if err != nil {
			s.log.Warn("this coordinator cannot validate: rounds it scores pay nobody", "cohort", c.ID, "err", err)
		} else {
			s.log.Info("validator ready", "cohort", c.ID, "samples", v.val.Len(), "took", time.Since(start).Round(time.Millisecond))
		}
		rt.mu.Lock()
		defer rt.mu.Unlock()
		rt.val, rt.valErr = v, err
		// Loading took 1.3–1.9 s in the process end-to-end test on a busy 2-core machine, against
		// a first round of 1.5 s: the θ the replica held meanwhile are measured now.
		for _, m := range rt.unmeasured {
			rt.measure(m.theta, m.hash)
		}
		rt.unmeasured = nil
	}()
	s.rts[c.ID] = rt
	return rt, nil
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
func (s *Server) handleUpload(ctx context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
	t0 := time.Now()
	var u protocol.Upload
	if err := req.DecodeBody(&u); err != nil {
		return transport.Message{}, err
	}
	rt, r, sl, err := s.roundSlice(u.Cohort, u.Round, u.Slice)
	if err != nil {
		return transport.Message{}, err
	}
	if uint64(sl.Start) != u.Start || uint64(sl.End) != u.End {
		return transport.Message{}, fmt.Errorf("upload: slice %d is [%d,%d), not [%d,%d)", u.Slice, sl.Start, sl.End, u.Start, u.End)
	}
	member := peer.String()
	if _, ok := slices.BinarySearch(r.Participants, member); !ok {
		return transport.Message{}, fmt.Errorf("upload: %s is not a participant of cohort %d round %d", member, u.Cohort, u.Round)
	}
	if u.Samples == 0 || u.Samples > 1<<40 {
		return transport.Message{}, fmt.Errorf("upload: %d samples", u.Samples)
	}
	weight, err := s.uploadWeight(rt, member, u.Samples)
	if err != nil {
		return transport.Message{}, fmt.Errorf("upload: %w", err)
	}
	codec, err := compress.New(compress.Config{Setting: rt.codec, Shape: rt.shape.Slice(sl.Start, sl.End), MaxElements: sl.End - sl.Start})
	if err != nil {
		return transport.Message{}, err
	}
	vals, err := codec.Decode(nil, req.Payload)
	if err != nil {
		return transport.Message{}, fmt.Errorf("upload: %w", err)
	}
	if len(vals) != sl.End-sl.Start {
		return transport.Message{}, fmt.Errorf("upload: %d values for a slice of %d", len(vals), sl.End-sl.Start)
	}
	for i, v := range vals {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return transport.Message{}, fmt.Errorf("upload: value %d is %v", i, v)
		}
	}
	a := s.sliceAggFor(rt, r, u.Slice, sl)
	now := s.roundState(r)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	select {
	case <-a.done:
		return transport.Message{}, fmt.Errorf("upload: cohort %d round %d slice %d closed at its deadline: %w", u.Cohort, u.Round, u.Slice, protocol.ErrLate)
	default:
	}
	if time.Now().After(time.UnixMilli(protocol.UploadDeadline(now.OpenedAt, now.Deadline))) && (len(a.updates) > 0 || s.settling(now)) {
		// Past the upload deadline the round records, in a slice held open while leadership
		// settles (hold): it counts only if the new leader moves the deadline, so the peer is
		// told to resend — then it counts, or the slice has closed and it is late. (A slice
		// that nothing reached, with no leader change, takes late uploads: the round would be
		// lost otherwise.)
		return transport.Message{}, fmt.Errorf("%w: upload: cohort %d round %d slice %d is past its upload deadline, held while a new leader may move it: resend", protocol.ErrUnavailable, u.Cohort, u.Round, u.Slice)
	}
	if _, dup := a.updates[member]; dup {
		return transport.Message{}, fmt.Errorf("upload: %s: slice %d of round %d: %w", member, u.Slice, u.Round, protocol.ErrDuplicate)
	}
	a.updates[member] = upd{vals: vals, samples: weight}
	s.metrics.observeUpload(len(req.Payload), time.Since(t0))
	if len(a.updates) == len(a.participants) {
		s.finalize(rt, a)
	}
	return transport.Message{Header: transport.Header{Type: protocol.MsgUpload}}, nil
}

// uploadWeight is the weight an update of member carries in the aggregate: the samples it claims
// (self-reported, so never trusted upwards), at most what the protocol fixes for a round
// (cohortRT.roundSamples) and at most the samples its contributors registered when it joined the
// cohort. A claim is only ever lowered: one member cannot outweigh the others by lying.
func (s *Server) uploadWeight(rt *cohortRT, member string, claimed uint64) (uint64, error) {
	var registered uint64
	found := false
	err := s.node.View(func(st *consensus.State) error {
		c, err := st.Cohort(rt.id)
		if err != nil {
			return err
		}
		for _, m := range c.Members {
			if m.Member != member {
				continue
			}
			found = true
			for _, cd := range m.Contributors {
				registered = satAdd(registered, cd.Samples)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
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

// mayRead reports (nil) whether peer may read cohort's model, momentum and aggregates: a member of
// the cohort, a registered coordinator, or this node itself (the zero NodeID: a local call).
func (s *Server) mayRead(peer transport.NodeID, cohort uint64) error {
	if peer == (transport.NodeID{}) || peer == s.cfg.Identity.NodeID() {
		return nil
	}
	id := peer.String()
	ok := false
	s.node.View(func(st *consensus.State) error {
		for _, c := range st.Coordinators() {
			ok = ok || c.ID == id
		}
		if c, err := st.Cohort(cohort); err == nil {
			for _, m := range c.Members {
				ok = ok || m.Member == id
			}
		}
		return nil
	})
	if !ok {
		return fmt.Errorf("%w: %s is neither a member of cohort %d nor a coordinator: the cohort's model and aggregates are for them only", protocol.ErrForbidden, id, cohort)
	}
	return nil
}

// allowBlob is the transfer store's access hook (transport.StoreConfig.Allow): the store holds
// only cohorts' model blobs (handleModel), so a blob goes to whoever may read its cohort.
func (s *Server) allowBlob(peer transport.NodeID, root transport.Hash) error {
	s.rtMu.Lock()
	rts := make([]*cohortRT, 0, len(s.rts))
	for _, rt := range s.rts {
		rts = append(rts, rt)
	}
	s.rtMu.Unlock()
	for _, rt := range rts {
		rt.mu.Lock()
		mine := rt.blobRoot == root
		rt.mu.Unlock()
		if mine {
			return s.mayRead(peer, rt.id)
		}
	}
	return fmt.Errorf("%w: blob %s is no cohort's current model", protocol.ErrForbidden, root)
}

// roundSlice looks up a round and one of its slices that this node aggregates. A peer may learn of
// a round from the leader before this node has applied it: a round just ahead of the local state
// is waited for (a few seconds at most) rather than refused.
func (s *Server) roundSlice(cohort uint64, round uint32, slice int) (*cohortRT, consensus.Round, protocol.Slice, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		rt, r, sl, err := s.roundSliceNow(cohort, round, slice)
		if !errors.Is(err, consensus.ErrNotFound) || time.Now().After(deadline) {
			return rt, r, sl, err
		}
		var current uint32
		s.node.View(func(st *consensus.State) error {
			if c, err := st.Cohort(cohort); err == nil {
				current = c.CurrentRound
			}
			return nil
		})
		if current >= round {
			return rt, r, sl, err // the round exists here: the error is real
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *Server) roundSliceNow(cohort uint64, round uint32, slice int) (*cohortRT, consensus.Round, protocol.Slice, error) {
	var r consensus.Round
	var c consensus.Cohort
	var p consensus.Proposal
	err := s.node.View(func(st *consensus.State) error {
		var err error
		if r, err = st.Round(cohort, round); err != nil {
			return err
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
	rt, err := s.runtime(c, p)
	if err != nil {
		return nil, r, protocol.Slice{}, err
	}
	return rt, r, protocol.Slice{Start: int(as.Start), End: int(as.End), Aggregator: as.Aggregator}, nil
}

// sliceAggFor returns the aggregation of (round, slice), creating it with a timer that closes it
// at the round's deadline.
func (s *Server) sliceAggFor(rt *cohortRT, r consensus.Round, slice int, sl protocol.Slice) *sliceAgg {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	key := [2]int{int(r.Number), slice}
	if a := rt.aggs[key]; a != nil {
		return a
	}
	a := &sliceAgg{start: sl.Start, end: sl.End, participants: r.Participants, updates: map[string]upd{}, done: make(chan struct{}),
		excluded: map[string]bool{}}
	for _, id := range r.Excluded {
		a.excluded[id] = true
	}
	rt.aggs[key] = a
	wait := time.Until(time.UnixMilli(protocol.UploadDeadline(r.OpenedAt, r.Deadline)))
	var fire func()
	fire = func() {
		// The leader may have pushed the round's deadline back since (consensus.Reassign, after
		// an aggregator died — and with it, often, the leader that opened the round, so that
		// some peers learnt of the round only after a new leader was elected): the uploads
		// still on their way get that time too. And while leadership is in flux the slice
		// may be held open a little longer (hold).
		now := s.roundState(r)
		later := time.Until(time.UnixMilli(protocol.UploadDeadline(now.OpenedAt, now.Deadline)))
		rt.mu.Lock()
		defer rt.mu.Unlock()
		select {
		case <-a.done:
			return
		default:
		}
		if later <= 0 && s.hold(a, now) {
			later = 500 * time.Millisecond
		}
		if later > 0 {
			a.timer = time.AfterFunc(later, fire)
			return
		}
		s.finalize(rt, a)
	}
	a.timer = time.AfterFunc(max(wait, 0), fire)
	rt.forgetAggs(r.Number)
	return a
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

// hold reports whether a slice whose upload deadline passed should stay open a little longer
// (rt.mu held). A slice that nothing reached waits until the round would be abandoned: a round
// opened just before its leader died is known to the other coordinators, and so to peers, only
// once a new leader commits it, which can be after its upload deadline. A slice still missing
// updates waits, up to half that, while the cluster has no leader, or while a new one that took
// over after the round opened has not yet pushed the round's deadline back (extendTakenOver, or
// consensus.Reassign when the dead leader was an aggregator): peers that were long-polling the
// dead leader learn of the round late, and closing on time would make the slice's aggregate from
// the few that did not. The slice then follows the new deadline, which leaves time for receipts.
func (s *Server) hold(a *sliceAgg, now consensus.Round) bool {
	deadline := time.UnixMilli(now.Deadline)
	if len(a.updates) == 0 {
		return time.Now().Before(deadline.Add(s.cfg.Rounds.AbortAfter))
	}
	if len(a.updates) == len(a.participants) || !time.Now().Before(deadline.Add(s.cfg.Rounds.AbortAfter/2)) {
		return false
	}
	return s.settling(now)
}

// settling reports whether leadership is in flux for an open round: no leader known, or a new one
// that took over after the round opened and has not yet moved a slice or the deadline (which it
// does at once: extendTakenOver).
func (s *Server) settling(now consensus.Round) bool {
	id, since := s.leaderChange()
	return id == "" || since.After(time.UnixMilli(now.OpenedAt)) && now.Reassignments == 0
}

// roundState is round r as the replicated state records it now (r itself if it cannot be read).
func (s *Server) roundState(r consensus.Round) consensus.Round {
	now := r
	s.node.View(func(st *consensus.State) error {
		x, err := st.Round(r.Cohort, r.Number)
		if err == nil {
			now = x
		}
		return err
	})
	return now
}

// finalize computes the aggregate of a slice from what arrived (rt.mu held): each update clipped
// to ClipMultiple × the median norm, then averaged weighted by its samples as uploadWeight capped
// them, in member-ID order.
func (s *Server) finalize(rt *cohortRT, a *sliceAgg) {
	select {
	case <-a.done:
		return
	default:
	}
	a.timer.Stop()
	defer close(a.done)
	if len(a.updates) == 0 {
		a.aborted = true
		return
	}
	ids := make([]string, 0, len(a.updates))
	for id := range a.updates {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	norms := make([]float64, len(ids))
	for i, id := range ids {
		var ss float64
		for _, v := range a.updates[id].vals {
			ss += float64(v) * float64(v)
		}
		norms[i] = math.Sqrt(ss)
	}
	sorted := append([]float64(nil), norms...)
	sort.Float64s(sorted)
	median := sorted[(len(sorted)-1)/2]
	limit := s.cfg.Rounds.ClipMultiple * median
	xs := make([][]float32, 0, len(ids))
	ws := make([]float64, 0, len(ids))
	for i, id := range ids {
		u := a.updates[id]
		if median > 0 && (norms[i] > s.cfg.Rounds.DropMultiple*median || norms[i] < median/s.cfg.Rounds.DropMultiple) {
			continue // scaled up, or (near-)empty: it would only shrink everyone's step
		}
		if a.excluded[id] {
			continue
		}
		xs, ws = append(xs, u.vals), append(ws, float64(u.samples))
		if norms[i] > limit && norms[i] > 0 {
			scale := float32(limit / norms[i])
			c := make([]float32, len(u.vals))
			for j, v := range u.vals {
				c[j] = v * scale
			}
			xs[len(xs)-1] = c
		}
	}
	avg, err := trainer.Average(nil, xs, ws)
	if err != nil { // cannot happen: lengths and weights were checked on upload
		s.log.Error("aggregate", "err", err)
		a.aborted = true
		return
	}
	// Code the aggregate for the way down, with the aggregator's error feedback for this slice.
	e := rt.downE[a.start]
	if len(e) != len(avg) {
		e = make([]float32, len(avg))
		rt.downE[a.start] = e
	}
	for i, v := range avg {
		e[i] += v
	}
	codec, err := compress.New(compress.Config{Setting: rt.down, Shape: rt.shape.Slice(a.start, a.end)})
	if err == nil {
		a.msg, err = codec.Encode(nil, e)
	}
	var dec []float32
	if err == nil {
		dec, err = codec.Decode(nil, a.msg)
	}
	if err != nil {
		s.log.Error("aggregate", "err", err)
		a.aborted = true
		return
	}
	for i, v := range dec {
		e[i] -= v
	}
	a.contributors = len(ids)
	s.log.Debug("aggregated", "cohort", rt.id, "slice", a.start, "updates", len(xs), "values", len(avg), "bytes", len(a.msg))
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
	select {
	case <-a.done:
	case <-ctx.Done():
		return transport.Message{}, fmt.Errorf("%w: aggregate of round %d slice %d not ready: %w", protocol.ErrUnavailable, q.Round, q.Slice, ctx.Err())
	}
	reply := transport.Message{Header: transport.Header{Type: protocol.MsgAggregate}}
	if err := reply.SetBody(protocol.AggregateReply{Start: uint64(a.start), End: uint64(a.end), Contributors: a.contributors, Aborted: a.aborted}); err != nil {
		return transport.Message{}, err
	}
	if !a.aborted {
		reply.Payload = a.msg
	}
	return reply, nil
}

// handleModel answers with where to fetch θ and the outer momentum of a cohort's replica: the blob
// is put in the node's transfer store (once per applied round) and fetched in chunks. Only the
// cohort's members and coordinators may ask (mayRead), and fetch the blob (allowBlob).
func (s *Server) handleModel(_ context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
	var q protocol.ModelRequest
	if err := req.DecodeBody(&q); err != nil {
		return transport.Message{}, err
	}
	if err := s.mayRead(peer, q.Cohort); err != nil {
		return transport.Message{}, fmt.Errorf("model: %w", err)
	}
	s.rtMu.Lock()
	rt := s.rts[q.Cohort]
	s.rtMu.Unlock()
	if rt == nil {
		return transport.Message{}, fmt.Errorf("%w: cohort %d has no model on this node yet", protocol.ErrUnavailable, q.Cohort)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.blobRound != rt.applied || rt.blobRoot == (transport.Hash{}) {
		b := make([]byte, 0, 8*len(rt.theta))
		b = protocol.AppendFloats(b, rt.theta)
		b = protocol.AppendFloats(b, rt.outer.Momentum())
		m, err := s.store.Put(b, 0)
		if err != nil {
			return transport.Message{}, err
		}
		if rt.blobRoot != (transport.Hash{}) && rt.blobRoot != m.Root() {
			s.store.Remove(rt.blobRoot)
		}
		rt.blobRoot, rt.blobRound = m.Root(), rt.applied
	}
	reply := transport.Message{Header: transport.Header{Type: protocol.MsgModel}}
	err := reply.SetBody(protocol.ModelReply{Round: rt.applied, Params: len(rt.theta), Hash: rt.hash[:], Root: rt.blobRoot[:]})
	return reply, err
}

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
			rs, _ := st.Rounds(c.ID)
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

// syncReplica advances the replica: applies the latest open round once all its aggregates are
// available, accepts closed rounds recorded with an unchanged hash (abandoned), and re-fetches
// the model from another coordinator when the replica disagrees with what the log recorded.
func (s *Server) syncReplica(rt *cohortRT, rounds []consensus.Round) {
	ctx := s.runCtx
	rt.mu.Lock()
	applied, hash, busy := rt.applied, rt.hash, rt.fetching
	rt.mu.Unlock()
	if busy {
		return
	}
	for _, r := range rounds {
		if r.Number <= applied {
			if r.Status == consensus.RoundClosed && r.Number == applied && !bytes.Equal(r.NewModelHash, hash[:]) {
				s.startFetch(rt, func() { s.resync(ctx, rt, r) })
				return
			}
			continue
		}
		if r.Number != applied+1 {
			s.startFetch(rt, func() { s.resync(ctx, rt, rounds[len(rounds)-1]) })
			return
		}
		if r.Status == consensus.RoundClosed && bytes.Equal(r.NewModelHash, hash[:]) {
			rt.mu.Lock() // abandoned round: θ unchanged
			rt.applied = r.Number
			rt.mu.Unlock()
			applied = r.Number
			continue
		}
		s.startFetch(rt, func() { s.applyRound(ctx, rt, r) })
		return
	}
}

func (s *Server) startFetch(rt *cohortRT, f func()) {
	rt.mu.Lock()
	rt.fetching = true
	rt.mu.Unlock()
	go func() {
		defer func() {
			rt.mu.Lock()
			rt.fetching = false
			rt.mu.Unlock()
		}()
		f()
	}()
}

// applyRound fetches every slice's aggregate of round r and applies the outer step.
func (s *Server) applyRound(ctx context.Context, rt *cohortRT, r consensus.Round) {
	ctx, cancel := context.WithTimeout(ctx, time.Until(time.UnixMilli(r.Deadline))+s.cfg.Rounds.AbortAfter)
	defer cancel()
	delta := make([]float32, len(rt.theta))
	for i, sl := range r.Slices {
		rep, payload, err := s.fetchAggregate(ctx, rt.id, r.Number, i, sl.Aggregator)
		if err != nil {
			s.log.Debug("fetch aggregate", "cohort", rt.id, "round", r.Number, "slice", i, "err", err)
			return
		}
		if rep.Aborted {
			return // nobody's update arrived: the leader abandons the round
		}
		if err := spec.DecodeAggregate(rt.down, rt.shape, int(sl.Start), int(sl.End), payload, delta[sl.Start:sl.End]); err != nil {
			s.log.Warn("aggregate", "cohort", rt.id, "round", r.Number, "slice", i, "err", err)
			return
		}
	}
	// A slice moved to another aggregator while we fetched: its aggregate is that one's now.
	var now consensus.Round
	if err := s.node.View(func(st *consensus.State) error {
		var err error
		now, err = st.Round(rt.id, r.Number)
		return err
	}); err != nil {
		return
	}
	for i := range r.Slices {
		if now.Slices[i].Aggregator != r.Slices[i].Aggregator {
			return // the next tick fetches by the new assignment
		}
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.applied != r.Number-1 {
		return
	}
	rt.outer.Step(rt.theta, delta)
	rt.applied = r.Number
	rt.hash = protocol.HashParams(rt.theta)
	rt.remember(rt.hash, delta)
	s.log.Debug("applied round", "cohort", rt.id, "round", r.Number, "hash", fmt.Sprintf("%x", rt.hash[:8]))
}

// fetchAggregate gets one slice's aggregate from its aggregator (this node or another).
func (s *Server) fetchAggregate(ctx context.Context, cohort uint64, round uint32, slice int, aggregator string) (protocol.AggregateReply, []byte, error) {
	req := transport.Message{Header: transport.Header{Type: protocol.MsgAggregate}}
	if err := req.SetBody(protocol.AggregateRequest{Cohort: cohort, Round: round, Slice: slice}); err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	var reply transport.Message
	var err error
	if aggregator == s.KeyID() {
		reply, err = s.handleAggregate(ctx, transport.NodeID{}, req)
	} else {
		addr, aerr := s.addrOfKey(aggregator)
		if aerr != nil {
			return protocol.AggregateReply{}, nil, aerr
		}
		reply, err = s.call(ctx, addr, req)
	}
	if err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	var rep protocol.AggregateReply
	return rep, reply.Payload, reply.DecodeBody(&rep)
}

// addrOfKey maps a coordinator key ID to its raft address.
func (s *Server) addrOfKey(keyID string) (string, error) {
	var name string
	s.node.View(func(st *consensus.State) error {
		for _, c := range st.Coordinators() {
			if c.ID == keyID {
				name = c.Name
			}
		}
		return nil
	})
	servers, err := s.node.Servers()
	if err != nil {
		return "", err
	}
	for _, sv := range servers {
		if sv.ID == name {
			return sv.Addr, nil
		}
	}
	return "", fmt.Errorf("coordinator %s (%q) has no known address", keyID, name)
}

// resync replaces the replica with the model of another coordinator that has applied round r
// with the recorded hash.
func (s *Server) resync(ctx context.Context, rt *cohortRT, r consensus.Round) {
	if r.Status != consensus.RoundClosed {
		return
	}
	servers, err := s.node.Servers()
	if err != nil {
		return
	}
	for _, sv := range servers {
		if sv.ID == s.cfg.ID {
			continue
		}
		req := transport.Message{Header: transport.Header{Type: protocol.MsgModel}}
		req.SetBody(protocol.ModelRequest{Cohort: rt.id})
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		reply, err := s.call(cctx, sv.Addr, req)
		cancel()
		if err != nil {
			continue
		}
		var mr protocol.ModelReply
		if err := reply.DecodeBody(&mr); err != nil || mr.Round != r.Number || !bytes.Equal(mr.Hash, r.NewModelHash) || mr.Params != len(rt.theta) || len(mr.Root) != len(transport.Hash{}) {
			continue
		}
		cctx, cancel = context.WithTimeout(ctx, time.Minute)
		blob, err := s.fetchBlob(cctx, sv.Addr, transport.Hash(mr.Root), int64(8*mr.Params))
		cancel()
		if err != nil {
			continue
		}
		both, err := protocol.DecodeFloats(nil, blob, 2*mr.Params)
		if err != nil || protocol.HashParams(both[:mr.Params]) != [32]byte(mr.Hash) {
			continue
		}
		rt.mu.Lock()
		copy(rt.theta, both[:mr.Params])
		copy(rt.outer.Momentum(), both[mr.Params:])
		rt.applied, rt.hash = r.Number, [32]byte(mr.Hash)
		rt.measure(rt.theta, rt.hash)
		rt.mu.Unlock()
		s.log.Info("re-synced cohort model", "cohort", rt.id, "round", r.Number, "from", sv.ID)
		return
	}
}

// fetchBlob fetches a blob from the coordinator at addr (which must have the key registered for
// that voter) over a connection of this node.
func (s *Server) fetchBlob(ctx context.Context, addr string, root transport.Hash, size int64) ([]byte, error) {
	want, err := transport.ParseNodeID(s.keyAt(addr))
	if err != nil {
		return nil, fmt.Errorf("coordinator at %s: no key known: %w", addr, err)
	}
	c, err := s.ep.DialNode(ctx, addr, want)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return transport.Fetch(ctx, []*transport.Conn{c}, root, transport.TransferOptions{MaxSize: size})
}

// leadCohort (leader only) opens the next round when the previous one closed and closes the open
// round once its result is known and every participant reported, or its deadline passed.
func (s *Server) leadCohort(ctx context.Context, rt *cohortRT, c consensus.Cohort, p consensus.Proposal, rounds []consensus.Round, coordinators []string) {
	if c.Status == consensus.CohortDone {
		return
	}
	rt.mu.Lock()
	applied, hash := rt.applied, rt.hash
	n := len(rt.theta)
	rt.mu.Unlock()
	now := s.cfg.Now()
	var open *consensus.Round
	if len(rounds) > 0 && rounds[len(rounds)-1].Status == consensus.RoundOpen {
		open = &rounds[len(rounds)-1]
	}
	switch {
	case open == nil:
		if uint32(len(c.Members)) < max(p.MinMembers, 1) || applied != c.CurrentRound {
			return
		}
		// The next round leaves out of its aggregate whom the scores distrust: wait (a little) for
		// the previous round's scores, so that the decision is current.
		if n := len(rounds); n > 0 && !rounds[n-1].Scored && now.Sub(time.UnixMilli(rounds[n-1].ClosedAt)) < s.cfg.Rounds.ScoreWait {
			return
		}
		var parts []string
		for _, m := range c.Members {
			parts = append(parts, m.Member)
		}
		sort.Strings(parts)
		var excluded []string
		distrusted := s.distrusted(c.ID)
		for _, id := range parts {
			if distrusted[id] {
				excluded = append(excluded, id)
			}
		}
		if len(excluded) == len(parts) {
			excluded = nil // nobody left: aggregate everyone rather than nothing
		}
		var sls []consensus.SliceAssignment
		for _, sl := range protocol.Slices(n, s.live(ctx, coordinators)) {
			sls = append(sls, consensus.SliceAssignment{Start: uint64(sl.Start), End: uint64(sl.End), Aggregator: sl.Aggregator})
		}
		res, err := s.applyAsSelf(ctx, &consensus.OpenRoundBody{Cohort: c.ID, Number: c.CurrentRound + 1, Participants: parts,
			Slices: sls, ModelHash: hash[:], Seed: uint64(now.UnixNano()), Deadline: now.Add(s.roundTimeout(rounds)).UnixMilli(),
			Excluded: excluded})
		if err != nil {
			s.log.Warn("open round", "cohort", c.ID, "round", c.CurrentRound+1, "err", err)
			return
		}
		s.log.Info("opened round", "cohort", c.ID, "round", res.ID, "participants", len(parts), "slices", len(sls), "excluded", len(excluded))
	case applied == open.Number:
		if len(open.Receipts) < len(open.Participants) && now.UnixMilli() <= open.Deadline {
			return
		}
		if s.closeRound(ctx, c.ID, open.Number, hash, "") {
			s.metrics.observeRoundClosed(time.Duration(now.UnixMilli()-open.OpenedAt) * time.Millisecond)
			s.leadAgain(ctx, rt, c.ID, p, coordinators) // open the next round in this same tick
		}
	case now.UnixMilli() > open.Deadline+s.cfg.Rounds.AbortAfter.Milliseconds() && applied == open.Number-1:
		if s.closeRound(ctx, c.ID, open.Number, hash, "abandoned: an aggregate could not be fetched") {
			s.leadAgain(ctx, rt, c.ID, p, coordinators)
		}
	case applied == open.Number-1:
		if !s.extendTakenOver(ctx, rt, *open) {
			s.reassignDead(ctx, rt, *open, coordinators)
		}
	}
}

// extendTakenOver (leader) gives a round that an earlier leader opened a whole round-time for
// uploads from now, once, and reports whether it did (or tried). Peers that were long-polling the
// dead leader learn of the round only now; and the aggregators hold their slices open while
// leadership settles (hold), which without a later deadline made the aggregate — and so every
// receipt — arrive after the round's deadline: the process end-to-end test's leader-kill round
// was applied by everyone and credited to no one.
func (s *Server) extendTakenOver(ctx context.Context, rt *cohortRT, open consensus.Round) bool {
	if _, since := s.leaderChange(); !since.After(time.UnixMilli(open.OpenedAt)) || open.Reassignments > 0 {
		return false
	}
	rt.mu.Lock()
	if rt.extended == open.Number {
		rt.mu.Unlock()
		return false // asked already; the state will say when it is applied
	}
	rt.extended = open.Number
	rt.mu.Unlock()
	now := s.cfg.Now().UnixMilli()
	deadline := open.OpenedAt + (now-open.OpenedAt+open.Deadline-open.OpenedAt)*4/3
	if _, err := s.applyAsSelf(ctx, &consensus.ExtendRoundBody{Cohort: open.Cohort, Round: open.Number, Deadline: deadline}); err != nil {
		s.log.Warn("extend round", "cohort", open.Cohort, "round", open.Number, "err", err)
		rt.mu.Lock()
		rt.extended = 0
		rt.mu.Unlock()
		return true
	}
	s.log.Info("extended a round opened by an earlier leader", "cohort", open.Cohort, "round", open.Number,
		"deadline", time.UnixMilli(deadline).Format(time.RFC3339Nano))
	return true
}

// reassignDead (leader) moves the slices of an open round whose aggregator does not answer to live
// coordinators, giving the round a full round-time from now so that participants can resend them
// there. It looks at most every LiveCheck.
func (s *Server) reassignDead(ctx context.Context, rt *cohortRT, open consensus.Round, coordinators []string) {
	rt.mu.Lock()
	if time.Since(rt.liveCheck) < s.cfg.Rounds.LiveCheck {
		rt.mu.Unlock()
		return
	}
	rt.liveCheck = time.Now()
	rt.mu.Unlock()
	others := false
	for _, sl := range open.Slices {
		others = others || sl.Aggregator != s.KeyID()
	}
	if !others {
		return
	}
	live := s.live(ctx, coordinators)
	alive := map[string]bool{}
	for _, id := range live {
		alive[id] = true
	}
	// A loaded node may miss one ping: move a slice only after two checks in a row failed.
	rt.mu.Lock()
	if rt.suspects == nil {
		rt.suspects = map[string]int{}
	}
	for _, sl := range open.Slices {
		if alive[sl.Aggregator] {
			delete(rt.suspects, sl.Aggregator)
		} else {
			rt.suspects[sl.Aggregator]++
		}
	}
	suspects := maps.Clone(rt.suspects)
	rt.mu.Unlock()
	// Uploads close at protocol.UploadDeadline, 3/4 of the way from opening to the deadline: pick
	// the deadline that leaves a whole round-time for uploads from now.
	now := s.cfg.Now().UnixMilli()
	deadline := open.OpenedAt + (now-open.OpenedAt+open.Deadline-open.OpenedAt)*4/3
	moved := 0
	for i, sl := range open.Slices {
		if alive[sl.Aggregator] || len(live) == 0 || suspects[sl.Aggregator] < 2 {
			continue
		}
		to := live[(i+moved)%len(live)]
		_, err := s.applyAsSelf(ctx, &consensus.ReassignBody{Cohort: open.Cohort, Round: open.Number, Slice: uint32(i), Aggregator: to, Deadline: deadline})
		if err != nil {
			s.log.Warn("reassign slice", "cohort", open.Cohort, "round", open.Number, "slice", i, "err", err)
			continue
		}
		moved++
		s.log.Warn("aggregator does not answer: slice moved", "cohort", open.Cohort, "round", open.Number, "slice", i, "from", sl.Aggregator, "to", to)
	}
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
		rounds, err = st.Rounds(cohort)
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

// roundTimeout is the time a new round gets: RoundConfig.Timeout, or, once rounds have run, three
// times the longest time to the last accepted receipt in the last three rounds (at least 5s) when
// that is shorter, so that a failed aggregator or a straggler costs a few round-times rather than
// the full timeout.
func (s *Server) roundTimeout(rounds []consensus.Round) time.Duration {
	var slowest time.Duration
	seen := 0
	for i := len(rounds) - 1; i >= 0 && seen < 3; i-- {
		r := rounds[i]
		if r.Status != consensus.RoundClosed || len(r.Receipts) == 0 {
			continue
		}
		for _, rc := range r.Receipts {
			slowest = max(slowest, time.Duration(rc.At-r.OpenedAt)*time.Millisecond)
		}
		seen++
	}
	if seen == 0 {
		return s.cfg.Rounds.Timeout
	}
	return min(s.cfg.Rounds.Timeout, max(3*slowest, 5*time.Second))
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
