package consensus

import (
	"sort"

	"github.com/vmihailenco/msgpack/v5"
)

// Queries are read-only and return deep copies, so callers may keep or change the results.

func deepCopy[T any](v T) T {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic("consensus: copy: " + err.Error()) // plain structs always encode
	}
	var out T
	if err := msgpack.Unmarshal(b, &out); err != nil {
		panic("consensus: copy: " + err.Error())
	}
	return out
}

// Clock returns the latest leader time stamp applied (unix ms), 0 before any command.
func (s *State) Clock() int64 { return s.clock }

// Coordinators returns the registered coordinator keys sorted by ID.
func (s *State) Coordinators() []Coordinator { return deepCopy(s.canonicalCoordinators()) }

func (s *State) canonicalCoordinators() []Coordinator {
	out := make([]Coordinator, 0, len(s.coordinators))
	for _, k := range keysOf(s.coordinators) {
		out = append(out, *s.coordinators[k])
	}
	return out
}

// Members returns the registered members sorted by ID.
func (s *State) Members() []Member {
	out := make([]Member, 0, len(s.members))
	for _, k := range keysOf(s.members) {
		out = append(out, *s.members[k])
	}
	return deepCopy(out)
}

// Member returns one member.
func (s *State) Member(id string) (Member, error) {
	m, ok := s.members[id]
	if !ok {
		return Member{}, errf(ErrNotFound, "member %s", id)
	}
	return deepCopy(*m), nil
}

// Proposals returns every proposal sorted by ID.
func (s *State) Proposals() []Proposal {
	out := make([]Proposal, 0, len(s.proposals))
	for _, k := range keysOf(s.proposals) {
		out = append(out, *s.proposals[k])
	}
	return deepCopy(out)
}

// Proposal returns one proposal.
func (s *State) Proposal(id uint64) (Proposal, error) {
	p, ok := s.proposals[id]
	if !ok {
		return Proposal{}, errf(ErrNotFound, "proposal %d", id)
	}
	return deepCopy(*p), nil
}

// Cohorts returns every cohort sorted by ID.
func (s *State) Cohorts() []Cohort {
	out := make([]Cohort, 0, len(s.cohorts))
	for _, k := range keysOf(s.cohorts) {
		out = append(out, *s.cohorts[k])
	}
	return deepCopy(out)
}

// Cohort returns one cohort.
func (s *State) Cohort(id uint64) (Cohort, error) {
	c, ok := s.cohorts[id]
	if !ok {
		return Cohort{}, errf(ErrNotFound, "cohort %d", id)
	}
	return deepCopy(*c), nil
}

// Round returns round n of a cohort.
func (s *State) Round(cohort uint64, n uint32) (Round, error) {
	r, err := s.round(cohort, n)
	if err != nil {
		return Round{}, err
	}
	return deepCopy(*r), nil
}

// Rounds returns the rounds of a cohort in order.
func (s *State) Rounds(cohort uint64) ([]Round, error) {
	c, ok := s.cohorts[cohort]
	if !ok {
		return nil, errf(ErrNotFound, "cohort %d", cohort)
	}
	out := make([]Round, 0, c.CurrentRound)
	for n := uint32(1); n <= c.CurrentRound; n++ {
		out = append(out, *s.rounds[roundKey{cohort, n}])
	}
	return deepCopy(out), nil
}

// Ledger returns the whole contribution ledger.
func (s *State) Ledger() Ledger {
	d := Ledger{Payouts: s.payouts, Treasury: s.treasury}
	for _, k := range keysOf(s.balances) {
		d.Balances = append(d.Balances, Balance{Contributor: k, Amount: s.balances[k]})
	}
	for _, k := range keysOf(s.pools) {
		d.Pools = append(d.Pools, *s.pools[k])
	}
	return deepCopy(d)
}

// Balance returns a contributor's earned total (0 for an unknown contributor).
func (s *State) Balance(contributor string) uint64 { return s.balances[contributor] }

// LastRequestID returns the highest request ID applied for an issuer (0 if none); a client that
// lost its counter can resume above it.
func (s *State) LastRequestID(issuer string) uint64 {
	w := s.dedupe[issuer]
	if w == nil {
		return 0
	}
	if n := len(w.Recent); n > 0 {
		return w.Recent[n-1].RequestID
	}
	return w.Floor
}

// Contributors returns contributor key (ContributorKey) -> member ID for every registered
// contributor, as pairs sorted by key.
func (s *State) Contributors() [][2]string {
	out := make([][2]string, 0, len(s.owners))
	for c, m := range s.owners {
		out = append(out, [2]string{c, m})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// Limits returns the cluster's limits in force, defaults filled in.
func (s *State) Limits() Limits { return s.limits.Effective() }

// Treasury returns the treasury: its balance, what open proposals reserve, and all ever funded.
func (s *State) Treasury() Treasury { return s.treasury }

// SampleCap returns the most samples a receipt of member counts in a round of cohort (its
// claim is clamped to this): InnerSteps × Limits.MaxBatch, and at most the samples its
// contributors registered in the cohort. 0 when member is not in the cohort.
func (s *State) SampleCap(cohort uint64, member string) uint64 { return s.sampleCap(cohort, member) }

// VoteWeight returns a member's vote weight now: its contributors' balances plus the weight
// operators granted it (0 for an unknown member).
func (s *State) VoteWeight(member string) uint64 { return s.weightOf(s.members[member]) }
