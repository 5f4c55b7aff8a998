package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortlab/cohort/consensus"
	"github.com/cohortlab/cohort/coordinator/attribution"
	"github.com/cohortlab/cohort/protocol"
	"github.com/cohortlab/cohort/spec"
	"github.com/cohortlab/cohort/transport"
)

// Config configures one coordinator node. Zero values mean the documented defaults.
type Config struct {
	// ID is the node's raft server ID, e.g. "c1". Required.
	ID string
	// Dir holds the raft log, stable store and snapshots. Required unless InMemory.
	Dir string
	// InMemory keeps raft's stores in memory (simulations).
	InMemory bool
	// Listen is host:port. The client API listens there on UDP (QUIC) and raft on TCP: the same
	// port number, so one address names a coordinator. Required, with a concrete IP, unless
	// PacketConn and RaftListener are given.
	Listen string
	// PacketConn (UDP, for QUIC) and RaftListener (TCP, for Raft) are sockets already bound to
	// one address, for a supervisor that binds them (systemd socket activation, a test binding
	// port 0) instead of New binding Listen. Give both or neither. With them Listen may be
	// empty: it is taken from their address; when given it must name the same port (and IP,
	// unless they are bound to every interface). The Server owns them from New on: Close
	// closes them, and so does New when it fails.
	PacketConn   net.PacketConn
	RaftListener net.Listener
	// Peers are the initial voters, this node included, each with its pinned key ID (Peer.Key:
	// only those keys can speak Raft to this node, or register as the cluster's first
	// coordinators); empty when the node joins a running cluster through Join.
	Peers []consensus.Peer
	// Join is the address of a running coordinator to ask for membership (with empty Peers),
	// and JoinKey the key ID that coordinator must have. A majority of the coordinators must
	// have approved this node's key (cohort approve-coordinator) before it can join.
	Join    string
	JoinKey string
	// Aggregator makes the node an aggregator: it joins the cluster (through Join; an aggregator
	// never starts one) as a Raft non-voter, with a key a majority approved like any
	// coordinator's. It follows the log, keeps the replicated state and a replica of every
	// cohort's model, aggregates the slices the leader gives it and answers queries, but does
	// not count toward the quorum and never becomes leader: more aggregators add aggregation
	// bandwidth without slowing commits down. Default false: a voter.
	Aggregator bool
	// Identity is the node's ed25519 key: its QUIC certificate and the key that signs the
	// commands only coordinators may issue. Required.
	Identity *transport.Identity
	// Tick is how often the leader checks for proposals to tally; zero means 200ms.
	Tick time.Duration
	// Raft tunes the consensus node (timeouts, snapshot thresholds); ID, Dir, InMemory,
	// BindAddr and Peers are taken from this Config.
	Raft consensus.Config
	// Logger receives the node's logs; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock the leader stamps commands with and every round decision reads (deadlines,
	// a slice's closing, leader changes); nil means time.Now.
	Now func() time.Time
	// Rounds configures training rounds.
	Rounds RoundConfig
	// OnScore, if set, receives every round this node scores as leader, with what it scored it
	// from (attribution.Trace), before the scores are committed. It must not block.
	OnScore func(attribution.Trace)
	// HTTP is the listen address (host:port) of the read-only dashboard and /metrics (http.go);
	// empty means off.
	HTTP string
	// Validation configures the validator that scores contributions.
	Validation ValidationConfig
	// Transport tunes the QUIC endpoint: the limits a stranger's connections, streams and
	// requests meet (transport.Config documents each and its default). Identity is taken
	// from this Config.
	Transport transport.Config
	// Limits bounds what strangers may ask of this node: write rates and long-polls.
	Limits Limits
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	switch {
	case c.ID == "":
		return errors.New("coordinator: --id is required")
	case c.Dir == "" && !c.InMemory:
		return errors.New("coordinator: --dir is required")
	case c.Identity == nil:
		return errors.New("coordinator: no node key")
	case len(c.Peers) == 0 && c.Join == "":
		return errors.New("coordinator: give --peers to start a cluster or --join to join one")
	case len(c.Peers) > 0 && c.Join != "":
		return errors.New("coordinator: --peers and --join exclude each other")
	case c.Aggregator && c.Join == "":
		return errors.New("coordinator: an aggregator joins a running cluster: give --join (the initial --peers are the voters)")
	case c.Join != "" && c.JoinKey == "":
		return errors.New("coordinator: --join wants KEYID@HOST:PORT: the key ID of the coordinator joined through (its node key; cohort keygen and cohort status print it)")
	}
	self := c.Identity.NodeID().String()
	for _, p := range c.Peers {
		if p.Key == "" {
			return fmt.Errorf("coordinator: --peers: %s=%s has no key ID: want %s=KEYID@%s (each voter's node key ID, printed by cohort keygen)", p.ID, p.Addr, p.ID, p.Addr)
		}
		if _, err := transport.ParseNodeID(p.Key); err != nil {
			return fmt.Errorf("coordinator: --peers: %s: %w", p.ID, err)
		}
		if p.ID == c.ID && p.Key != self {
			return fmt.Errorf("coordinator: --peers pins %s to key %s, but this node's key (%s) is %s", p.ID, p.Key, "--key", self)
		}
	}
	if c.JoinKey != "" {
		if _, err := transport.ParseNodeID(c.JoinKey); err != nil {
			return fmt.Errorf("coordinator: --join: %w", err)
		}
	}
	listen, err := c.listenAddr()
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("coordinator: --listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return fmt.Errorf("coordinator: --listen %q: want a concrete IP address and port", listen)
	}
	for _, r := range []float64{c.Limits.RegisterRate, c.Limits.SubmitRate, c.Limits.SourceRate} {
		if math.IsNaN(r) || math.IsInf(r, 0) {
			return fmt.Errorf("coordinator: rate limit %g/s must be finite", r)
		}
	}
	tc := c.Transport
	tc.Identity = c.Identity
	if err := tc.Validate(); err != nil {
		return fmt.Errorf("coordinator: transport: %w", err)
	}
	if err := c.Rounds.Validate(); err != nil {
		return fmt.Errorf("coordinator: rounds: %w", err)
	}
	if v := c.Validation; v.Samples < 0 || v.Batches < 0 || v.BatchSize < 0 {
		return fmt.Errorf("coordinator: validation samples %d, batches %d and batch size %d must be ≥ 0", v.Samples, v.Batches, v.BatchSize)
	}
	if b := c.Validation.Batches; b > attribution.MaxBatches {
		return fmt.Errorf("coordinator: %d validation batches, limit %d", b, attribution.MaxBatches)
	}
	if m := c.Transport.MaxPayload; m > 0 && m < attribution.MaxPartialBytes {
		// A leader reads the score partials of up to attribution.MaxMembers participants as
		// replies, which the transport caps at MaxPayload.
		return fmt.Errorf("coordinator: transport MaxPayload %d is below the %d bytes a score partial may take", m, attribution.MaxPartialBytes)
	}
	return validateHTTP(c)
}

// Server is one coordinator node: a consensus.Node replica plus the QUIC client API.
type Server struct {
	cfg  Config
	log  *slog.Logger
	node *consensus.Node
	ep   *transport.Endpoint
	mux  *transport.Mux

	pool   *transport.Pool // outgoing connections to the other coordinators, by address
	mu     sync.Mutex
	signer *consensus.Signer

	rtMu sync.Mutex
	rts  map[uint64]*cohortRT // cohort runtimes (model replicas, aggregations)

	valStats validationStats

	store *transport.Store // model blobs served in chunks (late joiners, re-syncs)

	runCtx context.Context // lives as long as Run: background fetches use it

	lim *limiters // write rates and long-polls per source and key (limits.go)

	metrics *metrics // Prometheus metrics (metrics.go)
	web     webState // the dashboard (http.go)

	leaderMu    sync.Mutex
	leaderID    string    // the leader this node saw last ("" none)
	leaderSince time.Time // when it first saw leaderID

	raftLn   *transport.StreamListener      // Raft's authenticated TCP listener (admission.go)
	raftNode atomic.Pointer[consensus.Node] // s.node once it exists, for raftAllowed
	pinMu    sync.Mutex
	learned  map[string]bool // coordinator key IDs learned from the coordinator joined through
}

// leaderChange returns the leader this node sees now and since when it has seen it (the first
// look counts as a change): how an aggregator tells that the leader which opened a round may be
// gone, and that the one replacing it has not yet had time to move the dead node's slices.
func (s *Server) leaderChange() (id string, since time.Time) {
	id, _ = s.node.Leader()
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	if id != s.leaderID || s.leaderSince.IsZero() {
		s.leaderID, s.leaderSince = id, s.cfg.Now()
	}
	return id, s.leaderSince
}

// New starts the raft node and the QUIC endpoint. Call Run to serve.
func New(cfg Config) (*Server, error) {
	if a, err := cfg.listenAddr(); err == nil {
		cfg.Listen = a
	}
	s, err := newServer(cfg)
	if err != nil {
		cfg.closeSockets()
	}
	return s, err
}

func newServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Tick == 0 {
		cfg.Tick = 200 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Rounds = cfg.Rounds.WithDefaults()
	cfg.Validation = cfg.Validation.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.ID)
	var s *Server // set below, before Run serves anything
	tc := cfg.Transport
	tc.Identity = cfg.Identity
	tc.Refused = func(peer transport.NodeID, err error) {
		if cfg.Transport.Refused != nil {
			cfg.Transport.Refused(peer, err)
		}
		s.metrics.observeRefused(refusalReason(err))
		s.log.Debug("refused", "peer", peer, "err", err)
	}
	ep, err := cfg.listenQUIC(tc)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	s = &Server{cfg: cfg, log: log, ep: ep, pool: transport.NewPool(ep), mux: transport.NewMux(), rts: map[uint64]*cohortRT{},
		lim: newLimiters(cfg.Limits), learned: map[string]bool{}}
	// Raft listens on TCP at the same port, behind TLS 1.3 that admits only coordinator keys.
	raftLn, err := cfg.listenRaft(transport.StreamConfig{Identity: cfg.Identity, Allow: s.raftAllowed})
	if err != nil {
		ep.Close()
		return nil, fmt.Errorf("coordinator: raft: %w", err)
	}
	s.raftLn = raftLn
	rc := cfg.Raft
	rc.ID, rc.Dir, rc.InMemory, rc.BindAddr, rc.Peers, rc.Now = cfg.ID, cfg.Dir, cfg.InMemory, cfg.Listen, cfg.Peers, cfg.Now
	rc.Stream, rc.KeyID = raftLn, s.KeyID()
	if rc.LogOutput == nil {
		rc.LogOutput = io.Discard
	}
	node, err := consensus.NewNode(rc)
	if err != nil {
		raftLn.Close()
		ep.Close()
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	s.node = node
	s.raftNode.Store(node)
	// Every request but an upload says all it has to say in its header body: a payload
	// announced with one is refused before a byte of it is read. (Replies that grow with the
	// participants carry a payload: coord.score's, at most attribution.MaxPartialBytes.)
	none := transport.Limit{}
	s.mux.Handle(protocol.MsgSubmit, s.handleSubmit, none)
	s.mux.Handle(protocol.MsgUpload, s.handleUpload, transport.Limit{Payload: s.uploadLimit})
	s.mux.Handle(protocol.MsgExchange, s.handleExchange, transport.Limit{Payload: s.uploadLimit})
	s.mux.Handle(protocol.MsgAggregate, s.handleAggregate, none)
	s.mux.Handle(protocol.MsgModel, s.handleModel, none)
	s.mux.Handle(MsgScore, s.handleScore, none)
	// Coordinators take no pushed blobs (offers and puts are unknown types here), and serve a
	// cohort's model blobs only to its members and the coordinators.
	s.store = transport.NewStore(transport.StoreConfig{PullOnly: true, Allow: s.allowBlob})
	s.store.Register(s.mux)
	s.mux.Handle(protocol.MsgQuery, s.handleQuery, none)
	s.metrics = newMetrics(s)
	s.mux.Handle(MsgJoinCluster, s.handleJoinCluster, none)
	return s, nil
}

// Node is the underlying consensus node.
func (s *Server) Node() *consensus.Node { return s.node }

// Addr is the address the node listens on.
func (s *Server) Addr() string { return s.cfg.Listen }

// Validation returns how many models this node's validators measured and the seconds it took.
func (s *Server) Validation() (models int, seconds float64) {
	s.valStats.mu.Lock()
	defer s.valStats.mu.Unlock()
	return s.valStats.models, s.valStats.seconds
}

// KeyID is the ID of the node's key (its coordinator ID in the state).
func (s *Server) KeyID() string { return s.cfg.Identity.NodeID().String() }

// Run serves the API, registers the node's key with the cluster and, while leader, tallies
// proposals whose voting deadline has passed. It returns when ctx is done.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runCtx = ctx
	stopHTTP, err := s.startHTTP(ctx)
	if err != nil {
		return err
	}
	defer stopHTTP()
	errc := make(chan error, 1)
	go func() { errc <- s.ep.Serve(ctx, s.mux) }()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("coordinator: serve: %w", err)
		case <-t.C:
			s.leaderChange()
			s.tick(ctx)
		}
	}
}

// Close stops the API and the raft node, and closes the sockets given in Config.PacketConn
// and RaftListener.
func (s *Server) Close() error {
	s.pool.Close()
	s.ep.Close()
	err := s.node.Shutdown()
	s.cfg.closeSockets()
	return err
}

// tick does the periodic work: make sure this node's key is registered, and on the leader
// tally expired proposals.
func (s *Server) tick(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if !s.registered() {
		if err := s.registerSelf(ctx); err != nil {
			s.log.Debug("registering node key", "err", err)
		}
		return
	}
	s.reconcileVoters(ctx)
	s.driveCohorts(ctx)
	if !s.node.IsLeader() {
		return
	}
	now := s.cfg.Now().UnixMilli()
	var due []uint64
	s.node.View(func(st *consensus.State) error {
		for _, p := range st.Proposals() {
			if p.Status == consensus.ProposalOpen && p.Deadline <= now {
				due = append(due, p.ID)
			}
		}
		return nil
	})
	for _, id := range due {
		res, err := s.applyAsSelf(ctx, &consensus.TallyBody{Proposal: id})
		if err != nil {
			s.log.Warn("tally", "proposal", id, "err", err)
			continue
		}
		s.log.Info("tallied proposal", "proposal", id, "status", res.Status, "cohort", res.Cohort)
	}
}

func (s *Server) registered() bool {
	me := s.KeyID()
	found := false
	s.node.View(func(st *consensus.State) error {
		for _, c := range st.Coordinators() {
			found = found || c.ID == me
		}
		return nil
	})
	return found
}

// applyAsSelf signs body with the node key and applies it (leader only).
func (s *Server) applyAsSelf(ctx context.Context, body consensus.Body) (consensus.Result, error) {
	s.mu.Lock()
	if s.signer == nil {
		var last uint64
		s.node.View(func(st *consensus.State) error { last = st.LastRequestID(s.KeyID()); return nil })
		sg, err := consensus.NewSigner(s.cfg.Identity.Key, max(last, uint64(s.cfg.Now().UnixNano())))
		if err != nil {
			s.mu.Unlock()
			return consensus.Result{}, err
		}
		s.signer = sg
	}
	sg := s.signer
	s.mu.Unlock()
	env, err := sg.Sign(body)
	if err != nil {
		return consensus.Result{}, err
	}
	return s.node.Apply(ctx, env)
}

// handleSubmit applies a member's signed command, forwarding it to the leader from a follower.
// The envelope's issuer must be the key of the connection (a member submits its own commands),
// unless the connection is a registered coordinator forwarding a client's envelope.
func (s *Server) handleSubmit(ctx context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
	var env consensus.Envelope
	if err := req.DecodeBody(&env); err != nil {
		return transport.Message{}, fmt.Errorf("submit: %w", err)
	}
	forwarded := env.Issuer != peer.String()
	if forwarded && !s.isCoordinator(peer.String()) {
		if s.isMember(peer.String()) {
			return transport.Message{}, fmt.Errorf("submit: request issued by %s but sent by %s: members submit their own requests", env.Issuer, peer)
		}
		// Most likely a coordinator whose key this node has not seen registered yet (a fresh
		// cluster, a lagging replica) forwarding a member's write: retryable, so the client
		// tries another coordinator rather than giving the write up.
		return transport.Message{}, fmt.Errorf("%w: submit: request issued by %s but sent by %s, not a registered coordinator", protocol.ErrUnavailable, env.Issuer, peer)
	}
	if !forwarded {
		// Before anything costs the cluster a signature check or a log entry.
		if err := s.rateLimit(ctx, peer, env); err != nil {
			return transport.Message{}, err // wraps protocol.ErrUnavailable: the client retries it
		}
	}
	if env.Type == consensus.CmdPropose {
		// The state machine checks sizes only; a proposal nobody could train with is refused here.
		if b, err := env.DecodeBody(); err == nil {
			if err := spec.Check(b.(*consensus.ProposeBody).Params); err != nil {
				return transport.Message{}, fmt.Errorf("submit: proposal: %w: %w", consensus.ErrInvalid, err)
			}
		}
	}
	if s.node.IsLeader() {
		// A forged or unsigned envelope, or one its issuer may not send, is refused before it
		// becomes a log entry (the state checks it again when applying).
		if err := s.node.Verify(env); err != nil {
			return transport.Message{}, classify(err)
		}
	}
	res, err := s.node.Apply(ctx, env)
	if errors.Is(err, consensus.ErrNotLeader) && !forwarded {
		return s.forward(ctx, req)
	}
	if err != nil {
		return transport.Message{}, classify(err)
	}
	reply := transport.Message{Header: transport.Header{Type: protocol.MsgSubmit}}
	err = reply.SetBody(protocol.SubmitReply{Result: res, Leader: s.cfg.ID})
	return reply, err
}

// rateLimit spends a token of the sender's submit budget and of its source's and, for a
// registration or anything else from a key the state does not know, one of its source's
// registration budget: a key is free to make, a source address is not.
func (s *Server) rateLimit(ctx context.Context, peer transport.NodeID, env consensus.Envelope) error {
	src := "unknown source"
	if c, ok := transport.ConnFromContext(ctx); ok {
		src = s.lim.cfg.Source(c.RemoteAddr())
	}
	if env.Type == consensus.CmdRegister || !s.isMember(peer.String()) && !s.isCoordinator(peer.String()) {
		if err := s.lim.register.take(src); err != nil {
			s.metrics.observeRefused("rate_limited_source")
			return err
		}
	}
	if err := s.lim.source.take(src); err != nil {
		s.metrics.observeRefused("rate_limited_source")
		return err
	}
	if err := s.lim.submit.take(peer.String()); err != nil {
		s.metrics.observeRefused("rate_limited_key")
		return err
	}
	return nil
}

func (s *Server) isMember(id string) bool {
	found := false
	s.node.View(func(st *consensus.State) error {
		found = st.HasMember(id)
		return nil
	})
	return found
}

func (s *Server) isCoordinator(id string) bool {
	found := false
	s.node.View(func(st *consensus.State) error {
		found = st.HasCoordinator(id)
		return nil
	})
	return found
}

// forward sends a submit to the leader and relays its reply.
func (s *Server) forward(ctx context.Context, req transport.Message) (transport.Message, error) {
	_, addr := s.node.Leader()
	if addr == "" || addr == s.cfg.Listen {
		return transport.Message{}, fmt.Errorf("%w: no leader elected yet", protocol.ErrUnavailable)
	}
	if !s.registered() {
		// The leader takes forwarded requests from registered coordinators only.
		return transport.Message{}, fmt.Errorf("%w: this coordinator's key is not registered yet: cannot forward", protocol.ErrUnavailable)
	}
	reply, err := s.call(ctx, addr, transport.Message{Header: transport.Header{Type: protocol.MsgSubmit, Body: req.Body}})
	if err != nil {
		var re *transport.RemoteError
		if errors.As(err, &re) {
			return transport.Message{}, re.Reason() // classified by the leader: its code goes back as it came
		}
		return transport.Message{}, fmt.Errorf("%w: forwarding to leader at %s: %w", protocol.ErrUnavailable, addr, err)
	}
	return transport.Message{Header: transport.Header{Type: protocol.MsgSubmit, Body: reply.Body}}, nil
}

// call sends req to the coordinator at addr over a cached connection from this node's endpoint.
// The coordinator must present the key registered for the raft voter at addr: a node that
// answers at a coordinator's address with another key is refused (score partials, aggregates,
// model re-syncs and forwarded writes go only to the cluster's own keys).
func (s *Server) call(ctx context.Context, addr string, req transport.Message) (transport.Message, error) {
	want := s.keyAt(addr)
	if want == "" {
		return transport.Message{}, fmt.Errorf("%w: no coordinator key known for %s", protocol.ErrUnavailable, addr)
	}
	return s.callPinned(ctx, addr, want, req)
}

// callPinned is call to the node at addr that must have key ID want.
func (s *Server) callPinned(ctx context.Context, addr, want string, req transport.Message) (transport.Message, error) {
	wantID, err := transport.ParseNodeID(want)
	if err != nil {
		return transport.Message{}, fmt.Errorf("coordinator at %s: %w", addr, err)
	}
	return s.pool.Call(ctx, addr, wantID, req)
}

func (s *Server) handleQuery(ctx context.Context, peer transport.NodeID, req transport.Message) (transport.Message, error) {
	var q protocol.Query
	if err := req.DecodeBody(&q); err != nil {
		return transport.Message{}, fmt.Errorf("query: %w", err)
	}
	if q.Linearizable {
		if !s.node.IsLeader() {
			_, addr := s.node.Leader()
			return transport.Message{}, fmt.Errorf("%w: not the leader (leader: %q)", protocol.ErrUnavailable, addr)
		}
		if err := s.node.Barrier(ctx); err != nil {
			return transport.Message{}, classify(err)
		}
	}
	var out protocol.QueryReply
	var qerr error
	me := peer.String()
	switch q.What {
	case protocol.QueryPing:
	case protocol.QueryStatus:
		st := s.Status()
		out.Status = &st
	case protocol.QueryNextRound:
		qerr = s.nextRound(ctx, peer, q, &out)
	default:
		qerr = s.node.View(func(st *consensus.State) error { return answer(st, q, me, &out) })
	}
	if qerr != nil {
		return transport.Message{}, qerr
	}
	b, err := transport.EncodePayload(&out)
	if err != nil {
		return transport.Message{}, err
	}
	if err := protocol.CheckQueryReply(q, len(b)); err != nil {
		return transport.Message{}, err
	}
	return transport.Message{Header: transport.Header{Type: protocol.MsgQuery}, Payload: b}, nil
}

// answer fills out with what q asks of the state (every query but status, ping and next-round).
// Lists come a page at a time (Query.Page); me is the asker's key ID, for Query.Mine.
func answer(st *consensus.State, q protocol.Query, me string, out *protocol.QueryReply) error {
	page := func(n int) (int, int, error) {
		out.Total = uint32(n)
		return q.Page(n)
	}
	switch q.What {
	case protocol.QueryProposals:
		lo, hi, err := page(st.NumProposals())
		if err != nil {
			return err
		}
		out.Proposals = st.ProposalsRange(lo, hi)
	case protocol.QueryProposal:
		p, err := st.Proposal(q.ID)
		if err != nil {
			return err
		}
		if q.Mine {
			p = protocol.MineProposal(p, me)
		}
		out.Proposals = []consensus.Proposal{p}
	case protocol.QueryCohort:
		c, err := st.PeekCohort(q.ID)
		if err != nil {
			return err
		}
		x := *c
		if q.Mine {
			x = protocol.MineCohort(x, me) // trimmed before the copy
		}
		x = x.Clone()
		out.Cohort = &x
	case protocol.QueryRounds:
		c, err := st.PeekCohort(q.ID) // only its round count: no copy of its members
		if err != nil {
			return err
		}
		lo, hi, err := page(int(c.CurrentRound))
		if err != nil {
			return err
		}
		out.Rounds, _, err = st.RoundsRange(q.ID, lo, hi)
		return err
	case protocol.QueryRound:
		r, err := st.PeekRound(q.ID, q.Number)
		if err != nil {
			return err
		}
		x := *r
		if q.Mine {
			x = protocol.MineRound(x, me) // trimmed before the copy
		}
		out.Rounds = []consensus.Round{x.Clone()}
	case protocol.QueryMembers:
		lo, hi, err := page(st.NumMembers())
		if err != nil {
			return err
		}
		out.Members = st.MembersRange(lo, hi)
	case protocol.QueryMember:
		m, err := st.Member(q.Member)
		if err != nil {
			return err
		}
		out.Member = &m
	case protocol.QueryLedger:
		if q.ID != 0 {
			if _, err := st.PeekCohort(q.ID); err != nil {
				return err
			}
		}
		lo, hi, err := page(st.NumPayouts(q.ID))
		if err != nil {
			return err
		}
		l := st.LedgerPage(q.ID, lo, hi)
		out.Ledger = &l
	case protocol.QueryBalances:
		if q.Member != "" {
			b, err := st.MemberBalances(q.Member)
			out.Balances = b
			return err
		}
		lo, hi, err := page(st.NumBalances())
		if err != nil {
			return err
		}
		out.Balances = st.BalancesRange(lo, hi)
	default:
		return fmt.Errorf("unknown query %q (want one of status, proposals, proposal, cohort, rounds, round, members, member, ledger, balances, next-round, ping)", q.What)
	}
	return nil
}

// nextRound waits until the cohort has a round newer than q.After or is done (or protocol.NextRoundWait
// passes) and fills out with the cohort and its latest round: one message per round for a peer
// instead of a poll every few hundred milliseconds. It looks at the state only when an applied
// batch changed it (Node.Changed), and a key has at most Limits.MaxLongPolls of them waiting.
func (s *Server) nextRound(ctx context.Context, peer transport.NodeID, q protocol.Query, out *protocol.QueryReply) error {
	done, err := s.lim.startLongPoll(peer.String())
	if err != nil {
		s.metrics.observeRefused("long_polls")
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(ctx, protocol.NextRoundWait)
	defer cancel()
	for {
		changed := s.node.Changed() // before the look, so a change after it still wakes us
		// Every applied batch wakes every long-poll: the look reads two fields, and only the
		// answer copies (what the asker may see of) the cohort and its round.
		answered := false
		err := s.node.View(func(st *consensus.State) error {
			c, err := st.PeekCohort(q.ID)
			if err != nil {
				return err
			}
			if c.CurrentRound <= q.After && c.Status != consensus.CohortDone && ctx.Err() == nil {
				return nil
			}
			answered = true
			var r *consensus.Round
			if c.CurrentRound > 0 {
				if r, err = st.PeekRound(q.ID, c.CurrentRound); err != nil {
					return err
				}
			}
			if q.Mine {
				mc := protocol.MineCohort(*c, peer.String()).Clone()
				out.Cohort = &mc
			} else {
				cc := c.Clone()
				out.Cohort = &cc
			}
			if r != nil {
				if q.Mine {
					out.Rounds = []consensus.Round{protocol.MineRound(*r, peer.String()).Clone()}
				} else {
					out.Rounds = []consensus.Round{r.Clone()}
				}
			}
			return nil
		})
		if err != nil || answered {
			return err
		}
		select {
		case <-ctx.Done():
		case <-changed:
		}
	}
}

// Status describes this node and the cluster as it sees it.
func (s *Server) Status() protocol.Status {
	lid, laddr := s.node.Leader()
	hash, applied := s.node.Hash()
	stats := s.node.Stats()
	st := protocol.Status{
		ID: s.cfg.ID, Addr: s.cfg.Listen, NodeKeyID: s.KeyID(), Role: s.node.State(), Aggregator: s.cfg.Aggregator,
		LeaderID: lid, LeaderAddr: laddr, Term: stats["term"], LastIndex: stats["last_log_index"],
		AppliedIndex: applied, StateHash: fmt.Sprintf("%x", hash[:]),
	}
	if servers, err := s.node.Servers(); err == nil {
		for _, sv := range servers {
			st.Servers = append(st.Servers, protocol.ServerInfo{ID: sv.ID, Addr: sv.Addr, Suffrage: sv.Suffrage})
		}
	}
	s.node.View(func(state *consensus.State) error {
		for _, c := range state.Coordinators() {
			st.Coordinators = append(st.Coordinators, c.Name+"="+c.ID)
		}
		st.Members = state.NumMembers()
		st.Proposals = state.NumProposals()
		for _, c := range state.CohortSummaries() {
			st.Cohorts = append(st.Cohorts, protocol.CohortBrief{ID: c.ID, Proposal: c.Proposal, Members: c.Members, Status: string(c.Status), CurrentRound: c.CurrentRound})
		}
		return nil
	})
	return st
}

// ParsePeers parses the voter list "c1=KEYID@127.0.0.1:7001,c2=KEYID@127.0.0.1:7002": each
// voter's raft ID, node key ID (32 hex digits, pinned) and address.
func ParsePeers(s string) ([]consensus.Peer, error) {
	var out []consensus.Peer
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, part := range strings.Split(s, ",") {
		id, rest, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" || rest == "" {
			return nil, fmt.Errorf("peer %q: want ID=KEYID@HOST:PORT", part)
		}
		key, addr, err := transport.ParsePinned(rest)
		if err != nil {
			return nil, fmt.Errorf("peer %q: %w", part, err)
		}
		out = append(out, consensus.Peer{ID: id, Addr: addr, Key: key})
	}
	return out, nil
}

// rejections are the state's verdicts on a command: retrying the same envelope cannot help.
var rejections = []error{
	consensus.ErrDecode, consensus.ErrVersion, consensus.ErrInvalid, consensus.ErrUnsigned,
	consensus.ErrBadSignature, consensus.ErrUnknownIssuer, consensus.ErrForbidden,
	consensus.ErrStaleRequest, consensus.ErrExists, consensus.ErrNotFound, consensus.ErrWrongStatus,
	consensus.ErrDeadline, consensus.ErrOverflow, consensus.ErrLimit,
}

// classify marks an Apply or Barrier error as final (a rejection) or retryable (anything else:
// lost leadership, timeouts, shutdown), in which case the outcome is unknown and the client
// retries the same request ID.
func classify(err error) error {
	for _, r := range rejections {
		if errors.Is(err, r) {
			return err
		}
	}
	return fmt.Errorf("%w: %w", protocol.ErrUnavailable, err)
}
