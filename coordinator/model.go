package coordinator

import (
	"context"
	"fmt"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// mayRead reports (nil) whether peer may read cohort's model, momentum and aggregates: a member of
// the cohort, a registered coordinator, or this node itself (the zero NodeID: a local call).
func (s *Server) mayRead(peer transport.NodeID, cohort uint64) error {
	if peer == (transport.NodeID{}) || peer == s.cfg.Identity.NodeID() {
		return nil
	}
	id := peer.String()
	ok := false
	s.node.View(func(st *consensus.State) error {
		_, member := st.RegisteredSamples(cohort, id)
		ok = member || st.HasCoordinator(id)
		return nil
	})
	if !ok {
		return fmt.Errorf("%w: %s is neither a member of cohort %d nor a coordinator: the cohort's model and aggregates are for them only", protocol.ErrForbidden, id, cohort)
	}
	return nil
}

// allowBlob is the transfer store's access hook (transport.StoreConfig.Allow): the store holds
// only cohorts' model blobs (handleModel), so a blob goes to whoever may read its cohort.
func (s *Server) allowBlob(peer transport.NodeID, root transport.Hash) error {
	s.rtMu.Lock()
	rts := make([]*cohortRT, 0, len(s.rts))
	for _, rt := range s.rts {
		rts = append(rts, rt)
	}
	s.rtMu.Unlock()
	for _, rt := range rts {
		rt.mu.Lock()
		mine := rt.blobRoot == root
		rt.mu.Unlock()
		if mine {
			return s.mayRead(peer, rt.id)
		}
	}
	return fmt.Errorf("%w: blob %s is no cohort's current model", protocol.ErrForbidden, root)
}

// handleModel answers with where to fetch θ and the outer momentum of a cohort's replica: the blob
// is put in the node's transfer store (once per applied round) and fetched in chunks. Only the
// cohort's members and coordinators may ask (mayRead), and fetch the blob (allowBlob).
func (s *Server) handleModel(_ context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
	var q protocol.ModelRequest
	if err := req.DecodeBody(&q); err != nil {
		return transport.Message{}, err
	}
	if err := s.mayRead(peer, q.Cohort); err != nil {
		return transport.Message{}, fmt.Errorf("model: %w", err)
	}
	s.rtMu.Lock()
	rt := s.rts[q.Cohort]
	s.rtMu.Unlock()
	if rt == nil {
		return transport.Message{}, fmt.Errorf("%w: cohort %d has no model on this node yet", protocol.ErrUnavailable, q.Cohort)
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.blobRound != rt.applied || rt.blobRoot == (transport.Hash{}) {
		b := protocol.AppendModel(make([]byte, 0, 8*len(rt.theta)), rt.theta, rt.outer.Momentum())
		m, err := s.store.Put(b, 0)
		if err != nil {
			return transport.Message{}, err
		}
		if rt.blobRoot != (transport.Hash{}) && rt.blobRoot != m.Root() {
			s.store.Remove(rt.blobRoot)
		}
		rt.blobRoot, rt.blobRound = m.Root(), rt.applied
	}
	reply := transport.Message{Header: transport.Header{Type: protocol.MsgModel}}
	err := reply.SetBody(protocol.ModelReply{Round: rt.applied, Params: len(rt.theta), Hash: rt.hash[:], Root: rt.blobRoot[:]})
	return reply, err
}
