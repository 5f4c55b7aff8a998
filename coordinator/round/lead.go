package round

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
)

// Leadership is who leads the cluster as this node sees it, and since when it has seen that
// leader. Leader is empty while no leader is known.
type Leadership struct {
	Leader string
	Since  time.Time
}

// Settling reports whether leadership is in flux for open round r: no leader known, or a new one
// that took over after the round opened and has not yet moved a slice or the deadline (which it
// does at once: Extend).
func Settling(r consensus.Round, l Leadership) bool {
	return l.Leader == "" || l.Since.After(time.UnixMilli(r.OpenedAt)) && r.Reassignments == 0
}

// View is what the leader's decision for one cohort reads.
type View struct {
	Now    time.Time
	Config Config // zero fields mean the defaults

	Cohort     consensus.Cohort
	MinMembers uint32            // the proposal's minimum members (0 counts as 1)
	Rounds     []consensus.Round // the cohort's rounds, oldest first
	Applied    uint32            // rounds the local replica has applied
	Hash       [32]byte          // the replica's model hash
	Params     int               // the model's parameter count

	Self         string   // this coordinator's key ID
	Coordinators []string // the registered coordinators, sorted
	Leadership   Leadership

	// What this leader did before for the cohort: the round it last asked to extend, when it
	// last checked the open round's aggregators, and how many checks in a row each failed.
	Extended  uint32
	LastCheck time.Time
	Suspects  map[string]int

	// Filled by the caller after a Check: the coordinators that answered a ping (Self always),
	// in Coordinators' order, and the members the scores of the rounds before the last closed
	// one distrust (the last is scored while the next trains; see next).
	Checked    bool
	Live       []string
	Distrusted map[string]bool
}

// Kind is what an Action asks of the leader.
type Kind int

const (
	Wait     Kind = iota // nothing to do this tick
	Check                // ping the coordinators, fill View.Live and View.Distrusted, and decide again
	Open                 // open round Round (consensus.OpenRoundBody)
	Close                // close round Round with the replica's hash (consensus.CloseRoundBody)
	Abandon              // close round Round with θ unchanged: an aggregate could not be fetched
	Extend               // push round Round's deadline to Deadline (consensus.ExtendRoundBody)
	Reassign             // move slices to live coordinators (consensus.ReassignBody, one per Move)
)

func (k Kind) String() string {
	switch k {
	case Wait:
		return "wait"
	case Check:
		return "check"
	case Open:
		return "open"
	case Close:
		return "close"
	case Abandon:
		return "abandon"
	case Extend:
		return "extend"
	case Reassign:
		return "reassign"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Move moves one slice of the open round to another aggregator.
type Move struct {
	Slice    uint32
	From, To string
}

// Action is the leader's next step for a cohort.
type Action struct {
	Kind  Kind
	Round uint32 // the round acted on (Open: the new round's number)
	// Open: the round's participants (sorted), those left out of its aggregate, its slices and
	// seed. Open, Extend and Reassign: the round's (new) deadline, unix milliseconds.
	Participants []string
	Excluded     []string
	Slices       []consensus.SliceAssignment
	Seed         uint64
	Deadline     int64
	// Close and Abandon: the hash recorded; Open: the model hash the round starts from.
	ModelHash [32]byte
	Why       string
	Moves     []Move
	// LiveChecked says the decision checked the aggregators: the caller records View.Now as
	// View.LastCheck and Suspects as View.Suspects for the next decision (whatever Kind is).
	LiveChecked bool
	Suspects    map[string]int
}

// AbandonNote is the Why of an Abandon.
const AbandonNote = "abandoned: an aggregate could not be fetched"

// Next returns the leader's next action for the cohort of v: open the next round once the
// previous one closed (and, for a little while, was scored); close the open round once every
// participant reported or its deadline passed, if the replica has applied it; abandon it once
// AbortAfter has passed the deadline unapplied; else give a round an earlier leader opened a
// deadline a whole round-time from now (Extend, once), or move the slices of aggregators that
// failed two checks in a row to live coordinators (Reassign, at most every LiveCheck).
func Next(v View) Action {
	v.Config = v.Config.WithDefaults()
	if v.Cohort.Status == consensus.CohortDone {
		return Action{Kind: Wait}
	}
	now := v.Now.UnixMilli()
	var open *consensus.Round
	if n := len(v.Rounds); n > 0 && v.Rounds[n-1].Status == consensus.RoundOpen {
		open = &v.Rounds[n-1]
	}
	switch {
	case open == nil:
		return next(v)
	case v.Applied == open.Number:
		if len(open.Receipts) < len(open.Participants) && now <= open.Deadline {
			return Action{Kind: Wait}
		}
		return Action{Kind: Close, Round: open.Number, ModelHash: v.Hash}
	case now > open.Deadline+v.Config.AbortAfter.Milliseconds() && v.Applied == open.Number-1:
		return Action{Kind: Abandon, Round: open.Number, ModelHash: v.Hash, Why: AbandonNote}
	case v.Applied == open.Number-1:
		if v.Leadership.Since.After(time.UnixMilli(open.OpenedAt)) && open.Reassignments == 0 && v.Extended != open.Number {
			return Action{Kind: Extend, Round: open.Number, Deadline: ExtendedDeadline(*open, now)}
		}
		return reassign(v, *open)
	}
	return Action{Kind: Wait}
}

// next decides on opening the round after the last.
func next(v View) Action {
	c := v.Cohort
	if uint32(len(c.Members)) < max(v.MinMembers, 1) || v.Applied != c.CurrentRound {
		return Action{Kind: Wait}
	}
	// The next round leaves out of its aggregate whom the scores distrust: the scores of the
	// rounds before the last, t − 1 and earlier when t + 1 opens. The last round is scored while
	// the next trains, so whether its scores were in time does not decide who is left out: the
	// exclusions, and so the model and the payouts, do not depend on how fast the validator was.
	// Round t − 1 had a whole round to be scored; wait (a little) for it if it was not.
	if n := len(v.Rounds); n > 1 && !v.Rounds[n-2].Scored && v.Now.Sub(time.UnixMilli(v.Rounds[n-1].ClosedAt)) < v.Config.ScoreWait {
		return Action{Kind: Wait}
	}
	if !v.Checked {
		return Action{Kind: Check}
	}
	parts := make([]string, 0, len(c.Members))
	for _, m := range c.Members {
		parts = append(parts, m.Member)
	}
	slices.Sort(parts)
	var excluded []string
	for _, id := range parts {
		if v.Distrusted[id] {
			excluded = append(excluded, id)
		}
	}
	if len(excluded) == len(parts) {
		excluded = nil // nobody left: aggregate everyone rather than nothing
	}
	var sls []consensus.SliceAssignment
	for _, sl := range protocol.Slices(v.Params, v.Live) {
		sls = append(sls, consensus.SliceAssignment{Start: uint64(sl.Start), End: uint64(sl.End), Aggregator: sl.Aggregator})
	}
	return Action{Kind: Open, Round: c.CurrentRound + 1, Participants: parts, Excluded: excluded, Slices: sls,
		ModelHash: v.Hash, Seed: uint64(v.Now.UnixNano()), Deadline: v.Now.Add(Timeout(v.Rounds, v.Config.Timeout)).UnixMilli()}
}

// reassign moves the slices of open whose aggregator failed two live checks in a row (a loaded
// node may miss one ping) to live coordinators, giving the round a whole round-time for uploads
// from now so that participants can resend them there. It checks at most every LiveCheck. The
// moves go round-robin over the live coordinators, as if every earlier move succeeded; one that
// fails is retried at the next check.
func reassign(v View, open consensus.Round) Action {
	if v.Now.Sub(v.LastCheck) < v.Config.LiveCheck {
		return Action{Kind: Wait}
	}
	others := false
	for _, sl := range open.Slices {
		others = others || sl.Aggregator != v.Self
	}
	if !others {
		return Action{Kind: Wait, LiveChecked: true, Suspects: v.Suspects}
	}
	if !v.Checked {
		return Action{Kind: Check}
	}
	alive := map[string]bool{}
	for _, id := range v.Live {
		alive[id] = true
	}
	suspects := map[string]int{}
	for id, n := range v.Suspects {
		suspects[id] = n
	}
	for _, sl := range open.Slices {
		if alive[sl.Aggregator] {
			delete(suspects, sl.Aggregator)
		} else {
			suspects[sl.Aggregator]++
		}
	}
	a := Action{Kind: Wait, LiveChecked: true, Suspects: suspects}
	var moves []Move
	for i, sl := range open.Slices {
		if alive[sl.Aggregator] || len(v.Live) == 0 || suspects[sl.Aggregator] < 2 {
			continue
		}
		moves = append(moves, Move{Slice: uint32(i), From: sl.Aggregator, To: v.Live[(i+len(moves))%len(v.Live)]})
	}
	if len(moves) > 0 {
		a.Kind, a.Round, a.Moves, a.Deadline = Reassign, open.Number, moves, ExtendedDeadline(open, v.Now.UnixMilli())
	}
	return a
}

// ExtendedDeadline is the deadline (unix ms) that leaves round r a whole round-time for uploads
// from now: uploads close at protocol.UploadDeadline, 3/4 of the way from opening to the deadline.
func ExtendedDeadline(r consensus.Round, now int64) int64 {
	return r.OpenedAt + (now-r.OpenedAt+r.Deadline-r.OpenedAt)*4/3
}

// Timeout is the time a new round gets: timeout, or, once rounds have run, three times the
// longest time to the last accepted receipt in the last three closed rounds with receipts (at
// least 5s) when that is shorter, so that a failed aggregator or a straggler costs a few
// round-times rather than the full timeout.
func Timeout(rounds []consensus.Round, timeout time.Duration) time.Duration {
	var slowest time.Duration
	seen := 0
	for i := len(rounds) - 1; i >= 0 && seen < 3; i-- {
		r := rounds[i]
		if r.Status != consensus.RoundClosed || len(r.Receipts) == 0 {
			continue
		}
		for _, rc := range r.Receipts {
			if rc.At > r.ClosedAt {
				continue // reported after the close (through a failover): not the round's pace
			}
			slowest = max(slowest, time.Duration(rc.At-r.OpenedAt)*time.Millisecond)
		}
		seen++
	}
	if seen == 0 {
		return timeout
	}
	return min(timeout, max(3*slowest, 5*time.Second))
}

// String prints an action on one line, for logs and tests.
func (a Action) String() string {
	var b strings.Builder
	b.WriteString(a.Kind.String())
	if a.Kind != Wait && a.Kind != Check {
		fmt.Fprintf(&b, " round=%d", a.Round)
	}
	switch a.Kind {
	case Open:
		fmt.Fprintf(&b, " participants=%s", strings.Join(a.Participants, ","))
		if len(a.Excluded) > 0 {
			fmt.Fprintf(&b, " excluded=%s", strings.Join(a.Excluded, ","))
		}
		for _, s := range a.Slices {
			fmt.Fprintf(&b, " [%d,%d)@%s", s.Start, s.End, s.Aggregator)
		}
		fmt.Fprintf(&b, " deadline=%d", a.Deadline)
	case Extend:
		fmt.Fprintf(&b, " deadline=%d", a.Deadline)
	case Reassign:
		for _, m := range a.Moves {
			fmt.Fprintf(&b, " slice%d:%s->%s", m.Slice, m.From, m.To)
		}
		fmt.Fprintf(&b, " deadline=%d", a.Deadline)
	case Abandon:
		fmt.Fprintf(&b, " (%s)", a.Why)
	}
	if a.LiveChecked {
		ids := make([]string, 0, len(a.Suspects))
		for id := range a.Suspects {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		b.WriteString(" checked")
		for _, id := range ids {
			fmt.Fprintf(&b, " %s:%d", id, a.Suspects[id])
		}
	}
	return b.String()
}
