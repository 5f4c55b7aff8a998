package consensus

// The types below are the replicated records. Queries on State return deep copies of them.

// Coordinator is a coordinator node key registered in the state.
type Coordinator struct {
	_msgpack  struct{} `msgpack:",as_array"`
	ID        string
	PublicKey []byte
	Name      string
	AddedAt   int64 // unix ms
}

// Member is a registered community member.
type Member struct {
	_msgpack     struct{} `msgpack:",as_array"`
	ID           string
	PublicKey    []byte
	Name         string
	Contributors []string // sorted
	RegisteredAt int64    // unix ms
}

// ProposalStatus is the life-cycle state of a proposal.
type ProposalStatus string

// Proposal statuses. A proposal is open until tallied; expired means nobody voted.
const (
	ProposalOpen     ProposalStatus = "open"
	ProposalPassed   ProposalStatus = "passed"
	ProposalRejected ProposalStatus = "rejected"
	ProposalExpired  ProposalStatus = "expired"
)

// Vote is one member's vote on a proposal. Weight is the weight the vote had when cast; Tally
// re-evaluates every weight from the ledger at tally time and stores the counted weight here.
type Vote struct {
	_msgpack struct{} `msgpack:",as_array"`
	Member   string
	Yes      bool
	Weight   uint64
	At       int64
}

// Proposal is a proposed training run and its vote.
type Proposal struct {
	_msgpack       struct{} `msgpack:",as_array"`
	ID             uint64
	Name           string
	Proposer       string
	Model          string
	Dataset        string
	ValidationHash []byte
	Params         Hyperparams
	RewardPool     uint64
	MinMembers     uint32
	QuorumBP       uint32
	ThresholdBP    uint32
	CreatedAt      int64
	Deadline       int64  // unix ms; votes are accepted while the stamped time is < Deadline
	Votes          []Vote // sorted by member
	Status         ProposalStatus
	// Filled by Tally.
	EligibleWeight uint64
	YesWeight      uint64
	NoWeight       uint64
	Cohort         uint64 // the cohort created when passed, else 0
}

// CohortStatus is the life-cycle state of a cohort.
type CohortStatus string

// Cohort statuses: forming until its first round opens, running, done after its last round closes.
const (
	CohortForming CohortStatus = "forming"
	CohortRunning CohortStatus = "running"
	CohortDone    CohortStatus = "done"
)

// CohortMember is a member in a cohort with the data it brought.
type CohortMember struct {
	_msgpack     struct{} `msgpack:",as_array"`
	Member       string
	Contributors []ContributorData // sorted by name
	JoinedAt     int64
	Order        uint32 // 1-based join order
}

// Cohort is the group training the model of a passed proposal.
type Cohort struct {
	_msgpack     struct{} `msgpack:",as_array"`
	ID           uint64
	Proposal     uint64
	Members      []CohortMember // in join order
	Status       CohortStatus
	CurrentRound uint32 // the latest opened round, 0 before the first
	ModelHash    []byte // hash of the model after the latest closed round
}

// RoundStatus is the life-cycle state of a round.
type RoundStatus string

// Round statuses.
const (
	RoundOpen   RoundStatus = "open"
	RoundClosed RoundStatus = "closed"
)

// Receipt is a participant's signed report of its work in a round.
type Receipt struct {
	_msgpack       struct{} `msgpack:",as_array"`
	Member         string
	SamplesUsed    uint64
	BytesSent      uint64
	ModelHashAfter []byte
	At             int64
}

// Round is one outer round of a cohort.
type Round struct {
	_msgpack     struct{} `msgpack:",as_array"`
	Cohort       uint64
	Number       uint32
	Participants []string // sorted
	Slices       []SliceAssignment
	ModelHash    []byte // expected θ_t hash
	Seed         uint64
	OpenedAt     int64
	Deadline     int64
	Receipts     []Receipt // sorted by member
	Status       RoundStatus
	NewModelHash []byte // θ_{t+1} hash recorded by CloseRound
	ClosedAt     int64
	// Filled by ScoreCommit.
	Scored    bool
	Budget    uint64 // budget available to the round (base + carry)
	Paid      uint64 // paid out; Budget-Paid carried over
	Influence []Influence
	Flags     []Flag
	Metrics   RoundMetrics
	ScoreNote string
	// Reassignments counts the times a leader moved the open round's slices to other aggregators
	// (Reassign) or its deadline later (ExtendRound).
	Reassignments uint32
	// Excluded are participants whose updates are left out of the aggregate (OpenRoundBody).
	Excluded []string
}

// Balance is one contributor's earned total.
type Balance struct {
	_msgpack    struct{} `msgpack:",as_array"`
	Contributor string
	Amount      uint64
}

// Pool is a cohort's reward pool.
type Pool struct {
	_msgpack   struct{} `msgpack:",as_array"`
	Cohort     uint64
	Total      uint64 // the proposal's reward pool
	Rounds     uint32 // rounds the pool is spread over
	Paid       uint64
	Carry      uint64 // budget of scored rounds not paid out (nobody earned), available later
	LastScored uint32 // the last round scored, 0 before any
	RoundsPaid uint32 // rounds with a ScoreCommit
	DataBP     uint32 // share of each budget paid for data, basis points
	ComputeBP  uint32 // share paid for compute
}

// Remaining is the part of the pool not paid out yet.
func (p Pool) Remaining() uint64 { return p.Total - p.Paid }

// Payout is what one contributor earned in one round.
type Payout struct {
	_msgpack    struct{} `msgpack:",as_array"`
	Cohort      uint64
	Round       uint32
	Contributor string
	Data        uint64
	Compute     uint64
}

// Ledger is the contribution ledger: balances sorted by contributor, pools by cohort, payouts in
// the order they were made (cohort, round, contributor within one commit).
type Ledger struct {
	Balances []Balance
	Pools    []Pool
	Payouts  []Payout
}

// Result is what applying a command returns.
type Result struct {
	_msgpack struct{} `msgpack:",as_array"`
	Type     CommandType
	// ID: the member or coordinator ID (register, add-coordinator), proposal ID (propose, vote,
	// tally), cohort ID (join, and tally of a passed proposal in Cohort), round number (open-round,
	// receipt, score-commit, close-round).
	ID     uint64
	Member string
	Cohort uint64
	Status string // proposal status after tally; round/cohort status otherwise
	Amount uint64 // score-commit: amount paid
	// Duplicate is set when the request had already been applied and this is its cached result,
	// or when a ScoreCommit names a round that was already scored.
	Duplicate bool
}
