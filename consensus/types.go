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
	// Granted is the vote weight operators granted the member (Grant); its vote weight is this
	// plus its contributors' earned balances.
	Granted uint64
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
	MaxMembers     uint32 // the cohort's member cap (ProposeBody.MaxMembers, 0 replaced by the limit)
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
	Reason         string // why it was rejected or expired, "" when passed
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

// Receipt is a participant's signed report of its work in a round. SamplesUsed is what it
// claimed clamped to what the protocol allows it (State.SampleCap); Claimed is what it claimed.
type Receipt struct {
	_msgpack       struct{} `msgpack:",as_array"`
	Member         string
	SamplesUsed    uint64
	BytesSent      uint64
	ModelHashAfter []byte
	At             int64
	Claimed        uint64
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

// Treasury is what operators funded (Fund) and no cohort's pool has taken yet. Open proposals
// reserve their reward pools in it; a passed proposal's pool is taken from it at tally.
type Treasury struct {
	_msgpack struct{} `msgpack:",as_array"`
	Balance  uint64   // funded and not yet given to a pool
	Reserved uint64   // the reward pools of open proposals, ≤ Balance
	Funded   uint64   // everything ever funded: bounds every ledger sum
}

// Unreserved is the part of the balance a new proposal's reward pool may take.
func (t Treasury) Unreserved() uint64 { return t.Balance - t.Reserved }

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
	// Returned is what the pool still held when its last round was scored — a last round whose
	// updates all failed to help, or rounds that could not be scored — given back to the
	// treasury, where a later proposal's pool may take it. Nothing stays in a finished pool.
	Returned uint64
}

// Remaining is the part of the pool not paid out (nor returned) yet.
func (p Pool) Remaining() uint64 { return p.Total - p.Paid - p.Returned }

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
// the order they were made (cohort, round, contributor within one commit), and the treasury.
type Ledger struct {
	Balances []Balance
	Pools    []Pool
	Payouts  []Payout
	Treasury Treasury
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
	Amount uint64 // score-commit: amount paid; fund: the treasury's balance after; grant: the votes granted
	// Duplicate is set when the request had already been applied and this is its cached result,
	// or when a ScoreCommit names a round that was already scored.
	Duplicate bool
}

// Limits are the cluster's limits, part of the replicated state (SetLimits changes them). A zero
// field means its documented default (the Default* constants); Effective fills them in. They bound
// what a stranger can make the state hold or the coordinators compute.
type Limits struct {
	_msgpack struct{} `msgpack:",as_array"`
	// MaxModelParams bounds a proposed model's parameter count (ParseModel).
	MaxModelParams uint64
	// MaxModelLayers bounds its layers (weight layers of an MLP, blocks of a transformer).
	MaxModelLayers uint32
	// MaxModelWidth bounds its widest dimension (ModelShape.Width).
	MaxModelWidth uint64
	// MaxRounds bounds a proposal's outer rounds.
	MaxRounds uint32
	// MaxInnerSteps bounds a proposal's inner steps H.
	MaxInnerSteps uint32
	// MaxBatch is the largest inner batch a receipt is paid for: a receipt's samples are clamped to
	// InnerSteps × MaxBatch (and to the data the member registered in the cohort).
	MaxBatch uint32
	// MaxRewardPool bounds one proposal's reward pool.
	MaxRewardPool uint64
	// MaxVotingPeriodMs bounds a proposal's voting period.
	MaxVotingPeriodMs int64
	// MinQuorumBP and MinThresholdBP are the least quorum and threshold a proposal may ask for.
	MinQuorumBP    uint32
	MinThresholdBP uint32
	// MaxCohortMembers bounds a cohort's members; it must stay below MaxListLen (a round's
	// participants travel in one list).
	MaxCohortMembers uint32
	// MaxMembers bounds the registered members.
	MaxMembers uint32
	// MaxContributorsPerMember bounds the contributors one member speaks for.
	MaxContributorsPerMember uint32
	// MaxOpenProposals and MaxOpenProposalsPerMember bound the proposals not tallied yet, in all
	// and per proposer.
	MaxOpenProposals          uint32
	MaxOpenProposalsPerMember uint32
}

// Defaults of the Limits fields.
const (
	DefaultMaxModelParams            = 16_777_216
	DefaultMaxModelLayers            = 64
	DefaultMaxModelWidth             = 65_536
	DefaultMaxRounds                 = 10_000
	DefaultMaxInnerSteps             = 10_000
	DefaultMaxBatch                  = 256
	DefaultMaxRewardPool             = 1_000_000_000_000_000
	DefaultMaxVotingPeriodMs         = 30 * 24 * 3600 * 1000 // 30 days
	DefaultMinQuorumBP               = 2_000
	DefaultMinThresholdBP            = 5_000
	DefaultMaxCohortMembers          = 2_048
	DefaultMaxMembers                = 100_000
	DefaultMaxContributorsPerMember  = 16
	DefaultMaxOpenProposals          = 256
	DefaultMaxOpenProposalsPerMember = 4
)

// Effective returns l with every zero field replaced by its default.
func (l Limits) Effective() Limits {
	def := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	if l.MaxModelParams == 0 {
		l.MaxModelParams = DefaultMaxModelParams
	}
	if l.MaxModelWidth == 0 {
		l.MaxModelWidth = DefaultMaxModelWidth
	}
	if l.MaxRewardPool == 0 {
		l.MaxRewardPool = DefaultMaxRewardPool
	}
	if l.MaxVotingPeriodMs == 0 {
		l.MaxVotingPeriodMs = DefaultMaxVotingPeriodMs
	}
	def(&l.MaxModelLayers, DefaultMaxModelLayers)
	def(&l.MaxRounds, DefaultMaxRounds)
	def(&l.MaxInnerSteps, DefaultMaxInnerSteps)
	def(&l.MaxBatch, DefaultMaxBatch)
	def(&l.MinQuorumBP, DefaultMinQuorumBP)
	def(&l.MinThresholdBP, DefaultMinThresholdBP)
	def(&l.MaxCohortMembers, DefaultMaxCohortMembers)
	def(&l.MaxMembers, DefaultMaxMembers)
	def(&l.MaxContributorsPerMember, DefaultMaxContributorsPerMember)
	def(&l.MaxOpenProposals, DefaultMaxOpenProposals)
	def(&l.MaxOpenProposalsPerMember, DefaultMaxOpenProposalsPerMember)
	return l
}

// Validate checks limits a SetLimits command sets: each must leave the state's other bounds
// intact (e.g. a cohort's participants must fit in one command list).
func (l Limits) Validate() error {
	e := l.Effective()
	switch {
	case e.MaxCohortMembers >= MaxListLen:
		return errf(ErrInvalid, "limit MaxCohortMembers %d must be below MaxListLen %d", e.MaxCohortMembers, MaxListLen)
	case e.MaxContributorsPerMember > MaxListLen:
		return errf(ErrInvalid, "limit MaxContributorsPerMember %d exceeds MaxListLen %d", e.MaxContributorsPerMember, MaxListLen)
	case e.MinQuorumBP > 10000:
		return errf(ErrInvalid, "limit MinQuorumBP %d exceeds 10000", e.MinQuorumBP)
	case e.MinThresholdBP > 10000:
		return errf(ErrInvalid, "limit MinThresholdBP %d exceeds 10000", e.MinThresholdBP)
	case e.MaxVotingPeriodMs < 0:
		return errf(ErrInvalid, "limit MaxVotingPeriodMs %d is negative", e.MaxVotingPeriodMs)
	case e.MaxOpenProposalsPerMember > e.MaxOpenProposals:
		return errf(ErrInvalid, "limit MaxOpenProposalsPerMember %d exceeds MaxOpenProposals %d", e.MaxOpenProposalsPerMember, e.MaxOpenProposals)
	}
	return nil
}
