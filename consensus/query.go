package consensus

import (
	"math"
	"slices"
	"sort"
	"strings"

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
func (s *State) Members() []Member { return inOrder(s.members, 0, len(s.members), Member.Clone) }

// inOrder returns copies of records [lo, hi) of m in key order (lo and hi clamped to it).
func inOrder[K string | uint64, V any](m map[K]*V, lo, hi int, clone func(V) V) []V {
	keys := keysOf(m)
	lo, hi = clampRange(lo, hi, len(keys))
	out := make([]V, 0, hi-lo)
	for _, k := range keys[lo:hi] {
		out = append(out, clone(*m[k]))
	}
	return out
}

// Member returns one member.
func (s *State) Member(id string) (Member, error) {
	m, ok := s.members[id]
	if !ok {
		return Member{}, errf(ErrNotFound, "member %s", id)
	}
	return m.Clone(), nil
}

// Proposals returns every proposal sorted by ID.
func (s *State) Proposals() []Proposal {
	return inOrder(s.proposals, 0, len(s.proposals), Proposal.Clone)
}

// Proposal returns one proposal.
func (s *State) Proposal(id uint64) (Proposal, error) {
	p, ok := s.proposals[id]
	if !ok {
		return Proposal{}, errf(ErrNotFound, "proposal %d", id)
	}
	return p.Clone(), nil
}

// Cohorts returns every cohort sorted by ID.
func (s *State) Cohorts() []Cohort { return inOrder(s.cohorts, 0, len(s.cohorts), Cohort.Clone) }

// Cohort returns one cohort.
func (s *State) Cohort(id uint64) (Cohort, error) {
	c, ok := s.cohorts[id]
	if !ok {
		return Cohort{}, errf(ErrNotFound, "cohort %d", id)
	}
	return c.Clone(), nil
}

// Round returns round n of a cohort.
func (s *State) Round(cohort uint64, n uint32) (Round, error) {
	r, err := s.round(cohort, n)
	if err != nil {
		return Round{}, err
	}
	return r.Clone(), nil
}

// Rounds returns the rounds of a cohort in order.
func (s *State) Rounds(cohort uint64) ([]Round, error) {
	c, ok := s.cohorts[cohort]
	if !ok {
		return nil, errf(ErrNotFound, "cohort %d", cohort)
	}
	out := make([]Round, 0, c.CurrentRound)
	for n := uint32(1); n <= c.CurrentRound; n++ {
		out = append(out, s.rounds[roundKey{cohort, n}].Clone())
	}
	return out, nil
}

// Ledger returns the whole contribution ledger.
func (s *State) Ledger() Ledger { return s.LedgerRange(0, len(s.payouts)) }

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

// Pages of the lists that grow with the community: a query that answers over the network reads
// a page, never a whole list it cannot bound. lo and hi are clamped to the list.

func clampRange(lo, hi, n int) (int, int) {
	lo = min(max(lo, 0), n)
	return lo, min(max(hi, lo), n)
}

// NumMembers returns how many members are registered.
func (s *State) NumMembers() int { return len(s.members) }

// MembersRange returns members [lo, hi) in ID order.
func (s *State) MembersRange(lo, hi int) []Member { return inOrder(s.members, lo, hi, Member.Clone) }

// NumProposals returns how many proposals were made.
func (s *State) NumProposals() int { return len(s.proposals) }

// ProposalsRange returns proposals [lo, hi) in ID order.
func (s *State) ProposalsRange(lo, hi int) []Proposal {
	return inOrder(s.proposals, lo, hi, Proposal.Clone)
}

// RoundsRange returns the rounds of a cohort numbered lo+1 … hi (the list [lo, hi) of its rounds
// in order) and how many rounds it has.
func (s *State) RoundsRange(cohort uint64, lo, hi int) ([]Round, int, error) {
	c, ok := s.cohorts[cohort]
	if !ok {
		return nil, 0, errf(ErrNotFound, "cohort %d", cohort)
	}
	n := int(c.CurrentRound)
	lo, hi = clampRange(lo, hi, n)
	out := make([]Round, 0, hi-lo)
	for i := lo; i < hi; i++ {
		out = append(out, s.rounds[roundKey{cohort, uint32(i + 1)}].Clone())
	}
	return out, n, nil
}

// NumPayouts returns how many payouts the ledger holds: cohort's, or every cohort's for 0.
func (s *State) NumPayouts(cohort uint64) int {
	if cohort == 0 {
		return len(s.payouts)
	}
	return len(s.byCohort[cohort])
}

// LedgerRange returns the ledger with payouts [lo, hi) only (in the order they were made), every
// balance and every pool: for use inside the process (a network reply uses LedgerPage).
func (s *State) LedgerRange(lo, hi int) Ledger {
	lo, hi = clampRange(lo, hi, len(s.payouts))
	d := Ledger{Payouts: s.payouts[lo:hi], Treasury: s.treasury, Balances: s.BalancesRange(0, len(s.balances))}
	for _, k := range keysOf(s.pools) {
		d.Pools = append(d.Pools, *s.pools[k])
	}
	return deepCopy(d)
}

// LedgerPage returns a page of the ledger whose size does not grow with the ledger: payouts
// [lo, hi) of cohort's payouts (of every cohort's for 0, in the order they were made), the
// balances of the contributors those payouts name, the pools of their cohorts (and cohort's own
// pool, even on an empty page), and the treasury.
func (s *State) LedgerPage(cohort uint64, lo, hi int) Ledger {
	d := Ledger{Treasury: s.treasury}
	var pos []int
	if cohort != 0 {
		pos = s.byCohort[cohort]
	}
	n := len(s.payouts)
	if cohort != 0 {
		n = len(pos)
	}
	lo, hi = clampRange(lo, hi, n)
	d.Payouts = make([]Payout, 0, hi-lo)
	contributors, cohorts := map[string]bool{}, map[uint64]bool{}
	if cohort != 0 {
		cohorts[cohort] = true
	}
	for i := lo; i < hi; i++ {
		j := i
		if cohort != 0 {
			j = pos[i]
		}
		po := s.payouts[j]
		d.Payouts = append(d.Payouts, po)
		contributors[po.Contributor], cohorts[po.Cohort] = true, true
	}
	for _, k := range sortedKeys(contributors) {
		d.Balances = append(d.Balances, Balance{Contributor: k, Amount: s.balances[k]})
	}
	for _, k := range sortedKeys(cohorts) {
		if p := s.pools[k]; p != nil {
			d.Pools = append(d.Pools, *p)
		}
	}
	return d
}

// Pools returns every cohort's pool, by cohort.
func (s *State) Pools() []Pool {
	out := make([]Pool, 0, len(s.pools))
	for _, k := range keysOf(s.pools) {
		out = append(out, *s.pools[k])
	}
	return out
}

// NumBalances returns how many contributors hold a balance.
func (s *State) NumBalances() int { return len(s.balances) }

// BalancesRange returns balances [lo, hi) in contributor-key order.
func (s *State) BalancesRange(lo, hi int) []Balance {
	keys := keysOf(s.balances)
	lo, hi = clampRange(lo, hi, len(keys))
	out := make([]Balance, 0, hi-lo)
	for _, k := range keys[lo:hi] {
		out = append(out, Balance{Contributor: k, Amount: s.balances[k]})
	}
	return out
}

// MemberBalances returns the balance of each of member's registered contributors, in contributor-
// key order (0 for one not paid yet).
func (s *State) MemberBalances(member string) ([]Balance, error) {
	m, ok := s.members[member]
	if !ok {
		return nil, errf(ErrNotFound, "member %s", member)
	}
	out := make([]Balance, 0, len(m.Contributors))
	for _, c := range m.Contributors {
		k := ContributorKey(m.ID, c)
		out = append(out, Balance{Contributor: k, Amount: s.balances[k]})
	}
	slices.SortFunc(out, func(a, b Balance) int { return strings.Compare(a.Contributor, b.Contributor) })
	return out, nil
}

// CohortSummary is a cohort without its member list.
type CohortSummary struct {
	ID           uint64
	Proposal     uint64
	Members      int
	Status       CohortStatus
	CurrentRound uint32
}

// CohortSummaries returns every cohort's summary in ID order.
func (s *State) CohortSummaries() []CohortSummary {
	out := make([]CohortSummary, 0, len(s.cohorts))
	for _, k := range keysOf(s.cohorts) {
		c := s.cohorts[k]
		out = append(out, CohortSummary{ID: c.ID, Proposal: c.Proposal, Members: len(c.Members), Status: c.Status, CurrentRound: c.CurrentRound})
	}
	return out
}

// PeekCohort and PeekRound return the state's own record, not a copy: for a caller inside
// Node.View that reads a few fields, or trims the record before copying what it keeps, where a
// deep copy of every member or participant would cost more than the answer. The record must not
// be changed, nor kept or read after View returns.
func (s *State) PeekCohort(id uint64) (*Cohort, error) {
	c, ok := s.cohorts[id]
	if !ok {
		return nil, errf(ErrNotFound, "cohort %d", id)
	}
	return c, nil
}

// PeekRound: see PeekCohort.
func (s *State) PeekRound(cohort uint64, n uint32) (*Round, error) { return s.round(cohort, n) }

// RegisteredSamples returns the samples member's contributors registered in cohort, and whether
// it is a member of the cohort.
func (s *State) RegisteredSamples(cohort uint64, member string) (uint64, bool) {
	c, ok := s.cohorts[cohort]
	if !ok {
		return 0, false
	}
	for _, m := range c.Members {
		if m.Member != member {
			continue
		}
		var n uint64
		for _, cd := range m.Contributors {
			if n+cd.Samples < n {
				return math.MaxUint64, true
			}
			n += cd.Samples
		}
		return n, true
	}
	return 0, false
}

// HasMember and HasCoordinator report whether id is a registered member or coordinator key,
// without copying its record.
func (s *State) HasMember(id string) bool { _, ok := s.members[id]; return ok }

// HasCoordinator: see HasMember.
func (s *State) HasCoordinator(id string) bool { _, ok := s.coordinators[id]; return ok }
