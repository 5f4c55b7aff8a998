package consensus

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/hdevalence/ed25519consensus"
)

// DedupeWindow is how many applied request IDs the state remembers per issuer, with their Results.
//
// The dedupe table is bounded: per issuer it keeps the DedupeWindow highest applied request IDs
// and a floor; IDs at or below the floor are rejected with ErrStaleRequest (the state can no longer
// tell a retry from a new request). Only authenticated issuers get an entry, so the table holds at
// most (members + coordinators) × DedupeWindow results. A client that keeps at most DedupeWindow
// requests in flight and numbers new requests increasingly never sees ErrStaleRequest.
const DedupeWindow = 256

// Budget split of each round between data and compute, basis points.
const (
	DataShareBP    = 8000
	ComputeShareBP = 2000
)

type roundKey struct {
	cohort uint64
	number uint32
}

type cachedResult struct {
	_msgpack  struct{} `msgpack:",as_array"`
	RequestID uint64
	Result    Result
}

type dedupeWindow struct {
	_msgpack struct{} `msgpack:",as_array"`
	Issuer   string
	Floor    uint64         // request IDs <= Floor are stale
	Recent   []cachedResult // sorted by RequestID, at most DedupeWindow
}

// State is the replicated state machine: members, proposals, cohorts, rounds and the ledger.
//
// It is a plain value: Apply reads no clock, randomness or I/O, so every replica that applies the
// same commands in the same order holds the same state (and the same Hash). State is not safe for
// concurrent use; the raft adapter serialises access.
type State struct {
	clock        int64 // the latest leader stamp seen; stamps are made monotone
	nextProposal uint64
	nextCohort   uint64
	limits       Limits   // as set by SetLimits; zero fields mean the defaults
	treasury     Treasury // Funded bounds every ledger sum and, with the granted votes, every weight

	coordinators map[string]*Coordinator
	members      map[string]*Member
	owners       map[string]string // contributor key (ContributorKey) -> member ID
	proposals    map[uint64]*Proposal
	cohorts      map[uint64]*Cohort
	rounds       map[roundKey]*Round
	balances     map[string]uint64
	pools        map[uint64]*Pool
	payouts      []Payout
	dedupe       map[string]*dedupeWindow
	approved     map[string]*ApprovedCoordinator // keys approved to register as coordinators
	motions      map[string]*Motion              // operator commands waiting for a majority

	// Derived from the above (rebuilt by Restore), not replicated state:
	openBy map[string]uint32 // proposer -> its open proposals
	open   uint32            // open proposals
	// byCohort holds, per cohort, the positions of its payouts in payouts (in order), so a
	// cohort's page of the ledger is read without scanning every cohort's.
	byCohort map[uint64][]int

	// preverified is a per-batch cache of verified signatures (not replicated state).
	preverified map[[32]byte]struct{}
	// hash caches Hash between state changes: Apply clears it, a restored state starts without.
	hash atomic.Pointer[[32]byte]
}

// NewState returns an empty state.
func NewState() *State {
	return &State{
		coordinators: map[string]*Coordinator{},
		members:      map[string]*Member{},
		owners:       map[string]string{},
		proposals:    map[uint64]*Proposal{},
		cohorts:      map[uint64]*Cohort{},
		rounds:       map[roundKey]*Round{},
		balances:     map[string]uint64{},
		pools:        map[uint64]*Pool{},
		dedupe:       map[string]*dedupeWindow{},
		approved:     map[string]*ApprovedCoordinator{},
		motions:      map[string]*Motion{},
		openBy:       map[string]uint32{},
		byCohort:     map[uint64][]int{},
	}
}

// Apply applies one command. It authenticates the envelope (ed25519 against the issuer's
// registered key), applies a request ID at most once (a retry returns the cached Result with
// Duplicate set), validates the body completely before changing anything, and returns the
// command's Result. On error the state is unchanged. The leader's stamp cmd.Time is made monotone:
// the effective time is max(every stamp seen so far).
func (s *State) Apply(cmd Command) (Result, error) {
	env := &cmd.Env
	if env.Version != Version {
		return Result{}, errf(ErrVersion, "envelope version %d", env.Version)
	}
	if env.RequestID == 0 {
		return Result{}, errf(ErrInvalid, "request ID 0 (request IDs start at 1)")
	}
	body, err := env.DecodeBody()
	if err != nil {
		return Result{}, err
	}
	if err := s.authenticate(env, body); err != nil {
		return Result{}, err
	}
	w := s.dedupe[env.Issuer]
	if w != nil {
		if env.RequestID <= w.Floor {
			return Result{}, errf(ErrStaleRequest, "request %d from %s (floor %d)", env.RequestID, env.Issuer, w.Floor)
		}
		i := sort.Search(len(w.Recent), func(i int) bool { return w.Recent[i].RequestID >= env.RequestID })
		if i < len(w.Recent) && w.Recent[i].RequestID == env.RequestID {
			r := w.Recent[i].Result
			r.Duplicate = true
			return r, nil
		}
	}
	now := s.clock
	if cmd.Time > now {
		now = cmd.Time
	}
	// Node stamps Leader on every entry it appends (Config.KeyID; the coordinator always sets
	// it); an entry without the stamp comes from a node that keeps no coordinator key.
	if env.Type.leaderOnly() && cmd.Leader != "" && env.Issuer != cmd.Leader {
		return Result{}, errf(ErrForbidden, "%s issued by coordinator %s but appended by leader %q: only the leader issues round commands", env.Type, env.Issuer, cmd.Leader)
	}
	var motion string
	if env.Type.operator() {
		// A body that could not apply is refused now, not kept as a motion for others to sign.
		if _, err := s.operate(body, true); err != nil {
			return Result{}, err
		}
		done, digest, res, err := s.second(now, env)
		if err != nil {
			return Result{}, err
		}
		motion = digest
		if !done {
			s.hash.Store(nil)
			res.Type = env.Type
			s.clock = now
			s.remember(env.Issuer, env.RequestID, res)
			return res, nil
		}
	}
	var res Result
	switch b := body.(type) {
	case *AddCoordinatorBody:
		res, err = s.addCoordinator(now, b)
	case *RegisterBody:
		res, err = s.register(now, b)
	case *ProposeBody:
		res, err = s.propose(now, env.Issuer, b)
	case *VoteBody:
		res, err = s.vote(now, env.Issuer, b)
	case *TallyBody:
		res, err = s.tally(now, b)
	case *JoinBody:
		res, err = s.join(now, env.Issuer, b)
	case *OpenRoundBody:
		res, err = s.openRound(now, b)
	case *ReceiptBody:
		res, err = s.receipt(now, env.Issuer, b)
	case *ScoreCommitBody:
		res, err = s.scoreCommit(b)
	case *CloseRoundBody:
		res, err = s.closeRound(now, b)
	case *ReassignBody:
		res, err = s.reassign(now, b)
	case *ExtendRoundBody:
		res, err = s.extendRound(now, b)
	case *SetLimitsBody, *FundBody, *GrantBody:
		res, err = s.operate(b, false)
	case *ApproveCoordinatorBody:
		res, err = s.operate(b, false)
	}
	if err != nil {
		return Result{}, err
	}
	if motion != "" {
		delete(s.motions, motion)
	}
	s.hash.Store(nil)
	res.Type = env.Type
	s.clock = now
	s.remember(env.Issuer, env.RequestID, res)
	return res, nil
}

// Verify checks, without applying anything, that env decodes and is signed by a key allowed to
// issue it in the current state. The coordinator can call it (through Node.View) to refuse
// forged or unknown-issuer commands before they reach the log; Apply checks again.
func (s *State) Verify(env Envelope) error {
	if env.Version != Version {
		return errf(ErrVersion, "envelope version %d", env.Version)
	}
	body, err := env.DecodeBody()
	if err != nil {
		return err
	}
	return s.authenticate(&env, body)
}

// signingKey returns the public key env must be signed with in the current state.
func (s *State) signingKey(env *Envelope, body Body) ([]byte, error) {
	switch b := body.(type) {
	case *RegisterBody:
		return b.PublicKey, nil // proof of possession of the key being registered
	case *AddCoordinatorBody:
		return b.PublicKey, nil // likewise; addCoordinator checks the key is approved
	}
	if c, ok := s.coordinators[env.Issuer]; ok {
		if !env.Type.coordinatorOnly() {
			return nil, errf(ErrForbidden, "coordinator %s cannot issue %s", env.Issuer, env.Type)
		}
		return c.PublicKey, nil
	}
	if m, ok := s.members[env.Issuer]; ok {
		if env.Type.coordinatorOnly() {
			return nil, errf(ErrForbidden, "member %s cannot issue %s", env.Issuer, env.Type)
		}
		return m.PublicKey, nil
	}
	if len(env.Sig) == 0 {
		return nil, errf(ErrUnsigned, "%s request %d from unknown issuer %q", env.Type, env.RequestID, env.Issuer)
	}
	return nil, errf(ErrUnknownIssuer, "%q (%s)", env.Issuer, env.Type)
}

// authenticate finds the key the envelope must be signed with and verifies the signature. A
// signature found in the preverified set (filled by the raft adapter, which verifies a batch in
// parallel) is not verified again; that set holds only (key, message, signature) triples for which
// ed25519consensus.Verify returned true, so the outcome is the same as verifying here.
func (s *State) authenticate(env *Envelope, body Body) error {
	pub, err := s.signingKey(env, body)
	if err != nil {
		return err
	}
	if s.preverified != nil && len(env.Sig) > 0 && IDOf(pub) == env.Issuer {
		if _, ok := s.preverified[sigDigest(pub, env)]; ok {
			return nil
		}
	}
	return env.Verify(ed25519.PublicKey(pub))
}

// sigDigest identifies a (key, signed bytes, signature) triple.
func sigDigest(pub []byte, env *Envelope) [32]byte {
	h := sha256.New()
	h.Write(pub)
	h.Write(env.Sig)
	h.Write(env.SigningBytes())
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// preverify verifies the signatures of cmds in parallel (workers goroutines) against the keys the
// current state names for them, and records those that verify, for the next Apply calls. Commands
// whose key is not known yet (e.g. a member registered earlier in the same batch) are left to
// Apply. Call clearPreverified after the batch. Used by the raft adapter only: State.Apply itself
// stays single-threaded.
func (s *State) preverify(cmds []*Command, workers int) {
	const minBatch = 16 // below this many signatures per worker, fewer workers
	type job struct {
		pub []byte
		env *Envelope
	}
	var jobs []job
	for _, c := range cmds {
		if c == nil || c.Env.Version != Version || len(c.Env.Sig) != ed25519.SignatureSize {
			continue
		}
		body, err := c.Env.DecodeBody()
		if err != nil {
			continue
		}
		pub, err := s.signingKey(&c.Env, body)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			continue
		}
		jobs = append(jobs, job{pub, &c.Env})
	}
	ok := make([]bool, len(jobs))
	digests := make([][32]byte, len(jobs))
	var wg sync.WaitGroup
	workers = max(1, min(workers, len(jobs)/minBatch))
	// Each worker batch-verifies a contiguous chunk (one multi-scalar multiplication for the whole
	// chunk, about twice as fast per signature as one at a time); a chunk that fails is verified
	// one by one to find the bad ones. ed25519consensus's batch and single verification accept
	// exactly the same signatures (ZIP 215), and Envelope.Verify uses the same rule, so the
	// outcome never depends on how a batch was cut.
	chunk := (len(jobs) + workers - 1) / workers
	for lo := 0; lo < len(jobs); lo += chunk {
		hi := min(lo+chunk, len(jobs))
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			msgs := make([][]byte, hi-lo)
			bv := ed25519consensus.NewPreallocatedBatchVerifier(hi - lo)
			for i := lo; i < hi; i++ {
				msgs[i-lo] = jobs[i].env.SigningBytes()
				bv.Add(jobs[i].pub, msgs[i-lo], jobs[i].env.Sig)
				digests[i] = sigDigest(jobs[i].pub, jobs[i].env)
			}
			all := hi-lo > 1 && bv.Verify()
			for i := lo; i < hi; i++ {
				ok[i] = all || ed25519consensus.Verify(jobs[i].pub, msgs[i-lo], jobs[i].env.Sig)
			}
		}(lo, hi)
	}
	wg.Wait()
	s.preverified = make(map[[32]byte]struct{}, len(jobs))
	for i := range jobs {
		if ok[i] {
			s.preverified[digests[i]] = struct{}{}
		}
	}
}

func (s *State) clearPreverified() { s.preverified = nil }

func (s *State) remember(issuer string, id uint64, res Result) {
	w := s.dedupe[issuer]
	if w == nil {
		w = &dedupeWindow{Issuer: issuer}
		s.dedupe[issuer] = w
	}
	i := sort.Search(len(w.Recent), func(i int) bool { return w.Recent[i].RequestID >= id })
	w.Recent = append(w.Recent, cachedResult{})
	copy(w.Recent[i+1:], w.Recent[i:])
	w.Recent[i] = cachedResult{RequestID: id, Result: res}
	if len(w.Recent) > DedupeWindow {
		w.Floor = w.Recent[0].RequestID
		w.Recent = append(w.Recent[:0], w.Recent[1:]...)
	}
}

// ---- validation helpers ----

func checkName(field, v string, required bool) error {
	if required && v == "" {
		return errf(ErrInvalid, "%s is empty", field)
	}
	if len(v) > MaxNameLen {
		return errf(ErrInvalid, "%s is %d bytes, limit %d", field, len(v), MaxNameLen)
	}
	return nil
}

func checkHash(field string, v []byte, required bool) error {
	if required && len(v) == 0 {
		return errf(ErrInvalid, "%s is empty", field)
	}
	if len(v) > MaxHashLen {
		return errf(ErrInvalid, "%s is %d bytes, limit %d", field, len(v), MaxHashLen)
	}
	return nil
}

func checkList(field string, n int, required bool) error {
	if required && n == 0 {
		return errf(ErrInvalid, "%s is empty", field)
	}
	if n > MaxListLen {
		return errf(ErrInvalid, "%s has %d entries, limit %d", field, n, MaxListLen)
	}
	return nil
}

// checkSortedUnique checks that names are non-empty, sorted and unique.
func checkSortedUnique(field string, names []string) error {
	return checkSortedUniqueWith(field, names, checkName)
}

// checkSortedUniqueWith is checkSortedUnique with check validating each name.
func checkSortedUniqueWith(field string, names []string, check func(field, v string, required bool) error) error {
	for i, n := range names {
		if err := check(field, n, true); err != nil {
			return err
		}
		if i > 0 && names[i-1] >= n {
			return errf(ErrInvalid, "%s not sorted and unique at %q", field, n)
		}
	}
	return nil
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// ---- handlers: each validates everything before it mutates ----

func (s *State) register(now int64, b *RegisterBody) (Result, error) {
	if len(b.PublicKey) != ed25519.PublicKeySize {
		return Result{}, errf(ErrInvalid, "member public key is %d bytes", len(b.PublicKey))
	}
	if err := checkPrintable("member name", b.Name, true); err != nil {
		return Result{}, err
	}
	l := s.limits.Effective()
	if len(b.Contributors) > int(l.MaxContributorsPerMember) {
		return Result{}, errf(ErrLimit, "member speaks for %d contributors, limit MaxContributorsPerMember %d", len(b.Contributors), l.MaxContributorsPerMember)
	}
	if err := checkSortedUniqueWith("contributors", b.Contributors, checkPrintable); err != nil {
		return Result{}, err
	}
	id := IDOf(b.PublicKey)
	if _, ok := s.members[id]; ok {
		return Result{}, errf(ErrExists, "member %s", id)
	}
	if len(s.members) >= int(l.MaxMembers) {
		return Result{}, errf(ErrLimit, "%d members registered, limit MaxMembers %d", len(s.members), l.MaxMembers)
	}
	if _, ok := s.coordinators[id]; ok {
		return Result{}, errf(ErrExists, "key %s is registered as a coordinator", id)
	}
	s.members[id] = &Member{ID: id, PublicKey: cloneBytes(b.PublicKey), Name: b.Name,
		Contributors: append([]string{}, b.Contributors...), RegisteredAt: now}
	for _, c := range b.Contributors {
		s.owners[ContributorKey(id, c)] = id
	}
	return Result{Member: id}, nil
}

func (s *State) propose(now int64, issuer string, b *ProposeBody) (Result, error) {
	if err := checkPrintable("proposal name", b.Name, true); err != nil {
		return Result{}, err
	}
	for _, f := range []struct {
		field, v string
		req      bool
	}{{"model", b.Model, true}, {"dataset", b.Dataset, true},
		{"codec", b.Params.Codec, false}, {"outer lr", b.Params.OuterLR, false},
		{"outer momentum", b.Params.OuterMomentum, false}, {"error decay", b.Params.ErrorDecay, false},
		{"inner lr", b.Params.InnerLR, false}, {"weight decay", b.Params.WeightDecay, false},
		{"lr schedule", b.Params.Schedule, false}, {"clip norm", b.Params.ClipNorm, false},
		{"down codec", b.Params.DownCodec, false}} {
		if err := checkName(f.field, f.v, f.req); err != nil {
			return Result{}, err
		}
	}
	if err := checkHash("validation hash", b.ValidationHash, false); err != nil {
		return Result{}, err
	}
	l := s.limits.Effective()
	if err := checkModel(b.Model, l); err != nil {
		return Result{}, err
	}
	maxMembers := b.MaxMembers
	if maxMembers == 0 {
		maxMembers = l.MaxCohortMembers
	}
	switch {
	case b.Params.Rounds == 0:
		return Result{}, errf(ErrInvalid, "rounds is 0")
	case b.Params.Rounds > l.MaxRounds:
		return Result{}, errf(ErrLimit, "%d rounds, limit MaxRounds %d", b.Params.Rounds, l.MaxRounds)
	case b.Params.InnerSteps == 0:
		return Result{}, errf(ErrInvalid, "inner steps is 0")
	case b.Params.InnerSteps > l.MaxInnerSteps:
		return Result{}, errf(ErrLimit, "%d inner steps, limit MaxInnerSteps %d", b.Params.InnerSteps, l.MaxInnerSteps)
	case b.QuorumBP > 10000:
		return Result{}, errf(ErrInvalid, "quorum %d bp > 10000", b.QuorumBP)
	case b.QuorumBP < l.MinQuorumBP:
		return Result{}, errf(ErrLimit, "quorum %d bp, limit MinQuorumBP %d", b.QuorumBP, l.MinQuorumBP)
	case b.ThresholdBP > 10000:
		return Result{}, errf(ErrInvalid, "threshold %d bp > 10000", b.ThresholdBP)
	case b.ThresholdBP < l.MinThresholdBP:
		return Result{}, errf(ErrLimit, "threshold %d bp, limit MinThresholdBP %d", b.ThresholdBP, l.MinThresholdBP)
	case b.VotingPeriodMs <= 0:
		return Result{}, errf(ErrInvalid, "voting period %d ms", b.VotingPeriodMs)
	case b.VotingPeriodMs > l.MaxVotingPeriodMs:
		return Result{}, errf(ErrLimit, "voting period %d ms, limit MaxVotingPeriodMs %d", b.VotingPeriodMs, l.MaxVotingPeriodMs)
	case b.VotingPeriodMs > math.MaxInt64-now:
		return Result{}, errf(ErrOverflow, "voting period %d ms", b.VotingPeriodMs)
	case b.RewardPool > l.MaxRewardPool:
		return Result{}, errf(ErrLimit, "reward pool %d, limit MaxRewardPool %d", b.RewardPool, l.MaxRewardPool)
	case maxMembers > l.MaxCohortMembers:
		return Result{}, errf(ErrLimit, "cohort of up to %d members, limit MaxCohortMembers %d", maxMembers, l.MaxCohortMembers)
	case b.MinMembers > maxMembers:
		return Result{}, errf(ErrInvalid, "min members %d exceeds the cohort's cap of %d", b.MinMembers, maxMembers)
	case s.open >= l.MaxOpenProposals:
		return Result{}, errf(ErrLimit, "%d proposals open, limit MaxOpenProposals %d", s.open, l.MaxOpenProposals)
	case s.openBy[issuer] >= l.MaxOpenProposalsPerMember:
		return Result{}, errf(ErrLimit, "member %s has %d proposals open, limit MaxOpenProposalsPerMember %d", issuer, s.openBy[issuer], l.MaxOpenProposalsPerMember)
	}
	// A key nobody granted weight and that earned nothing can make proposals that nobody could
	// tell from a real member's: proposing takes vote weight, as voting does.
	if s.weightOf(s.members[issuer]) == 0 {
		return Result{}, errf(ErrForbidden, "member %s has no vote weight (granted or earned), needed to propose", issuer)
	}
	if b.RewardPool > s.treasury.Unreserved() {
		return Result{}, errf(ErrLimit, "reward pool %d exceeds the treasury's unreserved balance %d (balance %d, %d reserved by open proposals)",
			b.RewardPool, s.treasury.Unreserved(), s.treasury.Balance, s.treasury.Reserved)
	}
	s.treasury.Reserved += b.RewardPool
	s.open++
	s.openBy[issuer]++
	s.nextProposal++
	p := &Proposal{ID: s.nextProposal, Name: b.Name, Proposer: issuer, Model: b.Model, Dataset: b.Dataset,
		ValidationHash: cloneBytes(b.ValidationHash), Params: b.Params, RewardPool: b.RewardPool,
		MinMembers: b.MinMembers, MaxMembers: maxMembers, QuorumBP: b.QuorumBP, ThresholdBP: b.ThresholdBP,
		CreatedAt: now, Deadline: now + b.VotingPeriodMs, Status: ProposalOpen}
	s.proposals[p.ID] = p
	return Result{ID: p.ID, Status: string(p.Status)}, nil
}

// weightOf is a member's vote weight: its contributors' earned balances plus the weight operators
// granted it. A fresh key weighs 0. It cannot overflow: the balances sum to at most the treasury's
// Funded, and Fund and Grant keep Funded plus all granted weight within 64 bits.
func (s *State) weightOf(m *Member) uint64 {
	if m == nil {
		return 0
	}
	w := m.Granted
	for _, c := range m.Contributors {
		w += s.balances[ContributorKey(m.ID, c)]
	}
	return w
}

// grantedTotal is the vote weight granted to all members.
func (s *State) grantedTotal() uint64 {
	var t uint64
	for _, m := range s.members {
		t += m.Granted // bounded: see weightOf
	}
	return t
}

func (s *State) vote(now int64, issuer string, b *VoteBody) (Result, error) {
	p, ok := s.proposals[b.Proposal]
	if !ok {
		return Result{}, errf(ErrNotFound, "proposal %d", b.Proposal)
	}
	if p.Status != ProposalOpen {
		return Result{}, errf(ErrWrongStatus, "proposal %d is %s", p.ID, p.Status)
	}
	if now >= p.Deadline {
		return Result{}, errf(ErrDeadline, "vote on proposal %d at %d, deadline %d", p.ID, now, p.Deadline)
	}
	i := sort.Search(len(p.Votes), func(i int) bool { return p.Votes[i].Member >= issuer })
	if i < len(p.Votes) && p.Votes[i].Member == issuer {
		return Result{}, errf(ErrExists, "member %s already voted on proposal %d", issuer, p.ID)
	}
	w := s.weightOf(s.members[issuer])
	if w == 0 {
		return Result{}, errf(ErrForbidden, "member %s has no vote weight (granted or earned)", issuer)
	}
	v := Vote{Member: issuer, Yes: b.Yes, Weight: w, At: now}
	p.Votes = append(p.Votes, Vote{})
	copy(p.Votes[i+1:], p.Votes[i:])
	p.Votes[i] = v
	return Result{ID: p.ID, Status: string(p.Status)}, nil
}

// geq128 reports a*x >= b*y without overflow.
func geq128(a, x, b, y uint64) bool {
	h1, l1 := bits.Mul64(a, x)
	h2, l2 := bits.Mul64(b, y)
	return h1 > h2 || (h1 == h2 && l1 >= l2)
}

func (s *State) tally(now int64, b *TallyBody) (Result, error) {
	p, ok := s.proposals[b.Proposal]
	if !ok {
		return Result{}, errf(ErrNotFound, "proposal %d", b.Proposal)
	}
	if p.Status != ProposalOpen {
		return Result{}, errf(ErrWrongStatus, "proposal %d is already %s", p.ID, p.Status)
	}
	if now < p.Deadline {
		return Result{}, errf(ErrDeadline, "tally of proposal %d at %d before its deadline %d", p.ID, now, p.Deadline)
	}
	var eligible, yes, no uint64
	for _, m := range s.members {
		eligible += s.weightOf(m) // bounded: see weightOf
	}
	for i := range p.Votes {
		v := &p.Votes[i]
		v.Weight = s.weightOf(s.members[v.Member])
		if v.Yes {
			yes += v.Weight
		} else {
			no += v.Weight
		}
	}
	p.EligibleWeight, p.YesWeight, p.NoWeight = eligible, yes, no
	voted := yes + no
	p.Status = ProposalRejected
	switch {
	case len(p.Votes) == 0:
		p.Status, p.Reason = ProposalExpired, "nobody voted"
	case eligible == 0 || voted == 0:
		p.Reason = "no vote weight: nobody has been granted or earned any"
	case !geq128(voted, 10000, eligible, uint64(p.QuorumBP)):
		p.Reason = fmt.Sprintf("quorum not met: %d of %d eligible weight voted, %d bp needed", voted, eligible, p.QuorumBP)
	case yes == 0 || !geq128(yes, 10000, voted, uint64(p.ThresholdBP)):
		p.Reason = fmt.Sprintf("threshold not met: %d of %d cast weight voted yes, %d bp needed", yes, voted, p.ThresholdBP)
	case p.RewardPool > s.treasury.Balance:
		p.Reason = fmt.Sprintf("the treasury holds %d, the reward pool needs %d", s.treasury.Balance, p.RewardPool)
	default:
		p.Status = ProposalPassed
	}
	s.treasury.Reserved -= min(p.RewardPool, s.treasury.Reserved)
	s.open--
	if s.openBy[p.Proposer]--; s.openBy[p.Proposer] == 0 {
		delete(s.openBy, p.Proposer)
	}
	res := Result{ID: p.ID, Status: string(p.Status)}
	if p.Status == ProposalPassed {
		s.treasury.Balance -= p.RewardPool
		s.nextCohort++
		c := &Cohort{ID: s.nextCohort, Proposal: p.ID, Status: CohortForming}
		s.cohorts[c.ID] = c
		s.pools[c.ID] = &Pool{Cohort: c.ID, Total: p.RewardPool, Rounds: p.Params.Rounds,
			DataBP: DataShareBP, ComputeBP: ComputeShareBP}
		p.Cohort = c.ID
		res.Cohort = c.ID
	}
	return res, nil
}

// join adds the issuer to a cohort. Membership stays open while the cohort runs (a member can
// join a running cohort with `cohort join`, and the leader makes every member a participant of
// the next round), up to the cohort's cap (Proposal.MaxMembers); a member already in it gets
// ErrExists whatever the cohort's state, so a restarted peer can tell it is in.
func (s *State) join(now int64, issuer string, b *JoinBody) (Result, error) {
	c, ok := s.cohorts[b.Cohort]
	if !ok {
		return Result{}, errf(ErrNotFound, "cohort %d", b.Cohort)
	}
	if c.Status == CohortDone {
		return Result{}, errf(ErrWrongStatus, "cohort %d is %s", c.ID, c.Status)
	}
	for _, cm := range c.Members {
		if cm.Member == issuer {
			return Result{}, errf(ErrExists, "member %s already joined cohort %d", issuer, c.ID)
		}
	}
	if err := checkList("join contributors", len(b.Contributors), true); err != nil {
		return Result{}, err
	}
	if p := s.proposals[c.Proposal]; len(c.Members) >= int(p.MaxMembers) {
		return Result{}, errf(ErrLimit, "cohort %d is full: %d members, its cap is %d", c.ID, len(c.Members), p.MaxMembers)
	}
	// A round's ScoreCommit lists the cohort's contributors in one command list.
	have := 0
	for _, m := range c.Members {
		have += len(m.Contributors)
	}
	if have+len(b.Contributors) > MaxListLen {
		return Result{}, errf(ErrLimit, "cohort %d would have %d contributors, limit %d (MaxListLen)", c.ID, have+len(b.Contributors), MaxListLen)
	}
	names := make([]string, len(b.Contributors))
	for i, cd := range b.Contributors {
		names[i] = cd.Name
		if s.owners[ContributorKey(issuer, cd.Name)] != issuer {
			return Result{}, errf(ErrForbidden, "member %s does not speak for contributor %q", issuer, cd.Name)
		}
		if err := checkHash("fingerprint of "+cd.Name, cd.Fingerprint, true); err != nil {
			return Result{}, err
		}
		if cd.Samples == 0 {
			return Result{}, errf(ErrInvalid, "contributor %q has 0 samples", cd.Name)
		}
	}
	if err := checkSortedUnique("join contributors", names); err != nil {
		return Result{}, err
	}
	cm := CohortMember{Member: issuer, JoinedAt: now, Order: uint32(len(c.Members) + 1)}
	for _, cd := range b.Contributors {
		d := ContributorData{Name: ContributorKey(issuer, cd.Name), Fingerprint: cloneBytes(cd.Fingerprint), Samples: cd.Samples}
		d.DuplicateOf = firstWithFingerprint(c.Members, cd.Fingerprint)
		if d.DuplicateOf == "" { // or earlier in this same join
			d.DuplicateOf = firstWithFingerprint([]CohortMember{cm}, cd.Fingerprint)
		}
		cm.Contributors = append(cm.Contributors, d)
	}
	c.Members = append(c.Members, cm)
	return Result{ID: c.ID, Cohort: c.ID, Status: string(c.Status)}, nil
}

// firstWithFingerprint returns the earliest contributor of members with that fingerprint (its
// own DuplicateOf if it is itself a duplicate), or "".
func firstWithFingerprint(members []CohortMember, fp []byte) string {
	for _, m := range members {
		for _, d := range m.Contributors {
			if bytes.Equal(d.Fingerprint, fp) {
				if d.DuplicateOf != "" {
					return d.DuplicateOf
				}
				return d.Name
			}
		}
	}
	return ""
}

func (c *Cohort) member(id string) *CohortMember {
	for i := range c.Members {
		if c.Members[i].Member == id {
			return &c.Members[i]
		}
	}
	return nil
}

func (s *State) openRound(now int64, b *OpenRoundBody) (Result, error) {
	c, ok := s.cohorts[b.Cohort]
	if !ok {
		return Result{}, errf(ErrNotFound, "cohort %d", b.Cohort)
	}
	p := s.proposals[c.Proposal]
	if c.Status == CohortDone {
		return Result{}, errf(ErrWrongStatus, "cohort %d is %s", c.ID, c.Status)
	}
	if b.Number != c.CurrentRound+1 {
		return Result{}, errf(ErrInvalid, "cohort %d: open round %d, next is %d", c.ID, b.Number, c.CurrentRound+1)
	}
	var prev *Round
	if c.CurrentRound > 0 {
		prev = s.rounds[roundKey{c.ID, c.CurrentRound}]
		if prev.Status != RoundClosed {
			return Result{}, errf(ErrWrongStatus, "cohort %d: round %d is still open", c.ID, prev.Number)
		}
	}
	if uint32(len(c.Members)) < p.MinMembers {
		return Result{}, errf(ErrWrongStatus, "cohort %d has %d members, needs %d", c.ID, len(c.Members), p.MinMembers)
	}
	if err := checkList("participants", len(b.Participants), true); err != nil {
		return Result{}, err
	}
	if err := checkSortedUnique("participants", b.Participants); err != nil {
		return Result{}, err
	}
	for _, id := range b.Participants {
		if c.member(id) == nil {
			return Result{}, errf(ErrNotFound, "participant %s is not in cohort %d", id, c.ID)
		}
	}
	if len(b.Excluded) > 0 {
		if err := checkSortedUnique("excluded", b.Excluded); err != nil {
			return Result{}, err
		}
		for _, id := range b.Excluded {
			if i := sort.SearchStrings(b.Participants, id); i == len(b.Participants) || b.Participants[i] != id {
				return Result{}, errf(ErrInvalid, "excluded %s is not a participant", id)
			}
		}
	}
	if err := checkList("slices", len(b.Slices), true); err != nil {
		return Result{}, err
	}
	var end uint64
	for i, sl := range b.Slices {
		if sl.Start != end || sl.End <= sl.Start {
			return Result{}, errf(ErrInvalid, "slice %d [%d,%d) does not continue at %d", i, sl.Start, sl.End, end)
		}
		if _, ok := s.coordinators[sl.Aggregator]; !ok {
			return Result{}, errf(ErrNotFound, "slice %d aggregator %q is not a coordinator", i, sl.Aggregator)
		}
		end = sl.End
	}
	if err := checkHash("model hash", b.ModelHash, true); err != nil {
		return Result{}, err
	}
	if prev != nil && !bytes.Equal(prev.NewModelHash, b.ModelHash) {
		return Result{}, errf(ErrInvalid, "cohort %d round %d: model hash %x differs from round %d result %x",
			c.ID, b.Number, b.ModelHash, prev.Number, prev.NewModelHash)
	}
	if b.Deadline <= now {
		return Result{}, errf(ErrDeadline, "round deadline %d is not after %d", b.Deadline, now)
	}
	r := &Round{Cohort: c.ID, Number: b.Number, Participants: append([]string{}, b.Participants...),
		Slices: append([]SliceAssignment{}, b.Slices...), ModelHash: cloneBytes(b.ModelHash), Seed: b.Seed,
		OpenedAt: now, Deadline: b.Deadline, Status: RoundOpen, Excluded: append([]string(nil), b.Excluded...)}
	s.rounds[roundKey{c.ID, r.Number}] = r
	c.CurrentRound = r.Number
	c.Status = CohortRunning
	return Result{ID: uint64(r.Number), Cohort: c.ID, Status: string(r.Status)}, nil
}

func (s *State) round(cohort uint64, n uint32) (*Round, error) {
	if _, ok := s.cohorts[cohort]; !ok {
		return nil, errf(ErrNotFound, "cohort %d", cohort)
	}
	r, ok := s.rounds[roundKey{cohort, n}]
	if !ok {
		return nil, errf(ErrNotFound, "cohort %d has no round %d", cohort, n)
	}
	return r, nil
}

func (s *State) receipt(now int64, issuer string, b *ReceiptBody) (Result, error) {
	r, err := s.round(b.Cohort, b.Round)
	if err != nil {
		return Result{}, err
	}
	// A receipt counts until the round is scored: while it is open (also past its deadline, until
	// the leader closes it), and once it closed only for the θ_{t+1} it recorded (the participant
	// applied exactly that round). A peer's receipt can reach the cluster after the deadline or the
	// close when the leader it was sent to died with the round: its update is in the aggregate (a
	// peer reports only when every slice of it was accepted), and the leader scores the round
	// only once such receipts had time to land.
	switch {
	case r.Scored:
		return Result{}, errf(ErrWrongStatus, "cohort %d round %d is scored: receipts are closed", r.Cohort, r.Number)
	case r.Status == RoundClosed && !bytes.Equal(b.ModelHashAfter, r.NewModelHash):
		return Result{}, errf(ErrWrongStatus, "cohort %d round %d closed with model %x: a receipt for another model comes too late", r.Cohort, r.Number, r.NewModelHash)
	case r.Status != RoundOpen && r.Status != RoundClosed:
		return Result{}, errf(ErrWrongStatus, "cohort %d round %d is %s", r.Cohort, r.Number, r.Status)
	}
	if i := sort.SearchStrings(r.Participants, issuer); i == len(r.Participants) || r.Participants[i] != issuer {
		return Result{}, errf(ErrForbidden, "member %s is not a participant of cohort %d round %d", issuer, r.Cohort, r.Number)
	}
	if err := checkHash("model hash after", b.ModelHashAfter, false); err != nil {
		return Result{}, err
	}
	i := sort.Search(len(r.Receipts), func(i int) bool { return r.Receipts[i].Member >= issuer })
	if i < len(r.Receipts) && r.Receipts[i].Member == issuer {
		return Result{}, errf(ErrExists, "receipt from %s for cohort %d round %d", issuer, r.Cohort, r.Number)
	}
	rc := Receipt{Member: issuer, SamplesUsed: min(b.SamplesUsed, s.sampleCap(r.Cohort, issuer)), BytesSent: b.BytesSent,
		ModelHashAfter: cloneBytes(b.ModelHashAfter), At: now, Claimed: b.SamplesUsed}
	r.Receipts = append(r.Receipts, Receipt{})
	copy(r.Receipts[i+1:], r.Receipts[i:])
	r.Receipts[i] = rc
	return Result{ID: uint64(r.Number), Cohort: r.Cohort, Status: string(r.Status)}, nil
}

func (s *State) reassign(now int64, b *ReassignBody) (Result, error) {
	r, err := s.round(b.Cohort, b.Round)
	if err != nil {
		return Result{}, err
	}
	if r.Status != RoundOpen {
		return Result{}, errf(ErrWrongStatus, "cohort %d round %d is %s", r.Cohort, r.Number, r.Status)
	}
	if int(b.Slice) >= len(r.Slices) {
		return Result{}, errf(ErrNotFound, "cohort %d round %d has no slice %d", r.Cohort, r.Number, b.Slice)
	}
	if _, ok := s.coordinators[b.Aggregator]; !ok {
		return Result{}, errf(ErrNotFound, "aggregator %q is not a coordinator", b.Aggregator)
	}
	if r.Slices[b.Slice].Aggregator == b.Aggregator {
		return Result{}, errf(ErrInvalid, "slice %d of cohort %d round %d is already aggregated by %s", b.Slice, r.Cohort, r.Number, b.Aggregator)
	}
	if b.Deadline <= now {
		return Result{}, errf(ErrDeadline, "reassigned deadline %d is not after %d", b.Deadline, now)
	}
	r.Slices[b.Slice].Aggregator = b.Aggregator
	r.Deadline = max(r.Deadline, b.Deadline)
	r.Reassignments++
	return Result{ID: uint64(r.Number), Cohort: r.Cohort, Status: string(r.Status)}, nil
}

func (s *State) extendRound(now int64, b *ExtendRoundBody) (Result, error) {
	r, err := s.round(b.Cohort, b.Round)
	if err != nil {
		return Result{}, err
	}
	if r.Status != RoundOpen {
		return Result{}, errf(ErrWrongStatus, "cohort %d round %d is %s", r.Cohort, r.Number, r.Status)
	}
	if b.Deadline <= now || b.Deadline <= r.Deadline {
		return Result{}, errf(ErrDeadline, "extended deadline %d is not after both now (%d) and the round's deadline %d", b.Deadline, now, r.Deadline)
	}
	r.Deadline = b.Deadline
	r.Reassignments++
	return Result{ID: uint64(r.Number), Cohort: r.Cohort, Status: string(r.Status)}, nil
}

func (s *State) closeRound(now int64, b *CloseRoundBody) (Result, error) {
	r, err := s.round(b.Cohort, b.Round)
	if err != nil {
		return Result{}, err
	}
	if r.Status != RoundOpen {
		return Result{}, errf(ErrWrongStatus, "cohort %d round %d is %s", r.Cohort, r.Number, r.Status)
	}
	if err := checkHash("new model hash", b.ModelHash, true); err != nil {
		return Result{}, err
	}
	c := s.cohorts[r.Cohort]
	r.Status = RoundClosed
	r.NewModelHash = cloneBytes(b.ModelHash)
	r.ClosedAt = now
	c.ModelHash = cloneBytes(b.ModelHash)
	if r.Number >= s.proposals[c.Proposal].Params.Rounds {
		c.Status = CohortDone
	}
	return Result{ID: uint64(r.Number), Cohort: c.ID, Status: string(c.Status)}, nil
}

// sampleCap is the most samples a member's receipt counts in a round of a cohort: what the
// protocol lets it train on, InnerSteps × Limits.MaxBatch, and no more than the samples its
// contributors registered in the cohort. 0 for a member not in the cohort.
func (s *State) sampleCap(cohort uint64, member string) uint64 {
	c := s.cohorts[cohort]
	if c == nil {
		return 0
	}
	cm := c.member(member)
	if cm == nil {
		return 0
	}
	var registered uint64
	for _, d := range cm.Contributors {
		registered = addSat(registered, d.Samples)
	}
	steps := uint64(s.proposals[c.Proposal].Params.InnerSteps)
	return min(registered, steps*uint64(s.limits.Effective().MaxBatch))
}

func (s *State) setLimits(b *SetLimitsBody, dry bool) (Result, error) {
	if err := b.Limits.Validate(); err != nil {
		return Result{}, err
	}
	if dry {
		return Result{}, nil
	}
	s.limits = b.Limits
	return Result{Status: "set"}, nil
}

func (s *State) fund(b *FundBody, dry bool) (Result, error) {
	if b.Amount == 0 {
		return Result{}, errf(ErrInvalid, "fund amount is 0")
	}
	funded, c1 := bits.Add64(s.treasury.Funded, b.Amount, 0)
	_, c2 := bits.Add64(funded, s.grantedTotal(), 0)
	if c1 != 0 || c2 != 0 {
		return Result{}, errf(ErrOverflow, "fund %d: everything funded (%d) plus the granted vote weight would exceed 2^64-1",
			b.Amount, s.treasury.Funded)
	}
	if dry {
		return Result{}, nil
	}
	s.treasury.Funded = funded
	s.treasury.Balance += b.Amount // ≤ Funded
	return Result{Amount: s.treasury.Balance, Status: "funded"}, nil
}

func (s *State) grant(b *GrantBody, dry bool) (Result, error) {
	if err := checkSortedUniqueWith("members", b.More, checkPrintable); err != nil {
		return Result{}, err
	}
	ids := append([]string{b.Member}, b.More...)
	ms := make([]*Member, 0, len(ids))
	seen := make(map[string]bool, len(ids))
	total := s.grantedTotal()
	for _, id := range ids {
		m, ok := s.members[id]
		if !ok {
			return Result{}, errf(ErrNotFound, "member %q", id)
		}
		if seen[id] {
			return Result{}, errf(ErrInvalid, "member %s is granted twice", id)
		}
		seen[id] = true
		ms = append(ms, m)
		var c1, c2 uint64
		total, c1 = bits.Add64(total-m.Granted, b.Votes, 0)
		_, c2 = bits.Add64(total, s.treasury.Funded, 0)
		if c1 != 0 || c2 != 0 {
			return Result{}, errf(ErrOverflow, "grant of %d votes: the granted vote weight plus everything funded (%d) would exceed 2^64-1",
				b.Votes, s.treasury.Funded)
		}
	}
	if dry {
		return Result{}, nil
	}
	for _, m := range ms {
		m.Granted = b.Votes
	}
	return Result{Member: b.Member, Amount: b.Votes, Status: "granted"}, nil
}
