package attribution

import "github.com/cohortlab/cohort/consensus"

// Trace is what the leader scored one round from and what it decided: enough to recompute the
// decision (Score(Sums, Participants, cfg) gives Result again), and to replay a finished cohort's
// rounds through another scoring rule when the rule itself is being measured (cohort audit).
type Trace struct {
	Cohort       uint64
	Round        uint32
	Sums         Sums
	Participants []Participant
	// Before and After are the validator's loss and accuracy at θ_t and θ_{t+1}, when measured.
	Before, After consensus.RoundMetrics
	Result        Result
}
