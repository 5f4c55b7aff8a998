package round

import (
	"errors"
	"slices"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
)

// The errors Slice.Admit returns.
var (
	// ErrLate: the slice closed; the upload cannot count any more.
	ErrLate = errors.New("round: slice closed")
	// ErrHeld: the upload deadline passed while the slice is held open as leadership settles; the
	// upload counts only if the new leader moves the deadline, so the sender should resend it.
	ErrHeld = errors.New("round: past the upload deadline, held while a new leader may move it")
	// ErrDuplicate: the member's update for the slice arrived already; it counts once.
	ErrDuplicate = errors.New("round: update already received")
)

// holdRecheck is how often a held slice looks again whether it may close.
const holdRecheck = 500 * time.Millisecond

// Update is one member's update of a slice and the weight it carries in the aggregate.
type Update struct {
	Vals   []float32
	Weight uint64
}

// SliceView is what a slice's rules read besides the slice: the round as the replicated state
// records it now (the leader may have moved its deadline since the slice was made), the
// leadership, and the round configuration (AbortAfter; zero means the default).
type SliceView struct {
	Round      consensus.Round
	Leadership Leadership
	Config     Config
}

// Slice is the aggregation state of one slice of one round on its aggregator: which participants
// sent which update, and whether it closed.
type Slice struct {
	Round        uint32 // the round's number
	Start, End   int
	Participants []string        // sorted
	Excluded     map[string]bool // participants left out of the aggregate
	Updates      map[string]Update
	closed       bool
}

// NewSlice returns the empty aggregation of slice [start, end) of round r.
func NewSlice(r consensus.Round, start, end int) *Slice {
	s := &Slice{Round: r.Number, Start: start, End: end, Participants: r.Participants, Excluded: map[string]bool{}, Updates: map[string]Update{}}
	for _, id := range r.Excluded {
		s.Excluded[id] = true
	}
	return s
}

// Closed reports whether the slice closed (Finalize).
func (s *Slice) Closed() bool { return s.closed }

// Complete reports whether every participant's update arrived: the slice may close now.
func (s *Slice) Complete() bool { return len(s.Updates) == len(s.Participants) }

// UploadDeadline is when uploads to the slice are due by the round as recorded in v.
func UploadDeadline(v SliceView) time.Time {
	return time.UnixMilli(protocol.UploadDeadline(v.Round.OpenedAt, v.Round.Deadline))
}

// Admit records member's update (the caller checked it is a participant and the values) at now.
// It refuses with ErrLate once the slice closed, with ErrHeld past the upload deadline of a slice
// that has updates already or while leadership settles (a slice that nothing reached, with no
// leader change, takes late uploads: the round would be lost otherwise), and with ErrDuplicate a
// second update of a member.
func (s *Slice) Admit(member string, weight uint64, vals []float32, now time.Time, v SliceView) error {
	if s.closed {
		return ErrLate
	}
	if now.After(UploadDeadline(v)) && (len(s.Updates) > 0 || Settling(v.Round, v.Leadership)) {
		return ErrHeld
	}
	if _, dup := s.Updates[member]; dup {
		return ErrDuplicate
	}
	s.Updates[member] = Update{Vals: vals, Weight: weight}
	return nil
}

// Due reports whether the slice should close at now, and otherwise when to ask again (zero once
// it closed). It closes at the upload deadline of the round as recorded now (the leader may have
// pushed it back: Reassign, Extend), unless held: a slice that nothing reached waits until the
// round would be abandoned, as a round opened just before its leader died is known to peers only
// once a new leader commits it; a slice still missing updates waits, up to half that, while
// leadership settles, as peers that long-polled the dead leader learn of the round late.
func (s *Slice) Due(now time.Time, v SliceView) (closeNow bool, next time.Time) {
	if s.closed {
		return false, time.Time{}
	}
	if up := UploadDeadline(v); now.Before(up) {
		return false, up
	}
	if s.hold(now, v) {
		return false, now.Add(holdRecheck)
	}
	return true, time.Time{}
}

func (s *Slice) hold(now time.Time, v SliceView) bool {
	v.Config = v.Config.WithDefaults()
	deadline := time.UnixMilli(v.Round.Deadline)
	if len(s.Updates) == 0 {
		return now.Before(deadline.Add(v.Config.AbortAfter))
	}
	if s.Complete() || !now.Before(deadline.Add(v.Config.AbortAfter/2)) {
		return false
	}
	return Settling(v.Round, v.Leadership)
}

// ErrEmpty is returned by Finalize for a slice that no update reached (or whose updates were all
// left out): it has no aggregate, and its round is abandoned.
var ErrEmpty = errors.New("round: no update to aggregate")

// Finalize closes the slice and returns its aggregate (Aggregate with cfg's multiples) and how
// many updates arrived. After it, Admit answers ErrLate. A second Finalize is a programmer error.
func (s *Slice) Finalize(cfg Config) ([]float32, int, error) {
	if s.closed {
		panic("round: slice finalized twice")
	}
	s.closed = true
	if len(s.Updates) == 0 {
		return nil, 0, ErrEmpty
	}
	cfg = cfg.WithDefaults()
	avg, err := Aggregate(s.Updates, s.Excluded, cfg.ClipMultiple, cfg.DropMultiple)
	return avg, len(s.Updates), err
}

// Members returns the members whose updates arrived, sorted.
func (s *Slice) Members() []string {
	ids := make([]string, 0, len(s.Updates))
	for id := range s.Updates {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// DropValues forgets the updates' values, keeping who sent one and its weight (once the
// validation sums are computed, they are all scoring needs).
func (s *Slice) DropValues() {
	for m, u := range s.Updates {
		s.Updates[m] = Update{Weight: u.Weight}
	}
}
