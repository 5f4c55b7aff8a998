package consensus

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"sort"
)

// The coordinators' own governance.
//
// Coordinators are run by operators who admit each other. Three rules keep one operator — or a
// stolen coordinator key — from taking the cluster:
//
//   - A key becomes a coordinator only with proof of possession (its AddCoordinator is signed by
//     itself) and only once it is approved: named in the bootstrap command of the cluster's
//     initial voters, or approved by a majority of the registered coordinators
//     (ApproveCoordinator). Removing a coordinator takes a majority too.
//   - Operator commands (ApproveCoordinator and the other CommandType.operator kinds) take effect
//     only when a majority of the registered coordinators have issued the same body: each issue
//     is a signature on the motion, and the body is applied when the last signature needed
//     arrives. Until then the Result's Status is "pending" and its ID the signatures so far.
//   - Round commands (open, close, score, reassign, extend, tally) are accepted only from the key
//     of the leader that appended them (Command.Leader), so a follower's key cannot write rounds
//     or the ledger even though it is a registered coordinator.

// MaxMotions bounds the operator motions waiting for signatures, so that a coordinator key cannot
// grow the state without bound.
const MaxMotions = 64

// ApprovedCoordinator is a key approved to register as a coordinator, not registered yet.
type ApprovedCoordinator struct {
	_msgpack struct{} `msgpack:",as_array"`
	ID       string   // IDOf(public key)
	Name     string   // its raft server ID
}

// Motion is an operator command waiting for a majority of the coordinators to issue it.
type Motion struct {
	_msgpack struct{} `msgpack:",as_array"`
	Digest   string   // hex SHA-256 of type and body: identical bodies are one motion
	Type     CommandType
	Body     []byte
	By       []string // coordinator IDs that issued it, sorted
	At       int64    // when it was first issued
}

// ApproveCoordinatorBody is an operator command: approve key ID (a raft server named Name) to join
// the coordinators, or with Remove, remove the registered coordinator ID (and its raft voter).
type ApproveCoordinatorBody struct {
	_msgpack struct{} `msgpack:",as_array"`
	ID       string
	Name     string
	Remove   bool
}

// Type implements Body.
func (*ApproveCoordinatorBody) Type() CommandType { return CmdApproveCoordinator }

// majority is how many coordinators make a majority of those registered.
func (s *State) majority() int { return len(s.coordinators)/2 + 1 }

func motionDigest(t CommandType, body []byte) string {
	h := sha256.New()
	h.Write([]byte{byte(t)})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

// second reports whether issuer's signature on the operator command env completes its motion
// (then the caller applies the body and, if that succeeds, deletes the motion named by digest).
// When it does not, it records the signature (or refuses a second one by the same key) and
// returns the pending Result. It changes nothing when it returns an error.
func (s *State) second(now int64, env *Envelope) (done bool, digest string, res Result, err error) {
	if s.majority() <= 1 {
		return true, "", Result{}, nil
	}
	d := motionDigest(env.Type, env.Body)
	m := s.motions[d]
	if m == nil {
		if len(s.motions) >= MaxMotions {
			return false, "", Result{}, errf(ErrLimit, "%d operator motions are waiting for signatures, limit %d", len(s.motions), MaxMotions)
		}
		m = &Motion{Digest: d, Type: env.Type, Body: cloneBytes(env.Body), At: now}
	}
	i := sort.SearchStrings(m.By, env.Issuer)
	if i < len(m.By) && m.By[i] == env.Issuer {
		return false, "", Result{}, errf(ErrExists, "coordinator %s already issued this %s (%d of %d signatures)", env.Issuer, env.Type, len(m.By), s.majority())
	}
	if len(m.By)+1 >= s.majority() {
		return true, d, Result{}, nil
	}
	m.By = append(m.By, "")
	copy(m.By[i+1:], m.By[i:])
	m.By[i] = env.Issuer
	s.motions[d] = m
	return false, "", Result{ID: uint64(len(m.By)), Status: "pending"}, nil
}

// pruneMotions drops signatures of keys that are no longer coordinators.
func (s *State) pruneMotions() {
	for d, m := range s.motions {
		kept := m.By[:0]
		for _, id := range m.By {
			if _, ok := s.coordinators[id]; ok {
				kept = append(kept, id)
			}
		}
		m.By = kept
		if len(kept) == 0 {
			delete(s.motions, d)
		}
	}
}

func (s *State) addCoordinator(now int64, b *AddCoordinatorBody) (Result, error) {
	if len(b.PublicKey) != ed25519.PublicKeySize {
		return Result{}, errf(ErrInvalid, "coordinator public key is %d bytes", len(b.PublicKey))
	}
	if err := checkPrintable("coordinator name", b.Name, true); err != nil {
		return Result{}, err
	}
	id := IDOf(b.PublicKey)
	if _, ok := s.coordinators[id]; ok {
		return Result{}, errf(ErrExists, "coordinator %s", id)
	}
	if _, ok := s.members[id]; ok {
		return Result{}, errf(ErrExists, "key %s is registered as a member", id)
	}
	for _, c := range s.coordinators {
		if c.Name == b.Name {
			return Result{}, errf(ErrExists, "coordinator name %q is taken by %s", b.Name, c.ID)
		}
	}
	if len(s.coordinators) == 0 {
		// The bootstrap: the first key registers itself and names the other initial voters.
		if err := checkList("initial coordinators", len(b.Initial), false); err != nil {
			return Result{}, err
		}
		seen := map[string]bool{id: true}
		names := map[string]bool{b.Name: true}
		for _, a := range b.Initial {
			if len(a.ID) != 32 {
				return Result{}, errf(ErrInvalid, "initial coordinator %q: want a 32-hex-digit key ID", a.ID)
			}
			if _, err := hex.DecodeString(a.ID); err != nil {
				return Result{}, errf(ErrInvalid, "initial coordinator %q: want a 32-hex-digit key ID", a.ID)
			}
			if err := checkPrintable("initial coordinator name", a.Name, true); err != nil {
				return Result{}, err
			}
			if seen[a.ID] || names[a.Name] {
				return Result{}, errf(ErrInvalid, "initial coordinator %s (%s) listed twice", a.ID, a.Name)
			}
			seen[a.ID], names[a.Name] = true, true
		}
		for _, a := range b.Initial {
			s.approved[a.ID] = &ApprovedCoordinator{ID: a.ID, Name: a.Name}
		}
	} else {
		a, ok := s.approved[id]
		if !ok {
			return Result{}, errf(ErrForbidden, "key %s is not approved to join the coordinators (a majority of them must approve it first)", id)
		}
		if a.Name != b.Name {
			return Result{}, errf(ErrForbidden, "key %s is approved as %q, not %q", id, a.Name, b.Name)
		}
		if len(b.Initial) > 0 {
			return Result{}, errf(ErrInvalid, "only the bootstrap add-coordinator names initial coordinators")
		}
		delete(s.approved, id)
	}
	s.coordinators[id] = &Coordinator{ID: id, PublicKey: cloneBytes(b.PublicKey), Name: b.Name, AddedAt: now}
	return Result{Member: id}, nil
}

// operate checks an operator command's body against the state and, unless dry, applies it.
func (s *State) operate(body Body, dry bool) (Result, error) {
	switch b := body.(type) {
	case *SetLimitsBody:
		return s.setLimits(b, dry)
	case *FundBody:
		return s.fund(b, dry)
	case *GrantBody:
		return s.grant(b, dry)
	case *ApproveCoordinatorBody:
		return s.approveCoordinator(b, dry)
	}
	panic("consensus: operate called with " + body.Type().String()) // operator() lists exactly the cases above
}

func (s *State) approveCoordinator(b *ApproveCoordinatorBody, dry bool) (Result, error) {
	if len(b.ID) != 32 {
		return Result{}, errf(ErrInvalid, "coordinator key ID %q: want 32 hex digits", b.ID)
	}
	if _, err := hex.DecodeString(b.ID); err != nil {
		return Result{}, errf(ErrInvalid, "coordinator key ID %q: want 32 hex digits", b.ID)
	}
	if b.Remove {
		c, ok := s.coordinators[b.ID]
		if !ok {
			if _, ok := s.approved[b.ID]; ok { // withdraw an approval not used yet
				if dry {
					return Result{}, nil
				}
				delete(s.approved, b.ID)
				return Result{Member: b.ID, Status: "removed"}, nil
			}
			return Result{}, errf(ErrNotFound, "coordinator %s", b.ID)
		}
		if len(s.coordinators) == 1 {
			return Result{}, errf(ErrForbidden, "coordinator %s (%s) is the last one", b.ID, c.Name)
		}
		if dry {
			return Result{}, nil
		}
		delete(s.coordinators, b.ID)
		s.pruneMotions()
		return Result{Member: b.ID, Status: "removed"}, nil
	}
	if err := checkPrintable("coordinator name", b.Name, true); err != nil {
		return Result{}, err
	}
	if _, ok := s.coordinators[b.ID]; ok {
		return Result{}, errf(ErrExists, "coordinator %s", b.ID)
	}
	if _, ok := s.members[b.ID]; ok {
		return Result{}, errf(ErrExists, "key %s is registered as a member", b.ID)
	}
	for _, c := range s.coordinators {
		if c.Name == b.Name {
			return Result{}, errf(ErrExists, "coordinator name %q is taken by %s", b.Name, c.ID)
		}
	}
	if len(s.approved) >= MaxMotions {
		return Result{}, errf(ErrLimit, "%d approvals are waiting to be used, limit %d", len(s.approved), MaxMotions)
	}
	if dry {
		return Result{}, nil
	}
	s.approved[b.ID] = &ApprovedCoordinator{ID: b.ID, Name: b.Name}
	return Result{Member: b.ID, Status: "approved"}, nil
}

// Approved returns the keys approved to register as coordinators that have not yet, sorted by ID.
func (s *State) Approved() []ApprovedCoordinator {
	out := make([]ApprovedCoordinator, 0, len(s.approved))
	for _, k := range keysOf(s.approved) {
		out = append(out, *s.approved[k])
	}
	return out
}

// Motions returns the operator motions waiting for signatures, sorted by digest.
func (s *State) Motions() []Motion {
	out := make([]Motion, 0, len(s.motions))
	for _, k := range keysOf(s.motions) {
		m := *s.motions[k]
		m.Body, m.By = cloneBytes(m.Body), append([]string(nil), m.By...)
		out = append(out, m)
	}
	return out
}

// Admitted reports whether id may take part in the coordinators' Raft traffic: a registered
// coordinator or a key approved to register.
func (s *State) Admitted(id string) bool {
	if _, ok := s.coordinators[id]; ok {
		return true
	}
	_, ok := s.approved[id]
	return ok
}
