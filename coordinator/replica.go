package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/transport"
)

// syncReplica advances the replica: applies the latest open round once all its aggregates are
// available, accepts closed rounds recorded with an unchanged hash (abandoned), and re-fetches
// the model from another coordinator when the replica disagrees with what the log recorded.
func (s *Server) syncReplica(rt *cohortRT, rounds []consensus.Round) {
	ctx := s.runCtx
	rt.mu.Lock()
	applied, hash, busy := rt.applied, rt.hash, rt.fetching
	rt.mu.Unlock()
	if busy {
		return
	}
	for _, r := range rounds {
		if r.Number <= applied {
			if r.Status == consensus.RoundClosed && r.Number == applied && !bytes.Equal(r.NewModelHash, hash[:]) {
				s.startFetch(rt, func() { s.resync(ctx, rt, r) })
				return
			}
			continue
		}
		if r.Number != applied+1 {
			s.startFetch(rt, func() { s.resync(ctx, rt, rounds[len(rounds)-1]) })
			return
		}
		if r.Status == consensus.RoundClosed && bytes.Equal(r.NewModelHash, hash[:]) {
			rt.mu.Lock() // abandoned round: θ unchanged
			rt.applied = r.Number
			rt.mu.Unlock()
			applied = r.Number
			continue
		}
		s.startFetch(rt, func() { s.applyRound(ctx, rt, r) })
		return
	}
}

func (s *Server) startFetch(rt *cohortRT, f func()) {
	rt.mu.Lock()
	rt.fetching = true
	rt.mu.Unlock()
	go func() {
		defer func() {
			rt.mu.Lock()
			rt.fetching = false
			rt.mu.Unlock()
		}()
		f()
	}()
}

// applyRound fetches every slice's aggregate of round r and applies the outer step.
func (s *Server) applyRound(ctx context.Context, rt *cohortRT, r consensus.Round) {
	ctx, cancel := context.WithTimeout(ctx, time.UnixMilli(r.Deadline).Sub(s.cfg.Now())+s.cfg.Rounds.AbortAfter)
	defer cancel()
	delta := make([]float32, len(rt.theta))
	for i, sl := range r.Slices {
		rep, payload, err := s.fetchAggregate(ctx, rt.id, r.Number, i, sl.Aggregator)
		if err != nil {
			s.log.Debug("fetch aggregate", "cohort", rt.id, "round", r.Number, "slice", i, "err", err)
			return
		}
		if rep.Aborted {
			return // nobody's update arrived: the leader abandons the round
		}
		if err := spec.DecodeAggregate(rt.down, rt.shape, int(sl.Start), int(sl.End), payload, delta[sl.Start:sl.End]); err != nil {
			s.log.Warn("aggregate", "cohort", rt.id, "round", r.Number, "slice", i, "err", err)
			return
		}
	}
	// A slice moved to another aggregator while we fetched: its aggregate is that one's now.
	var now consensus.Round
	if err := s.node.View(func(st *consensus.State) error {
		var err error
		now, err = st.Round(rt.id, r.Number)
		return err
	}); err != nil {
		return
	}
	for i := range r.Slices {
		if now.Slices[i].Aggregator != r.Slices[i].Aggregator {
			return // the next tick fetches by the new assignment
		}
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.applied != r.Number-1 {
		return
	}
	rt.outer.Step(rt.theta, delta)
	rt.applied = r.Number
	rt.hash = protocol.HashParams(rt.theta)
	rt.remember(rt.hash, delta)
	s.log.Debug("applied round", "cohort", rt.id, "round", r.Number, "hash", fmt.Sprintf("%x", rt.hash[:8]))
}

// fetchAggregate gets one slice's aggregate from its aggregator (this node or another), asking
// again while the aggregator answers that it is not ready (protocol.AggregateWait) until ctx ends.
func (s *Server) fetchAggregate(ctx context.Context, cohort uint64, round uint32, slice int, aggregator string) (protocol.AggregateReply, []byte, error) {
	req := transport.Message{Header: transport.Header{Type: protocol.MsgAggregate}}
	if err := req.SetBody(protocol.AggregateRequest{Cohort: cohort, Round: round, Slice: slice}); err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	var reply transport.Message
	var err error
	for {
		if aggregator == s.KeyID() {
			reply, err = s.handleAggregate(ctx, transport.NodeID{}, req)
		} else {
			addr, aerr := s.addrOfKey(aggregator)
			if aerr != nil {
				return protocol.AggregateReply{}, nil, aerr
			}
			reply, err = s.call(ctx, addr, req)
		}
		if !errors.Is(err, protocol.ErrNotReady) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	var rep protocol.AggregateReply
	return rep, reply.Payload, reply.DecodeBody(&rep)
}

// addrOfKey maps a coordinator key ID to its raft address.
func (s *Server) addrOfKey(keyID string) (string, error) {
	var name string
	s.node.View(func(st *consensus.State) error {
		for _, c := range st.Coordinators() {
			if c.ID == keyID {
				name = c.Name
			}
		}
		return nil
	})
	servers, err := s.node.Servers()
	if err != nil {
		return "", err
	}
	for _, sv := range servers {
		if sv.ID == name {
			return sv.Addr, nil
		}
	}
	return "", fmt.Errorf("coordinator %s (%q) has no known address", keyID, name)
}

// resync replaces the replica with the model of another coordinator that has applied round r
// with the recorded hash.
func (s *Server) resync(ctx context.Context, rt *cohortRT, r consensus.Round) {
	if r.Status != consensus.RoundClosed {
		return
	}
	servers, err := s.node.Servers()
	if err != nil {
		return
	}
	for _, sv := range servers {
		if sv.ID == s.cfg.ID {
			continue
		}
		req := transport.Message{Header: transport.Header{Type: protocol.MsgModel}}
		req.SetBody(protocol.ModelRequest{Cohort: rt.id})
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		reply, err := s.call(cctx, sv.Addr, req)
		cancel()
		if err != nil {
			continue
		}
		var mr protocol.ModelReply
		if err := reply.DecodeBody(&mr); err != nil || mr.Round != r.Number || mr.Want(len(rt.theta), r.NewModelHash) != nil {
			continue
		}
		cctx, cancel = context.WithTimeout(ctx, time.Minute)
		blob, err := s.fetchBlob(cctx, sv.Addr, transport.Hash(mr.Root), int64(8*mr.Params))
		cancel()
		if err != nil {
			continue
		}
		theta, momentum, err := protocol.DecodeModel(blob, mr.Params, mr.Hash)
		if err != nil {
			continue
		}
		rt.mu.Lock()
		copy(rt.theta, theta)
		copy(rt.outer.Momentum(), momentum)
		rt.applied, rt.hash = r.Number, [32]byte(mr.Hash)
		rt.measure(rt.theta, rt.hash)
		rt.mu.Unlock()
		s.log.Info("re-synced cohort model", "cohort", rt.id, "round", r.Number, "from", sv.ID)
		return
	}
}

// fetchBlob fetches a blob from the coordinator at addr (which must have the key registered for
// that voter) over a connection of this node.
func (s *Server) fetchBlob(ctx context.Context, addr string, root transport.Hash, size int64) ([]byte, error) {
	want, err := transport.ParseNodeID(s.keyAt(addr))
	if err != nil {
		return nil, fmt.Errorf("coordinator at %s: no key known: %w", addr, err)
	}
	c, err := s.ep.DialNode(ctx, addr, want)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return transport.Fetch(ctx, []*transport.Conn{c}, root, transport.TransferOptions{MaxSize: size})
}
