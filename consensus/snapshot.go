package consensus

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/bits"
	"sort"

	"github.com/vmihailenco/msgpack/v5"
)

// snapshotMagic starts every snapshot; its last byte is the snapshot format version.
var snapshotMagic = []byte("COHSNAP\x04")

// MaxSnapshotBytes bounds what Restore reads.
const MaxSnapshotBytes = 1 << 30

// snapshotData is the canonical form of a State: every collection as a slice sorted by its key.
type snapshotData struct {
	_msgpack     struct{} `msgpack:",as_array"`
	Clock        int64
	NextProposal uint64
	NextCohort   uint64
	Limits       Limits
	Treasury     Treasury
	Coordinators []Coordinator // by ID
	Members      []Member      // by ID
	Proposals    []Proposal    // by ID
	Cohorts      []Cohort      // by ID
	Rounds       []Round       // by (cohort, number)
	Balances     []Balance     // by contributor
	Pools        []Pool        // by cohort
	Payouts      []Payout      // in the order made
	Dedupe       []dedupeWindow
	Approved     []ApprovedCoordinator // by ID
	Motions      []Motion              // by digest
}

func sortedKeys[K string | uint64](m map[K]bool) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func keysOf[K string | uint64, V any](m map[K]V) []K {
	set := make(map[K]bool, len(m))
	for k := range m {
		set[k] = true
	}
	return sortedKeys(set)
}

func (s *State) canonical() *snapshotData {
	d := &snapshotData{Clock: s.clock, NextProposal: s.nextProposal, NextCohort: s.nextCohort, Limits: s.limits,
		Treasury: s.treasury, Payouts: s.payouts}
	for _, k := range keysOf(s.coordinators) {
		d.Coordinators = append(d.Coordinators, *s.coordinators[k])
	}
	for _, k := range keysOf(s.members) {
		d.Members = append(d.Members, *s.members[k])
	}
	for _, k := range keysOf(s.proposals) {
		d.Proposals = append(d.Proposals, *s.proposals[k])
	}
	for _, k := range keysOf(s.cohorts) {
		d.Cohorts = append(d.Cohorts, *s.cohorts[k])
	}
	for _, r := range s.rounds {
		d.Rounds = append(d.Rounds, *r)
	}
	sort.Slice(d.Rounds, func(i, j int) bool {
		a, b := d.Rounds[i], d.Rounds[j]
		return a.Cohort < b.Cohort || (a.Cohort == b.Cohort && a.Number < b.Number)
	})
	for _, k := range keysOf(s.balances) {
		d.Balances = append(d.Balances, Balance{Contributor: k, Amount: s.balances[k]})
	}
	for _, k := range keysOf(s.pools) {
		d.Pools = append(d.Pools, *s.pools[k])
	}
	for _, k := range keysOf(s.dedupe) {
		d.Dedupe = append(d.Dedupe, *s.dedupe[k])
	}
	for _, k := range keysOf(s.approved) {
		d.Approved = append(d.Approved, *s.approved[k])
	}
	for _, k := range keysOf(s.motions) {
		d.Motions = append(d.Motions, *s.motions[k])
	}
	return d
}

// MarshalSnapshot returns the canonical snapshot bytes of the state: a magic header, the msgpack
// encoding of every collection as a slice sorted by key, and a SHA-256 checksum of what precedes
// it. Two states are equal exactly when their snapshot bytes are equal.
func (s *State) MarshalSnapshot() ([]byte, error) {
	var buf bytes.Buffer
	buf.Write(snapshotMagic)
	if err := msgpack.NewEncoder(&buf).Encode(s.canonical()); err != nil {
		return nil, fmt.Errorf("consensus: encode snapshot: %w", err)
	}
	sum := sha256.Sum256(buf.Bytes())
	buf.Write(sum[:])
	return buf.Bytes(), nil
}

// Hash returns the SHA-256 of the canonical snapshot bytes: replicas that applied the same
// commands have the same Hash, and a restored snapshot has the Hash of the state it was taken of.
// It is computed at most once per state change (Apply clears the cached value), so it is cheap to
// ask for often. Safe to call concurrently with other readers.
func (s *State) Hash() [32]byte {
	if h := s.hash.Load(); h != nil {
		return *h
	}
	b, err := s.MarshalSnapshot()
	if err != nil {
		// Encoding plain structs into memory cannot fail; reaching this is a programming error.
		panic("consensus: " + err.Error())
	}
	h := sha256.Sum256(b)
	s.hash.Store(&h)
	return h
}

// UnmarshalSnapshot decodes snapshot bytes written by MarshalSnapshot into a new State. Truncated
// or corrupted bytes (bad magic, checksum mismatch, undecodable or inconsistent content) yield an
// error wrapping ErrSnapshot.
func UnmarshalSnapshot(b []byte) (*State, error) {
	if len(b) < len(snapshotMagic)+sha256.Size {
		return nil, errf(ErrSnapshot, "%d bytes is too short", len(b))
	}
	if !bytes.Equal(b[:len(snapshotMagic)-1], snapshotMagic[:len(snapshotMagic)-1]) {
		return nil, errf(ErrSnapshot, "bad magic %q", b[:len(snapshotMagic)])
	}
	if b[len(snapshotMagic)-1] != snapshotMagic[len(snapshotMagic)-1] {
		return nil, errf(ErrVersion, "snapshot format %d", b[len(snapshotMagic)-1])
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if want := sha256.Sum256(body); !bytes.Equal(want[:], sum) {
		return nil, errf(ErrSnapshot, "checksum mismatch (truncated or corrupt)")
	}
	var d snapshotData
	if err := decodeExact(body[len(snapshotMagic):], &d, len(body)); err != nil {
		return nil, errf(ErrSnapshot, "decode: %v", err)
	}
	return fromCanonical(&d)
}

// ReadSnapshot reads snapshot bytes from r (at most MaxSnapshotBytes) and decodes them.
func ReadSnapshot(r io.Reader) (*State, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSnapshotBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrSnapshot, err)
	}
	if len(b) > MaxSnapshotBytes {
		return nil, errf(ErrSnapshot, "larger than %d bytes", MaxSnapshotBytes)
	}
	return UnmarshalSnapshot(b)
}

func fromCanonical(d *snapshotData) (*State, error) {
	s := NewState()
	s.clock, s.nextProposal, s.nextCohort, s.limits, s.treasury = d.Clock, d.NextProposal, d.NextCohort, d.Limits, d.Treasury
	if err := s.limits.Validate(); err != nil {
		return nil, errf(ErrSnapshot, "limits: %v", err)
	}
	if t := s.treasury; t.Reserved > t.Balance || t.Balance > t.Funded {
		return nil, errf(ErrSnapshot, "treasury reserves %d of %d, funded %d", t.Reserved, t.Balance, t.Funded)
	}
	dup := func(what string, k any) error { return errf(ErrSnapshot, "duplicate %s %v", what, k) }
	for i := range d.Coordinators {
		c := &d.Coordinators[i]
		if _, ok := s.coordinators[c.ID]; ok {
			return nil, dup("coordinator", c.ID)
		}
		s.coordinators[c.ID] = c
	}
	for i := range d.Members {
		m := &d.Members[i]
		if _, ok := s.members[m.ID]; ok {
			return nil, dup("member", m.ID)
		}
		s.members[m.ID] = m
		for _, c := range m.Contributors {
			k := ContributorKey(m.ID, c)
			if _, ok := s.owners[k]; ok {
				return nil, dup("contributor", k)
			}
			s.owners[k] = m.ID
		}
	}
	var reserved uint64
	for i := range d.Proposals {
		p := &d.Proposals[i]
		if _, ok := s.proposals[p.ID]; ok || p.ID == 0 || p.ID > s.nextProposal {
			return nil, errf(ErrSnapshot, "bad or duplicate proposal id %d", p.ID)
		}
		s.proposals[p.ID] = p
		if p.Status == ProposalOpen {
			s.open++
			s.openBy[p.Proposer]++
			var c uint64
			if reserved, c = bits.Add64(reserved, p.RewardPool, 0); c != 0 {
				return nil, errf(ErrSnapshot, "open proposals reserve more than 2^64-1")
			}
		}
	}
	if reserved != s.treasury.Reserved {
		return nil, errf(ErrSnapshot, "treasury reserves %d, open proposals %d", s.treasury.Reserved, reserved)
	}
	for i := range d.Cohorts {
		c := &d.Cohorts[i]
		if _, ok := s.cohorts[c.ID]; ok || c.ID == 0 || c.ID > s.nextCohort {
			return nil, errf(ErrSnapshot, "bad or duplicate cohort id %d", c.ID)
		}
		if s.proposals[c.Proposal] == nil {
			return nil, errf(ErrSnapshot, "cohort %d names unknown proposal %d", c.ID, c.Proposal)
		}
		s.cohorts[c.ID] = c
	}
	for i := range d.Rounds {
		r := &d.Rounds[i]
		k := roundKey{r.Cohort, r.Number}
		if _, ok := s.rounds[k]; ok {
			return nil, dup("round", k)
		}
		if s.cohorts[r.Cohort] == nil {
			return nil, errf(ErrSnapshot, "round %d names unknown cohort %d", r.Number, r.Cohort)
		}
		s.rounds[k] = r
	}
	for _, c := range s.cohorts {
		if c.CurrentRound > 0 && s.rounds[roundKey{c.ID, c.CurrentRound}] == nil {
			return nil, errf(ErrSnapshot, "cohort %d current round %d missing", c.ID, c.CurrentRound)
		}
	}
	// Every weight sum stays within 64 bits (see State.weightOf).
	bound := s.treasury.Funded
	for _, m := range s.members {
		var c uint64
		if bound, c = bits.Add64(bound, m.Granted, 0); c != 0 {
			return nil, errf(ErrSnapshot, "funded plus granted vote weight exceeds 2^64-1")
		}
	}
	var earned uint64
	for _, b := range d.Balances {
		if _, ok := s.balances[b.Contributor]; ok {
			return nil, dup("balance", b.Contributor)
		}
		s.balances[b.Contributor] = b.Amount
		var c uint64
		if earned, c = bits.Add64(earned, b.Amount, 0); c != 0 || earned > s.treasury.Funded {
			return nil, errf(ErrSnapshot, "balances exceed the %d funded", s.treasury.Funded)
		}
	}
	for i := range d.Pools {
		p := &d.Pools[i]
		if _, ok := s.pools[p.Cohort]; ok || s.cohorts[p.Cohort] == nil || p.Rounds == 0 || p.Paid > p.Total {
			return nil, errf(ErrSnapshot, "bad or duplicate pool of cohort %d", p.Cohort)
		}
		s.pools[p.Cohort] = p
	}
	for _, c := range s.cohorts {
		if s.pools[c.ID] == nil {
			return nil, errf(ErrSnapshot, "cohort %d has no pool", c.ID)
		}
	}
	s.payouts = d.Payouts
	for i, po := range s.payouts {
		if s.cohorts[po.Cohort] == nil {
			return nil, errf(ErrSnapshot, "payout %d is for cohort %d, which does not exist", i, po.Cohort)
		}
		s.byCohort[po.Cohort] = append(s.byCohort[po.Cohort], i)
	}
	for i := range d.Dedupe {
		w := &d.Dedupe[i]
		if _, ok := s.dedupe[w.Issuer]; ok || len(w.Recent) > DedupeWindow {
			return nil, errf(ErrSnapshot, "bad or duplicate dedupe window of %s", w.Issuer)
		}
		for j := 1; j < len(w.Recent); j++ {
			if w.Recent[j-1].RequestID >= w.Recent[j].RequestID {
				return nil, errf(ErrSnapshot, "dedupe window of %s not sorted", w.Issuer)
			}
		}
		s.dedupe[w.Issuer] = w
	}
	for i := range d.Approved {
		a := &d.Approved[i]
		if _, ok := s.approved[a.ID]; ok || s.coordinators[a.ID] != nil {
			return nil, dup("approved coordinator", a.ID)
		}
		s.approved[a.ID] = a
	}
	if len(d.Motions) > MaxMotions {
		return nil, errf(ErrSnapshot, "%d motions, limit %d", len(d.Motions), MaxMotions)
	}
	for i := range d.Motions {
		m := &d.Motions[i]
		if _, ok := s.motions[m.Digest]; ok || m.Digest != motionDigest(m.Type, m.Body) || !m.Type.operator() {
			return nil, errf(ErrSnapshot, "bad or duplicate motion %s", m.Digest)
		}
		s.motions[m.Digest] = m
	}
	return s, nil
}
