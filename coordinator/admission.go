package coordinator

import (
	"context"
	"errors"
	"fmt"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/internal/wirecode"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// Admission: who may speak Raft to this node, how a coordinator joins, and whom this node
// trusts at a coordinator's address.
//
// Raft runs over transport.StreamListener (TLS 1.3, both ends presenting their node keys), and
// raftAllowed decides in the handshake which keys get in: once the state is bootstrapped, exactly
// the registered coordinators and the keys a majority approved (consensus.State.Admitted); before
// that, the voters pinned in --peers and the coordinators learnt from the pinned coordinator
// joined through. Everyone else's TCP connection ends in the handshake, before raft reads a byte.
//
// Joining: the operators of a majority approve the new key (cohort approve-coordinator, an
// operator command each signs with its own coordinator's key); the new node then asks the leader
// (MsgJoinCluster) with an AddCoordinator self-signed by its key over a connection made with that
// same key; the leader applies it — the state refuses an unapproved key — and only then adds the
// node as a raft voter. Removing works the same way round: once a majority has removed a key from
// the state, the leader removes its raft voter and every node closes its raft connections.

// raftAllowed is the raft stream layer's Allow.
func (s *Server) raftAllowed(id transport.NodeID) error {
	key := id.String()
	if n := s.raftNode.Load(); n != nil {
		bootstrapped, admitted := false, false
		n.View(func(st *consensus.State) error {
			bootstrapped = len(st.Coordinators()) > 0
			admitted = st.Admitted(key)
			return nil
		})
		if bootstrapped {
			if admitted {
				return nil
			}
			return errors.New("not an admitted coordinator key")
		}
	}
	for _, p := range s.cfg.Peers {
		if p.Key == key {
			return nil
		}
	}
	s.pinMu.Lock()
	defer s.pinMu.Unlock()
	if key == s.cfg.JoinKey || s.learned[key] {
		return nil
	}
	return errors.New("not a pinned coordinator key")
}

// registerSelf registers this node's key: the first leader of a fresh cluster bootstraps the
// state with its own key and names the other pinned voters; every other node asks the leader,
// with an AddCoordinator signed by its key.
func (s *Server) registerSelf(ctx context.Context) error { return s.register(ctx, s.cfg.Aggregator) }

// register is registerSelf asking for the given role: an aggregator (a non-voter) or a voter.
func (s *Server) register(ctx context.Context, aggregator bool) error {
	body := &consensus.AddCoordinatorBody{PublicKey: s.cfg.Identity.PublicKey(), Name: s.cfg.ID}
	if s.node.IsLeader() {
		var none bool
		s.node.View(func(st *consensus.State) error { none = len(st.Coordinators()) == 0; return nil })
		if none {
			for _, p := range s.cfg.Peers {
				if p.ID != s.cfg.ID {
					body.Initial = append(body.Initial, consensus.ApprovedCoordinator{ID: p.Key, Name: p.ID})
				}
			}
			env, err := consensus.NewEnvelope(s.cfg.Identity.Key, uint64(s.cfg.Now().UnixNano()), body)
			if err != nil {
				return err
			}
			_, err = s.node.BootstrapCoordinator(ctx, env)
			return err
		}
	}
	env, err := consensus.NewEnvelope(s.cfg.Identity.Key, uint64(s.cfg.Now().UnixNano()), body)
	if err != nil {
		return err
	}
	target, want := s.cfg.Join, s.cfg.JoinKey
	if id, addr := s.node.Leader(); addr != "" {
		target, want = addr, s.keyOfServer(id)
	}
	if target == "" || target == s.cfg.Listen {
		return errors.New("no leader known yet")
	}
	req := transport.Message{Header: transport.Header{Type: MsgJoinCluster}}
	if err := req.SetBody(joinRequest{ID: s.cfg.ID, Addr: s.cfg.Listen, Env: env, Aggregator: aggregator}); err != nil {
		return err
	}
	for hop := 0; hop < 3; hop++ {
		reply, err := s.callPinned(ctx, target, want, req)
		if err != nil {
			return err
		}
		var jr joinReply
		if err := reply.DecodeBody(&jr); err != nil {
			return err
		}
		s.pinMu.Lock()
		for _, k := range jr.Coordinators {
			s.learned[k] = true
		}
		s.pinMu.Unlock()
		if jr.Leader == "" {
			return nil
		}
		target, want = jr.Leader, jr.LeaderKey // a follower pointed at the leader
	}
	return errors.New("join-cluster: no leader reached")
}

// ErrSuffrage refuses a join that asks for another suffrage than the server has: a non-voter
// (aggregator) cannot make itself a voter by asking again, nor a voter give its vote away.
var ErrSuffrage error = wirecode.New(193, "suffrage mismatch")

type joinRequest struct {
	ID   string
	Addr string
	Env  consensus.Envelope
	// Aggregator asks to join as a raft non-voter (Config.Aggregator). It only ever takes a
	// right away: the key must be approved all the same.
	Aggregator bool
}

// joinReply is from the leader once the node is in, or from a follower naming the leader. Either
// lists the key IDs of the coordinators, so that the joining node's raft layer admits them before
// its own copy of the state has caught up.
type joinReply struct {
	Leader       string
	LeaderKey    string
	Coordinators []string
}

func (s *Server) coordinatorKeys() []string {
	var out []string
	s.node.View(func(st *consensus.State) error {
		for _, c := range st.Coordinators() {
			out = append(out, c.ID)
		}
		return nil
	})
	return out
}

// handleJoinCluster (leader) registers the requesting node's key — which a majority must have
// approved — and then adds it as a voter, or as a non-voter when it asks to be an aggregator.
// The request must come from the address it claims and carry an AddCoordinator self-signed by
// the key of the connection. A server keeps the suffrage it joined with: a non-voter asking to
// join as a voter (or the reverse) is refused; the operators remove it first.
func (s *Server) handleJoinCluster(ctx context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
	var jr joinRequest
	if err := req.DecodeBody(&jr); err != nil {
		return transport.Message{}, err
	}
	reply := transport.Message{Header: transport.Header{Type: MsgJoinCluster}}
	if !s.node.IsLeader() {
		id, addr := s.node.Leader()
		if addr == "" {
			return transport.Message{}, fmt.Errorf("%w: no leader elected yet", protocol.ErrUnavailable)
		}
		return reply, reply.SetBody(joinReply{Leader: addr, LeaderKey: s.keyOfServer(id), Coordinators: s.coordinatorKeys()})
	}
	if jr.Env.Issuer != peer.String() {
		return transport.Message{}, fmt.Errorf("join-cluster: envelope issued by %s but sent by %s", jr.Env.Issuer, peer)
	}
	body, err := jr.Env.DecodeBody()
	if err != nil {
		return transport.Message{}, err
	}
	ac, ok := body.(*consensus.AddCoordinatorBody)
	if !ok || ac.Name != jr.ID || len(ac.Initial) > 0 {
		return transport.Message{}, errors.New("join-cluster: want an add-coordinator body naming the node")
	}
	if conn, ok := transport.ConnFromContext(ctx); ok && conn.RemoteAddr().String() != jr.Addr {
		return transport.Message{}, fmt.Errorf("join-cluster: node %s claims address %s but connects from %s", jr.ID, jr.Addr, conn.RemoteAddr())
	}
	if !s.isCoordinator(peer.String()) {
		// The state refuses a key a majority has not approved, before raft hears of the node.
		if _, err := s.node.Apply(ctx, jr.Env); err != nil && !errors.Is(err, consensus.ErrExists) {
			return transport.Message{}, classify(err)
		}
	}
	servers, err := s.node.Servers()
	if err != nil {
		return transport.Message{}, err
	}
	want := consensus.Voter
	if jr.Aggregator {
		want = consensus.Nonvoter
	}
	member := false
	for _, sv := range servers {
		if sv.ID == jr.ID {
			if sv.Addr != jr.Addr {
				return transport.Message{}, fmt.Errorf("join-cluster: %s is a %s at %s, not %s", jr.ID, sv.Suffrage, sv.Addr, jr.Addr)
			}
			if sv.Suffrage != want {
				return transport.Message{}, fmt.Errorf("%w: join-cluster: %s is a %s, and asks to join as a %s: a majority of the operators removes it first", ErrSuffrage, jr.ID, sv.Suffrage, want)
			}
			member = true
		}
	}
	switch {
	case member:
	case jr.Aggregator:
		if err := s.node.AddNonvoter(ctx, jr.ID, jr.Addr); err != nil {
			return transport.Message{}, classify(err)
		}
		s.log.Info("added aggregator (non-voter)", "id", jr.ID, "addr", jr.Addr, "key", peer)
	default:
		if err := s.node.AddVoter(ctx, jr.ID, jr.Addr); err != nil {
			return transport.Message{}, classify(err)
		}
		s.log.Info("added voter", "id", jr.ID, "addr", jr.Addr, "key", peer)
	}
	return reply, reply.SetBody(joinReply{Coordinators: s.coordinatorKeys()})
}

// keyOfServer is the key ID of the coordinator registered (or approved, or pinned) under raft
// server ID id, or "" when none is known.
func (s *Server) keyOfServer(id string) string {
	if id == "" {
		return ""
	}
	key := ""
	s.node.View(func(st *consensus.State) error {
		for _, c := range st.Coordinators() {
			if c.Name == id {
				key = c.ID
			}
		}
		if key == "" {
			for _, a := range st.Approved() {
				if a.Name == id {
					key = a.ID
				}
			}
		}
		return nil
	})
	if key == "" {
		for _, p := range s.cfg.Peers {
			if p.ID == id {
				key = p.Key
			}
		}
	}
	return key
}

// keyAt is the key ID expected of the coordinator listening at addr: the raft voter at that
// address, by its registered key. "" when the address is not a voter's.
func (s *Server) keyAt(addr string) string {
	if addr == s.cfg.Join && s.cfg.JoinKey != "" {
		return s.cfg.JoinKey
	}
	servers, err := s.node.Servers()
	if err != nil {
		return ""
	}
	for _, sv := range servers {
		if sv.Addr == addr {
			return s.keyOfServer(sv.ID)
		}
	}
	return ""
}

// reconcileVoters closes raft connections of keys no longer admitted and, on the leader, removes
// the raft voters whose coordinator a majority removed from the state.
func (s *Server) reconcileVoters(ctx context.Context) {
	if n := s.raftLn.Recheck(); n > 0 {
		s.log.Info("closed raft connections of keys no longer admitted", "connections", n)
	}
	if !s.node.IsLeader() {
		return
	}
	servers, err := s.node.Servers()
	if err != nil {
		return
	}
	for _, sv := range servers {
		if sv.ID == s.cfg.ID || s.keyOfStateServer(sv.ID) {
			continue
		}
		if err := s.node.RemoveServer(ctx, sv.ID); err != nil {
			s.log.Warn("remove voter", "id", sv.ID, "err", err)
			continue
		}
		s.log.Info("removed voter its coordinators removed", "id", sv.ID, "addr", sv.Addr)
	}
}

// keyOfStateServer reports whether the state names raft server id as a coordinator or an
// approved one (a voter the state does not know is one a majority removed).
func (s *Server) keyOfStateServer(id string) bool {
	found := false
	s.node.View(func(st *consensus.State) error {
		for _, c := range st.Coordinators() {
			found = found || c.Name == id
		}
		for _, a := range st.Approved() {
			found = found || a.Name == id
		}
		return nil
	})
	return found
}
