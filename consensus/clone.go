package consensus

import (
	"slices"

	"github.com/vmihailenco/msgpack/v5"
)

// Deep copies of the records queries hand out. They copy every slice and byte string, so a caller
// may keep or change what it got without touching the state — as the msgpack round trip did that
// they replace, at the cost of a memory copy rather than an encoding (TestClonesAreDeepCopies
// checks them against it, field by field). A round of 1,000 participants is read on every upload
// and aggregate request; encoding it each time made the coordinators' work per round quadratic
// in the participants.

func cloneSlice[T any](xs []T, each func(*T)) []T {
	if xs == nil {
		return nil
	}
	out := slices.Clone(xs)
	if each != nil {
		for i := range out {
			each(&out[i])
		}
	}
	return out
}

// Clone returns a deep copy of r.
func (r Round) Clone() Round {
	r.Participants = slices.Clone(r.Participants)
	r.Slices = slices.Clone(r.Slices)
	r.ModelHash = cloneBytes(r.ModelHash)
	r.Receipts = cloneSlice(r.Receipts, func(x *Receipt) { x.ModelHashAfter = cloneBytes(x.ModelHashAfter) })
	r.NewModelHash = cloneBytes(r.NewModelHash)
	r.Influence = slices.Clone(r.Influence)
	r.Flags = slices.Clone(r.Flags)
	r.Excluded = slices.Clone(r.Excluded)
	return r
}

// Clone returns a deep copy of c.
func (c Cohort) Clone() Cohort {
	c.Members = cloneSlice(c.Members, func(m *CohortMember) {
		m.Contributors = cloneSlice(m.Contributors, func(d *ContributorData) { d.Fingerprint = cloneBytes(d.Fingerprint) })
	})
	c.ModelHash = cloneBytes(c.ModelHash)
	return c
}

// Clone returns a deep copy of p.
func (p Proposal) Clone() Proposal {
	p.ValidationHash = cloneBytes(p.ValidationHash)
	p.Votes = slices.Clone(p.Votes)
	return p
}

// Clone returns a deep copy of m.
func (m Member) Clone() Member {
	m.PublicKey = cloneBytes(m.PublicKey)
	m.Contributors = slices.Clone(m.Contributors)
	return m
}

// Head returns a deep copy of r without its receipts, influence and flags: what an aggregator
// reads of a round on every upload (status, slices, deadlines, participants), without copying a
// receipt per participant each time.
func (r Round) Head() Round {
	r.Receipts, r.Influence, r.Flags = nil, nil, nil
	return r.Clone()
}

// poolFields are a pool's fields in their wire order: ten before Returned existed.
func (p *Pool) poolFields() []any {
	return []any{&p.Cohort, &p.Total, &p.Rounds, &p.Paid, &p.Carry, &p.LastScored, &p.RoundsPaid, &p.DataBP, &p.ComputeBP, &p.Returned}
}

// EncodeMsgpack writes a pool that returned nothing as the ten-element array it always was, so
// that snapshots and state hashes from before Returned existed are unchanged.
func (p *Pool) EncodeMsgpack(e *msgpack.Encoder) error {
	return encodeTrailing(e, p.poolFields(), p.Returned != 0)
}

// DecodeMsgpack reads both forms EncodeMsgpack writes.
func (p *Pool) DecodeMsgpack(d *msgpack.Decoder) error {
	*p = Pool{}
	return decodeTrailing(d, "pool", p.poolFields(), false)
}
