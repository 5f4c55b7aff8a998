package peer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cohortlab/cohort/client"
	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/transport"
)

// Coordinators is what a peer asks of the coordinators. ClientCoordinators is the implementation
// over a member's client; a simulation may wrap it. The peer reads errors with errors.Is against
// the sentinels: an upload matching protocol.ErrDuplicate (or a join matching consensus.ErrExists)
// counts once; protocol.ErrUnavailable, transport.ErrBusy, protocol.ErrNotAggregator and an error
// that is no coordinator's answer (the node did not answer) are worth another try after the peer
// looks at the round again; anything else is final.
type Coordinators interface {
	// ID is this member's key ID, as rounds list their participants.
	ID() string
	// Proposal returns the proposal cohort trains.
	Proposal(ctx context.Context, cohort uint64) (consensus.Proposal, error)
	// Register registers the member with its contributors' names, unless it already is.
	Register(ctx context.Context, name string, contributors []string) error
	// Submit commits a signed command: a join or a receipt.
	Submit(ctx context.Context, body consensus.Body) error
	// NextRound long-polls for a round of cohort numbered after `after`: it returns the cohort and
	// its newest round, if there is one after `after`, or just the cohort when the wait ends.
	NextRound(ctx context.Context, cohort uint64, after uint32) (*consensus.Cohort, []consensus.Round, error)
	// Round reads round number of cohort as the coordinators record it now.
	Round(ctx context.Context, cohort uint64, number uint32) (consensus.Round, error)
	// Upload sends one slice's update to the aggregator (a coordinator's key ID). An aggregator
	// that answers with the slice's aggregate (protocol.MsgExchange: it held the answer until the
	// aggregate was ready) returns it with ok true, as Aggregate would have; with ok false the
	// peer asks for it with Aggregate.
	Upload(ctx context.Context, aggregator string, u protocol.Upload, payload []byte) (rep protocol.AggregateReply, agg []byte, ok bool, err error)
	// Aggregate long-polls the aggregator for a slice's aggregate: the reply and its payload.
	Aggregate(ctx context.Context, aggregator string, q protocol.AggregateRequest) (protocol.AggregateReply, []byte, error)
	// Model fetches θ and the outer momentum (n values each) of the cohort's model with the given
	// hash from a coordinator that has it.
	Model(ctx context.Context, cohort uint64, hash []byte, n int) (theta, momentum []float32, err error)
}

// failure is how a peer reads a coordinator's refusal or silence.
type failure int

const (
	failFinal     failure = iota // a refusal: do not try again
	failRetry                    // no answer, not ready, or not this aggregator: look at the round again and retry
	failDuplicate                // already recorded (an upload resent, a join repeated): it counts once
)

// classify reads an error of the coordinators by its sentinel: the one place that tells them apart.
func classify(err error) failure {
	switch {
	case errors.Is(err, consensus.ErrExists), errors.Is(err, protocol.ErrDuplicate):
		return failDuplicate
	case client.Retryable(err), errors.Is(err, protocol.ErrNotAggregator):
		return failRetry // no answer, unavailable or busy; or the slice is aggregated elsewhere now
	}
	return failFinal
}

// ClientCoordinators is Coordinators over a member's client: consensus commands are signed
// envelopes, data-plane messages go to the aggregator's address on the same authenticated
// connections.
func ClientCoordinators(cl *client.Client) Coordinators {
	return &clientCoordinators{cl: cl, addrs: map[string]string{}}
}

type clientCoordinators struct {
	cl     *client.Client
	addrMu sync.Mutex
	addrs  map[string]string // coordinator key ID → address
	// plain are the aggregators that answered protocol.MsgExchange with transport.ErrUnknownType
	// (a version before it): they get MsgUpload.
	plain sync.Map
}

// attemptTimeout bounds one long-poll for an aggregate, and sendTimeout one upload of a slice (a
// few KB to a few hundred): a connection to a coordinator that died does not fail by itself before
// QUIC's idle timeout, and a moved slice must reach its new aggregator before the upload deadline.
// Between long-polls the peer looks at the round again. (With 15 s long-polls, peers waiting on
// a SIGKILLed leader's slice learnt of its move too late to resend it, and the process end-to-end
// test's leader-kill round closed before its aggregate reached them.) roundTimeout bounds a read
// of a round.
const (
	attemptTimeout = 3 * time.Second
	sendTimeout    = 5 * time.Second
	roundTimeout   = 10 * time.Second
)

func (c *clientCoordinators) ID() string { return c.cl.ID() }

func (c *clientCoordinators) Proposal(ctx context.Context, cohort uint64) (consensus.Proposal, error) {
	r, err := c.cl.Query(ctx, protocol.Query{What: protocol.QueryCohort, ID: cohort, Mine: true})
	if errors.Is(err, consensus.ErrNotFound) {
		// A follower may not have applied the tally that made the cohort yet: ask the leader.
		r, err = c.cl.Query(ctx, protocol.Query{What: protocol.QueryCohort, ID: cohort, Mine: true, Linearizable: true})
	}
	if err != nil {
		return consensus.Proposal{}, err
	}
	if r.Cohort == nil {
		return consensus.Proposal{}, errors.New("empty answer")
	}
	pr, err := c.cl.Query(ctx, protocol.Query{What: protocol.QueryProposal, ID: r.Cohort.Proposal, Mine: true})
	if err != nil {
		return consensus.Proposal{}, fmt.Errorf("proposal %d: %w", r.Cohort.Proposal, err)
	}
	if len(pr.Proposals) != 1 {
		return consensus.Proposal{}, fmt.Errorf("proposal %d: %d answers", r.Cohort.Proposal, len(pr.Proposals))
	}
	return pr.Proposals[0], nil
}

func (c *clientCoordinators) Register(ctx context.Context, name string, contributors []string) error {
	return c.cl.EnsureRegistered(ctx, name, contributors)
}

func (c *clientCoordinators) Submit(ctx context.Context, body consensus.Body) error {
	_, err := c.cl.Submit(ctx, body)
	return err
}

// NextRound and Round ask for the member's own view of the round (protocol.Query.Mine): its
// entry among the participants and receipts rather than every participant's, so what a peer
// receives per round does not grow with the cohort.
func (c *clientCoordinators) NextRound(ctx context.Context, cohort uint64, after uint32) (*consensus.Cohort, []consensus.Round, error) {
	q, err := c.cl.Query(ctx, protocol.Query{What: protocol.QueryNextRound, ID: cohort, After: after, Mine: true})
	if err != nil {
		return nil, nil, err
	}
	return q.Cohort, q.Rounds, nil
}

func (c *clientCoordinators) Round(ctx context.Context, cohort uint64, number uint32) (consensus.Round, error) {
	qctx, cancel := context.WithTimeout(ctx, roundTimeout)
	defer cancel()
	q, err := c.cl.Query(qctx, protocol.Query{What: protocol.QueryRound, ID: cohort, Number: number, Mine: true})
	if err != nil {
		return consensus.Round{}, err
	}
	if len(q.Rounds) != 1 || q.Rounds[0].Number != number {
		return consensus.Round{}, fmt.Errorf("cohort %d round %d: %d answers", cohort, number, len(q.Rounds))
	}
	return q.Rounds[0], nil
}

func (c *clientCoordinators) Upload(ctx context.Context, aggregator string, u protocol.Upload, payload []byte) (protocol.AggregateReply, []byte, bool, error) {
	addr, err := c.addrOf(ctx, aggregator)
	if err != nil {
		return protocol.AggregateReply{}, nil, false, err
	}
	if _, plain := c.plain.Load(aggregator); !plain {
		// The aggregator holds the answer up to protocol.AggregateWait beyond the upload.
		actx, cancel := context.WithTimeout(ctx, sendTimeout+protocol.AggregateWait)
		defer cancel()
		reply, err := c.call(actx, addr, protocol.MsgExchange, u, payload)
		if !errors.Is(err, transport.ErrUnknownType) {
			if err != nil || len(reply.Body) == 0 {
				return protocol.AggregateReply{}, nil, false, err // no body: accepted, not ready yet
			}
			var rep protocol.AggregateReply
			if err := reply.DecodeBody(&rep); err != nil {
				return protocol.AggregateReply{}, nil, false, err
			}
			return rep, reply.Payload, true, nil
		}
		c.plain.Store(aggregator, true)
	}
	actx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	_, err = c.call(actx, addr, protocol.MsgUpload, u, payload)
	return protocol.AggregateReply{}, nil, false, err
}

// call sends a request of type typ with body and payload to the coordinator at addr.
func (c *clientCoordinators) call(ctx context.Context, addr, typ string, body any, payload []byte) (transport.Message, error) {
	req := transport.Message{Header: transport.Header{Type: typ}, Payload: payload}
	if err := req.SetBody(body); err != nil {
		return transport.Message{}, err
	}
	return c.cl.CallAt(ctx, addr, req)
}

func (c *clientCoordinators) Aggregate(ctx context.Context, aggregator string, q protocol.AggregateRequest) (protocol.AggregateReply, []byte, error) {
	req := transport.Message{Header: transport.Header{Type: protocol.MsgAggregate}}
	if err := req.SetBody(q); err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	addr, err := c.addrOf(ctx, aggregator)
	if err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	reply, err := c.cl.CallAt(actx, addr, req)
	if err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	var rep protocol.AggregateReply
	if err := reply.DecodeBody(&rep); err != nil {
		return protocol.AggregateReply{}, nil, err
	}
	return rep, reply.Payload, nil
}

// Model asks every coordinator in turn for the cohort's model and takes the first that has the one
// wanted (protocol.ModelReply.Want) and sends it whole (protocol.DecodeModel checks its hash).
func (c *clientCoordinators) Model(ctx context.Context, cohort uint64, hash []byte, n int) ([]float32, []float32, error) {
	st, err := c.cl.Query(ctx, protocol.Query{What: protocol.QueryStatus})
	if err != nil {
		return nil, nil, err
	}
	req := transport.Message{Header: transport.Header{Type: protocol.MsgModel}}
	if err := req.SetBody(protocol.ModelRequest{Cohort: cohort}); err != nil {
		return nil, nil, err
	}
	var last error = errors.New("no coordinator")
	if st.Status == nil {
		return nil, nil, errors.New("the coordinator's status answer is empty")
	}
	for _, sv := range st.Status.Servers {
		reply, err := c.cl.CallAt(ctx, sv.Addr, req)
		if err != nil {
			last = err
			continue
		}
		var mr protocol.ModelReply
		if err := reply.DecodeBody(&mr); err != nil {
			last = fmt.Errorf("%s: %w", sv.ID, err)
			continue
		}
		if err := mr.Want(n, hash); err != nil {
			last = fmt.Errorf("%s: %w", sv.ID, err)
			continue
		}
		blob, err := c.cl.FetchBlob(ctx, sv.Addr, transport.Hash(mr.Root), int64(8*n), 0)
		if err != nil {
			last = fmt.Errorf("fetching the model from %s: %w", sv.ID, err)
			continue
		}
		theta, momentum, err := protocol.DecodeModel(blob, n, hash)
		if err != nil {
			last = fmt.Errorf("%s: %w", sv.ID, err)
			continue
		}
		return theta, momentum, nil
	}
	return nil, nil, last
}

// addrOf resolves an aggregator's key ID to its address.
func (c *clientCoordinators) addrOf(ctx context.Context, keyID string) (string, error) {
	c.addrMu.Lock()
	defer c.addrMu.Unlock()
	if a, ok := c.addrs[keyID]; ok {
		return a, nil
	}
	st, err := c.cl.Query(ctx, protocol.Query{What: protocol.QueryStatus})
	if err != nil {
		return "", err
	}
	if st.Status == nil {
		return "", errors.New("the coordinator's status answer is empty")
	}
	for id, a := range st.Status.KeyAddrs() {
		c.addrs[id] = a
	}
	if a, ok := c.addrs[keyID]; ok {
		return a, nil
	}
	return "", fmt.Errorf("aggregator %s has no known address", keyID)
}
