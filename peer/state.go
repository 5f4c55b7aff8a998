package peer

import (
	"bytes"
	"errors"
	"fmt"
	"sort"

	"github.com/cohortlab/cohort/compress"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/trainer"
)

// state is what a peer knows and decides across rounds: which round to take part in, the inner
// steps it owes, the steps it took ahead and their accounting, and its totals. It is pure: no
// goroutines, sockets or clocks (durations come in as arguments). Peer executes its decisions.
type state struct {
	me     string // this member's key ID, as rounds list their participants
	h      int    // inner steps per round, H
	rounds uint32 // rounds of the cohort
	tau    int    // overlap steps, τ < H
	batch  int    // samples per inner step
	last   uint32 // the newest round seen: the next poll waits for a newer one
	ahead  ahead
	totals Totals
}

// ahead is the inner steps already taken towards the next round (the overlap carried onto
// θ_{t+1}, then the rest of H taken before that round opened), from the θ whose hash is of; loss
// and secs sum their losses and time.
type ahead struct {
	steps int
	of    [32]byte
	loss  float64
	secs  float64
}

// verdict is what to do with an answer to a poll for the next round.
type verdict int

const (
	pollAgain verdict = iota // nothing to take part in: poll for a newer round
	finish                   // the cohort is done: finish on its final model
	takePart                 // take part in the round returned
)

// next decides on the coordinators' answer to a poll for the round after s.last: the cohort, and
// its newest rounds first. Whatever is decided, a round returned is seen: the next poll waits for
// a newer one.
func (s *state) next(c *consensus.Cohort, rounds []consensus.Round) (verdict, consensus.Round, error) {
	if c == nil {
		return pollAgain, consensus.Round{}, errors.New("the coordinator's answer holds no cohort")
	}
	if c.Status == consensus.CohortDone {
		return finish, consensus.Round{}, nil // even if the last round passed this peer by
	}
	if c.CurrentRound == 0 || c.CurrentRound <= s.last || len(rounds) == 0 {
		return pollAgain, consensus.Round{}, nil
	}
	r := rounds[0]
	s.last = r.Number
	if r.Status != consensus.RoundOpen {
		return pollAgain, r, nil // closed before we saw it: catch up at the next
	}
	if i := sort.SearchStrings(r.Participants, s.me); i == len(r.Participants) || r.Participants[i] != s.me {
		return pollAgain, r, nil // joined after the round opened: wait for the next
	}
	return takePart, r, nil
}

// differs reports whether θ, with hash theta, is not the model with hash want: it must be re-synced.
func differs(theta [32]byte, want []byte) bool { return !bytes.Equal(theta[:], want) }

// stale reports whether the steps taken ahead were taken from a θ round r does not start from:
// the driver drops them (the local model restarts from θ_t) before it trains.
func (s *state) stale(r consensus.Round) bool {
	return s.ahead.steps > 0 && differs(s.ahead.of, r.ModelHash)
}

// owed is the inner steps the round still needs: H, less the steps taken ahead, which are its
// first steps.
func (s *state) owed() int { return s.h - s.ahead.steps }

// trained accounts the round's H inner steps: st, just taken in secs, and those taken ahead. It
// returns the stats of all H and their compute time, and forgets the steps ahead.
func (s *state) trained(st trainer.InnerStats, secs float64) (trainer.InnerStats, float64) {
	a := s.ahead
	st.MeanLoss = (st.MeanLoss*float64(st.Steps) + a.loss) / float64(s.h)
	st.Samples += a.steps * s.batch
	st.Steps += a.steps
	s.ahead = ahead{}
	return st, secs + a.secs
}

// overlap returns τ, the inner steps to take while round r's update travels and its aggregate
// comes back; none in the last round, which has nothing to carry them to.
func (s *state) overlap(r consensus.Round) int {
	if s.tau > 0 && r.Number < s.rounds {
		return s.tau
	}
	return 0
}

// overlapped records the τ steps taken during the exchange: if the round is applied they are
// carried onto θ_{t+1} and are the next round's first steps.
func (s *state) overlapped(st trainer.InnerStats, secs float64) {
	s.ahead = ahead{steps: st.Steps, loss: st.MeanLoss * float64(st.Steps), secs: secs}
}

// applied records that the round's outer step made θ_{t+1}, with hash h: the steps ahead count
// from it.
func (s *state) applied(h [32]byte) { s.ahead.of = h }

// dropAhead forgets the steps taken ahead (the driver discards the local progress) and returns how
// many there were.
func (s *state) dropAhead() int {
	n := s.ahead.steps
	s.ahead = ahead{}
	return n
}

// stepsAhead returns how many of the next round's H steps to take now, after round r, before the
// leader opens the next (receipts, closing, scoring and opening go through Raft meanwhile): the
// same steps that round would take after it opened, from the same θ, with hash theta. None after
// the last round, or when r was not applied here.
func (s *state) stepsAhead(r consensus.Round, theta [32]byte) int {
	if r.Number >= s.rounds || s.ahead.steps >= s.h || theta != s.ahead.of {
		return 0
	}
	return s.h - s.ahead.steps
}

// tookAhead accounts steps taken ahead in secs.
func (s *state) tookAhead(st trainer.InnerStats, secs float64) {
	s.ahead.steps += st.Steps
	s.ahead.loss += st.MeanLoss * float64(st.Steps)
	s.ahead.secs += secs
}

// report describes round r, whose H steps had stats st and took compute seconds, after its
// exchange x; hash is θ_{t+1}'s when it was applied. It adds the round to the totals.
func (s *state) report(r consensus.Round, st trainer.InnerStats, compute float64, x *exchange, applied bool, hash [32]byte) Report {
	rep := Report{Round: r.Number, Rounds: s.rounds, Applied: applied, TrainLoss: st.MeanLoss, Samples: st.Samples,
		PayloadBytes: x.payload(), AggregateBytes: x.downloaded(), ComputeSeconds: compute}
	if applied {
		rep.ModelHash = hash
	}
	s.totals.Rounds++
	s.totals.Samples += st.Samples
	s.totals.PayloadBytes += int64(rep.PayloadBytes)
	s.totals.AggregateBytes += int64(rep.AggregateBytes)
	s.totals.ComputeSeconds += compute
	return rep
}

// exchange is one round's slices: which upload each aggregator accepted, where each aggregate is
// fetched from, and which came back. Calls for slice i touch only slice i, so the driver's
// goroutines for different slices may call it concurrently.
type exchange struct {
	r      consensus.Round
	slices []slice
}

// slice is one slice's part of an exchange.
type slice struct {
	from     string    // the aggregator to fetch from: the one that accepted the upload, else the assigned one
	to       string    // the aggregator that accepted the upload; "" while none did
	dec      []float32 // the accepted upload, decoded
	bytes    int       // its encoded size
	header   protocol.Upload
	upload   []byte // the encoded upload, kept with its header for a resend to a new aggregator
	received bool   // the aggregate was fetched
	aborted  bool   // the aggregator answered that the round was abandoned
	down     int    // its encoded size
}

func newExchange(r consensus.Round) *exchange {
	x := &exchange{r: r, slices: make([]slice, len(r.Slices))}
	for i, sl := range r.Slices {
		x.slices[i].from = sl.Aggregator
	}
	return x
}

// accepted records that aggregator to accepted slice i's upload (u, msg), which decodes to dec.
func (x *exchange) accepted(i int, to string, u protocol.Upload, msg []byte, dec []float32) {
	s := &x.slices[i]
	s.to, s.from, s.header, s.upload, s.dec, s.bytes = to, to, u, msg, dec, len(msg)
}

// sent returns slice i's accepted upload, for a resend.
func (x *exchange) sent(i int) (protocol.Upload, []byte) {
	return x.slices[i].header, x.slices[i].upload
}

// fetchFrom is the aggregator to ask for slice i's aggregate.
func (x *exchange) fetchFrom(i int) string { return x.slices[i].from }

// follow takes in round now, the exchange's round as the coordinators record it after an
// aggregator failed to answer: if slice i moved to another aggregator (consensus.Reassign) its
// aggregate is fetched from there, and resend is true when the upload an earlier aggregator
// accepted must be sent there again (then resent or, failing that, nothing).
func (x *exchange) follow(i int, now consensus.Round) (resend bool) {
	s := &x.slices[i]
	agg := now.Slices[i].Aggregator
	if agg == s.from {
		return false
	}
	s.from = agg
	return s.to != "" && s.to != agg
}

// resent records that aggregator to accepted slice i's upload again.
func (x *exchange) resent(i int, to string) { x.slices[i].to, x.slices[i].from = to, to }

// ErrClosedEarly is returned for a round that closed with a new model before this peer fetched
// its aggregate: the peer re-syncs θ at the next round.
var ErrClosedEarly = errors.New("closed before its aggregate reached this peer")

// closed takes in round now as recorded after a failed fetch: abandoned when it closed with θ
// unchanged (nothing of it counts), an error wrapping ErrClosedEarly when it closed with a new
// model; neither while it is open.
func (x *exchange) closed(now consensus.Round) (abandoned bool, err error) {
	if now.Status != consensus.RoundClosed {
		return false, nil
	}
	if bytes.Equal(now.NewModelHash, x.r.ModelHash) {
		return true, nil
	}
	return false, fmt.Errorf("round %d %w", x.r.Number, ErrClosedEarly)
}

// received records that slice i's aggregate came back, n bytes encoded.
func (x *exchange) received(i, n int) { x.slices[i].received, x.slices[i].down = true, n }

// aborted records that slice i's aggregator answered that the round was abandoned.
func (x *exchange) aborted(i int) { x.slices[i].aborted = true }

// answered reports whether slice i's aggregator answered with its aggregate or an abandonment.
func (x *exchange) answered(i int) bool { return x.slices[i].received || x.slices[i].aborted }

// complete reports whether every slice's aggregate came back: the round is applied; otherwise it
// is abandoned here.
func (x *exchange) complete() bool {
	for _, s := range x.slices {
		if !s.received {
			return false
		}
	}
	return true
}

// receipt reports whether the round's work may be claimed: only when every slice was accepted.
func (x *exchange) receipt() bool {
	for _, s := range x.slices {
		if s.to == "" {
			return false
		}
	}
	return true
}

// payload is the encoded bytes of the accepted uploads.
func (x *exchange) payload() int {
	n := 0
	for _, s := range x.slices {
		n += s.bytes
	}
	return n
}

// downloaded is the encoded size of the aggregates fetched.
func (x *exchange) downloaded() int {
	n := 0
	for _, s := range x.slices {
		n += s.down
	}
	return n
}

// giveBack returns the accepted uploads to the residual, for a round abandoned: nothing of it
// counts, and error feedback loses nothing.
func (x *exchange) giveBack(f *feedback) {
	for i, s := range x.slices {
		if s.to != "" {
			f.giveBack(x.r.Slices[i], s.dec)
		}
	}
}

// feedback is the peer's error-feedback state: the residual e over the whole parameter vector,
// what earlier messages did not carry. Each slice s of an update is sent to its own aggregator, so
// the slices keep their parts of one residual: the message of slice s codes β·e[s] + Δ[s]
// (compress.Accumulate, the arithmetic compress.Residual uses), and e[s] keeps what an accepted
// message does not carry — everything, until one is accepted. A message is seeded by its round and
// slice. Calls for disjoint slices may run concurrently.
type feedback struct {
	e     []float32
	decay float32 // β: the residual becomes β·e + Δ before each message
	codec compress.Setting
	shape compress.Shape
}

// encode adds Δ[s] to e[s] (e[s] ← β·e[s] + Δ[s]) and returns the message coding it, for slice i
// of round, and the message decoded.
func (f *feedback) encode(round uint32, i int, sl consensus.SliceAssignment, delta []float32) (msg []byte, dec []float32, err error) {
	e := f.e[sl.Start:sl.End]
	compress.Accumulate(e, e, delta, f.decay)
	codec, err := compress.New(compress.Config{Setting: f.codec, Shape: f.shape.Slice(int(sl.Start), int(sl.End)), Seed: uint64(round)<<20 | uint64(i)})
	if err != nil {
		return nil, nil, err
	}
	if msg, err = codec.Encode(nil, e); err != nil {
		return nil, nil, err
	}
	if dec, err = codec.Decode(nil, msg); err != nil {
		return nil, nil, err
	}
	return msg, dec, nil
}

// sent takes an accepted message of slice sl, decoded, out of the residual.
func (f *feedback) sent(sl consensus.SliceAssignment, dec []float32) {
	e := f.e[sl.Start:sl.End]
	for j, v := range dec {
		e[j] -= v
	}
}

// giveBack puts an accepted message of slice sl, decoded, back into the residual.
func (f *feedback) giveBack(sl consensus.SliceAssignment, dec []float32) {
	e := f.e[sl.Start:sl.End]
	for j, v := range dec {
		e[j] += v
	}
}

// reset zeroes the residual: θ was replaced, and what was owed towards the old one is void.
func (f *feedback) reset() { clear(f.e) }
